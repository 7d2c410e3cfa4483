"""Host lists and slot placement for MPI runs outside a scheduler (provider=mpi).

A host list says which machines there are, how many ranks (slots) each may
run and which GPUs it has. `SlotPool` places a run's ranks on free slots
(first fit, in host order) and takes them back when the run ends, so several
runs share the hosts when they fit and wait when they do not.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch.errors import ConfigError
from hpcorch.rankfiles import devices_for
from hpcorch.spec import Resources

_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.\-\[\]]+)(?::(?P<slots>\d+))?$")
_HOSTFILE_LINE = re.compile(r"^(?P<name>\S+)(?P<rest>(\s+\S+=\S+)*)\s*$")


@dataclass(frozen=True)
class Host:
    """One machine of a host list."""

    name: str
    slots: int
    """Ranks it may run at once."""
    gpus: tuple[str, ...] = ()
    """Device ids (CUDA_VISIBLE_DEVICES values) it hands out."""


@dataclass(frozen=True)
class Placement:
    """Where one run's ranks go: hosts in rank order (mpirun --map-by slot fills them so)."""

    hosts: tuple[tuple[str, int], ...]
    """(host, ranks on it), in rank order."""
    devices: tuple[tuple[str, ...], ...] = ()
    """Devices given to the run on each placed host (same order); empty without GPUs."""

    def host_arg(self) -> str:
        """`a:2,b:2`: mpirun's --host value."""
        return ",".join(f"{name}:{count}" for name, count in self.hosts)

    def rank_hosts(self) -> tuple[str, ...]:
        """The host of every global rank."""
        return tuple(name for name, count in self.hosts for _ in range(count))

    def rank_devices(self) -> tuple[str, ...]:
        """Every global rank's devices ('0' or '0,1'), shared out by local rank per host."""
        if not self.devices:
            return ()
        out = []
        for (_, count), ids in zip(self.hosts, self.devices, strict=True):
            out += [",".join(devices_for(local, count, ids)) for local in range(count)]
        return tuple(out)


def is_local_host(name: str) -> bool:
    """True for names that mean this machine (no DNS lookup: names only)."""
    here = socket.gethostname()
    return name in ("localhost", "::1", here, here.split(".")[0]) or name.startswith("127.")


def parse_host_entry(entry: str, default_slots: int, key: str) -> tuple[str, int]:
    """`name` or `name:slots` (mpirun --host syntax)."""
    match = _ENTRY.match(entry.strip())
    if not match:
        raise ConfigError(key, entry, "must be 'HOST' or 'HOST:SLOTS' (e.g. 'gpu01:8')")
    slots = int(match["slots"]) if match["slots"] else default_slots
    if slots < 1:
        raise ConfigError(key, entry, "slots must be >= 1")
    return match["name"], slots


def parse_hostfile(text: str, default_slots: int, key: str) -> list[tuple[str, int]]:
    """An Open MPI hostfile: `HOST [slots=N] [max_slots=M]` per line, `#` comments."""
    hosts = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HOSTFILE_LINE.match(line)
        fields = dict(f.split("=", 1) for f in match["rest"].split()) if match else {}
        slots_text = fields.get("slots", str(default_slots))
        if not match or not slots_text.isdigit() or int(slots_text) < 1:
            raise ConfigError(f"{key} line {number}", raw,
                              "must be 'HOST [slots=N] [max_slots=M]' with N >= 1")
        hosts.append((match["name"], int(slots_text)))
    if not hosts:
        raise ConfigError(key, text[:80], "names no host")
    return hosts


def build_hosts(entries: Sequence[tuple[str, int]], gpu_ids: Sequence[str],
                key: str) -> tuple[Host, ...]:
    """Hosts from (name, slots) pairs, each with the same device ids; names must be unique."""
    seen: set[str] = set()
    for name, _ in entries:
        if name in seen:
            raise ConfigError(key, name, "appears twice; give one entry per host with its "
                              "total slots (HOST:SLOTS)")
        seen.add(name)
    return tuple(Host(name, slots, tuple(gpu_ids)) for name, slots in entries)


class SlotPool:
    """Free slots and devices of a host list; places runs first fit and takes them back."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.hosts = tuple(hosts)
        self._free = {h.name: h.slots for h in self.hosts}
        self._free_gpus = {h.name: list(h.gpus) for h in self.hosts}

    def describe(self) -> str:
        """`a:4(gpus=2),b:4` for messages and renders."""
        return ",".join(f"{h.name}:{h.slots}" + (f"(gpus={len(h.gpus)})" if h.gpus else "")
                        for h in self.hosts)

    def never_fits(self, resources: Resources) -> ConfigError | None:
        """Why a run could not be placed even on idle hosts (None when it could)."""
        counts = resources.ranks_per_node()
        if resources.nodes > len(self.hosts):
            return ConfigError("resources.nodes", resources.nodes,
                               f"provider=mpi has {len(self.hosts)} host(s) ({self.describe()}); "
                               f"allowed: 1..{len(self.hosts)}")
        if self._fit(resources, {h.name: h.slots for h in self.hosts},
                     {h.name: list(h.gpus) for h in self.hosts}) is not None:
            return None
        most = max(h.slots for h in self.hosts)
        if resources.gpus and resources.gpus > max(len(h.gpus) for h in self.hosts):
            return ConfigError("resources.gpus", resources.gpus,
                               f"more GPUs per node than any provider=mpi host has "
                               f"({self.describe()}); allowed: "
                               f"0..{max(len(h.gpus) for h in self.hosts)} "
                               "(set provider.gpus_per_host or provider.gpu_ids)")
        return ConfigError("resources.tasks", resources.tasks,
                           f"{resources.nodes} node(s) x {max(counts)} rank(s) do not fit the "
                           f"provider=mpi hosts ({self.describe()}; at most {most} rank(s) on "
                           f"one host): lower resources.tasks, raise resources.nodes, or give "
                           "the hosts more slots (provider.hosts=[HOST:SLOTS])")

    def place(self, resources: Resources) -> Placement | None:
        """Take slots (and devices) for a run now, or None when they are not free."""
        placement = self._fit(resources, self._free, self._free_gpus)
        if placement is None:
            return None
        for (name, count), ids in zip(placement.hosts, placement.devices or
                                      [()] * len(placement.hosts), strict=True):
            self._free[name] -= count
            self._free_gpus[name] = [d for d in self._free_gpus[name] if d not in ids]
        return placement

    def release(self, placement: Placement) -> None:
        """Give a finished run's slots and devices back."""
        for (name, count), ids in zip(placement.hosts, placement.devices or
                                      [()] * len(placement.hosts), strict=True):
            self._free[name] += count
            order = {d: i for i, d in enumerate(next(h.gpus for h in self.hosts
                                                     if h.name == name))}
            self._free_gpus[name] = sorted({*self._free_gpus[name], *ids}, key=order.__getitem__)

    @property
    def idle(self) -> bool:
        """True when nothing is placed."""
        return all(self._free[h.name] == h.slots for h in self.hosts)

    def _fit(self, resources: Resources, free: dict[str, int],
             free_gpus: dict[str, list[str]]) -> Placement | None:
        used: list[tuple[str, int]] = []
        devices: list[tuple[str, ...]] = []
        for count in sorted(resources.ranks_per_node(), reverse=True):
            host = next((h for h in self.hosts if h.name not in {n for n, _ in used}
                         and free[h.name] >= count
                         and len(free_gpus[h.name]) >= resources.gpus), None)
            if host is None:
                return None
            used.append((host.name, count))
            devices.append(tuple(free_gpus[host.name][:resources.gpus]))
        return Placement(tuple(used), tuple(devices) if resources.gpus else ())
