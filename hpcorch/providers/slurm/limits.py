"""The most one run can get from a Slurm partition: `scontrol show partition|node -o`, parsed.

Pure functions over text (one line of `Key=Value` pairs per partition or node), so unit
tests feed them recorded output, and `read_limits`, which runs the two commands through
the provider's runner. The provider reads them once (`SlurmProvider.limits`); the
orchestrator refuses a run that could never fit, and never escalates a retry's memory
or time past them.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Sequence

from hpcorch.errors import ProviderUnavailable
from hpcorch.spec import ResourceLimits

log = logging.getLogger("hpcorch.slurm")

#: A `Key=` that starts a pair: at the line's start or after white space. Values may hold
#: spaces (`OS=Linux 6.1 #1 SMP`) and `=` (`TRES=cpu=2,mem=24105M`), never ` Key=`.
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")

#: Values Slurm prints for "no limit".
_NO_LIMIT = frozenset({"UNLIMITED", "INFINITE", "NONE", "N/A", "(NULL)", ""})

#: Memory unit suffixes as Slurm prints them, in MB (Slurm's MB are MiB).
_MEM_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2, "P": 1024.0 ** 3}


def parse_key_values(line: str) -> dict[str, str]:
    """One `scontrol ... -o` line as {key: value}."""
    matches = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following is not None else len(line)
        out[match.group(1)] = line[match.end():end].strip()
    return out


def parse_records(text: str) -> list[dict[str, str]]:
    """Every non-empty line of `scontrol show partition|node -o` output, parsed."""
    return [parse_key_values(line) for line in text.splitlines() if "=" in line]


def pick_partition(partitions: Sequence[dict[str, str]],
                   name: str | None) -> dict[str, str] | None:
    """The partition called `name`, else (None) the default one (`Default=YES`; the only
    one when there is just one); None when there is no such partition."""
    if name:
        return next((p for p in partitions if p.get("PartitionName") == name), None)
    default = [p for p in partitions if p.get("Default", "").upper() == "YES"]
    if default:
        return default[0]
    return partitions[0] if len(partitions) == 1 else None


def partition_nodes(nodes: Sequence[dict[str, str]], partition: str) -> list[dict[str, str]]:
    """The nodes whose `Partitions=` lists `partition`."""
    return [n for n in nodes if partition in n.get("Partitions", "").split(",")]


def parse_count(text: str) -> int | None:
    """`4` -> 4; `UNLIMITED` (or anything not a number) -> None."""
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_mem_mb(text: str) -> float | None:
    """Slurm memory in MB: `24105`, `24105M`, `2G`; None for `UNLIMITED`, `0` and the like
    (MaxMemPerNode=0 means no limit too)."""
    text = text.strip().upper()
    if text in _NO_LIMIT:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)B?", text)
    if not match:
        return None
    value = float(match.group(1)) * _MEM_UNITS.get(match.group(2) or "M", 1.0)
    return value or None


def parse_time_min(text: str) -> int | None:
    """A Slurm time limit in whole minutes (seconds round down, but never to 0): `30`
    (minutes), `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`; None for
    `UNLIMITED`/`INFINITE` or text that is not a time."""
    text = text.strip()
    if text.upper() in _NO_LIMIT:
        return None
    days_text, dash, clock = text.rpartition("-") if "-" in text else ("", "", text)
    try:
        days = int(days_text) if dash else 0
        parts = [int(p) for p in clock.split(":")]
    except ValueError:
        return None
    if dash:  # after `D-` the first field is hours: D-HH, D-HH:MM, D-HH:MM:SS
        if not 1 <= len(parts) <= 3:
            return None
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        return None
    if min(days, hours, minutes, seconds) < 0:
        return None
    total_s = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return max(1, total_s // 60) if total_s else None


def _node_cpus(node: dict[str, str]) -> int | None:
    # CPUEfctv (22.05+): the CPUs jobs may use, without those CoreSpecCount reserves.
    return parse_count(node.get("CPUEfctv", "")) or parse_count(node.get("CPUTot", ""))


def resource_limits(partition: dict[str, str], nodes: Sequence[dict[str, str]]) -> ResourceLimits:
    """What one run may get from `partition`, given its nodes (`partition_nodes`):

    - memory: MaxMemPerNode, else MaxMemPerCPU x the largest node's CPUs, else the largest
      node's RealMemory; never more than the largest node has;
    - time: MaxTime; CPUs: the largest node's; nodes: MaxNodes, else TotalNodes.
    """
    name = partition.get("PartitionName", "?")
    cpus = max((c for c in map(_node_cpus, nodes) if c), default=None)
    real_mb = max((m for n in nodes if (m := parse_mem_mb(n.get("RealMemory", "")))),
                  default=None)
    mem_mb = parse_mem_mb(partition.get("MaxMemPerNode", ""))
    per_cpu = parse_mem_mb(partition.get("MaxMemPerCPU", ""))
    if mem_mb is None and per_cpu is not None and cpus is not None:
        mem_mb = per_cpu * cpus
    if mem_mb is None or (real_mb is not None and real_mb < mem_mb):
        mem_mb = real_mb
    max_nodes = parse_count(partition.get("MaxNodes", ""))
    if max_nodes is None:
        max_nodes = parse_count(partition.get("TotalNodes", "")) or (len(nodes) or None)
    return ResourceLimits(
        where=f"partition {name}",
        max_mem_gb=mem_mb / 1024 if mem_mb is not None else None,
        max_time_min=parse_time_min(partition.get("MaxTime", "")),
        max_cpus=cpus,
        max_nodes=max_nodes,
    )


def read_limits(slurm: Callable[[list[str]], subprocess.CompletedProcess[str]],
                name: str | None) -> ResourceLimits:
    """The limits of partition `name` (None: the default one), from `scontrol show
    partition [name] -o` and `scontrol show node -o` run through `slurm`; every field None,
    with a warning, when Slurm cannot say (never raises: the limits are a check before
    submission, and sbatch still has the last word)."""
    where = f"partition {name}" if name else "the default partition"
    argv = ["scontrol", "show", "partition", *([name] if name else []), "-o"]
    try:
        done = slurm(argv)
        partition = pick_partition(parse_records(done.stdout), name) \
            if done.returncode == 0 else None
        if partition is None:
            log.warning("cannot read the limits of %s (`%s` rc=%s: %s): runs are not "
                        "checked against them", where, " ".join(argv), done.returncode,
                        done.stderr.strip()[-200:])
            return ResourceLimits(where=where)
        nodes_done = slurm(["scontrol", "show", "node", "-o"])
    except (ProviderUnavailable, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("cannot read the limits of %s (%s): runs are not checked against them",
                    where, exc)
        return ResourceLimits(where=where)
    nodes: list[dict[str, str]] = []
    if nodes_done.returncode == 0:
        nodes = partition_nodes(parse_records(nodes_done.stdout),
                                partition.get("PartitionName", ""))
    else:  # the partition's own limits still hold; the node sizes stay unknown
        log.warning("cannot read the nodes of %s (`scontrol show node -o` rc=%s): no node "
                    "size limits", where, nodes_done.returncode)
    return resource_limits(partition, nodes)
