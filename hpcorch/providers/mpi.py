"""provider=mpi: MPI runs on a host list (accelerator nodes outside a scheduler), via mpirun.

Every run is one `mpirun` started from this process, with its ranks placed on
free slots (and GPUs) of the host list: several runs at once when they fit,
queued, in order, when they do not. A run that could never fit, or a missing
mpirun, is refused before anything starts.

The child-process life cycle (own session per run, reaping, SIGTERM then
SIGKILL on cancel, stderr tails) is the local provider's; this class changes
what may start (slot placement) and what is started (mpirun over the placed
hosts, with per-rank devices).

    python train.py -m provider=mpi 'provider.hosts=[gpu01:8,gpu02:8]' \
        provider.gpus_per_host=8 resources.tasks=8 resources.gpus=8 lr=0.1,0.01
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpcorch.errors import ConfigError, ProviderUnavailable
from hpcorch.launch import Launcher, LaunchOptions, Placement, SlotPool, launch_argv, rank_failure
from hpcorch.launch.hosts import build_hosts, parse_host_entry, parse_hostfile
from hpcorch.launch.wrappers import MPI_INSTALL_HINT, require_mpirun
from hpcorch.providers.base import Capabilities
from hpcorch.providers.local import LocalProvider, LocalSettings, usable_cores
from hpcorch.runner import CommandRunner, run_command
from hpcorch.settings import require
from hpcorch.spec import FailureContext, RunHandle, RunSpec


@dataclass(frozen=True)
class MpiSettings:
    """`provider=mpi` settings."""

    name: Literal["mpi"] = "mpi"
    hosts: tuple[str, ...] = ("localhost",)
    """Hosts as 'HOST' or 'HOST:SLOTS' (mpirun --host syntax); ignored when hostfile is set."""
    hostfile: str | None = None
    """An Open MPI hostfile ('HOST slots=N' per line) to use instead of `hosts`."""
    slots_per_host: int | None = None
    """Slots of an entry that gives none; null = the usable cores of this machine."""
    gpus_per_host: int = 0
    """GPUs on every host; runs get whole devices (resources.gpus per node)."""
    gpu_ids: tuple[str | int, ...] = ()
    """Device ids every host hands out (the configured mapping); empty = 0..gpus_per_host-1."""
    mpirun: str = "mpirun"
    """Name or path of Open MPI's mpirun."""
    mpirun_args: tuple[str | int | float, ...] = ()
    """Extra mpirun arguments, passed through as given (an argv list, never a shell line)."""
    export: tuple[str, ...] = ()
    """Environment variables forwarded to every rank (-x) besides hpcorch's own."""
    bind_to: Literal["none", "core", "socket", "hwthread"] = "none"
    """Rank binding; none, because several runs share a host and each mpirun would pin
    its ranks to the same cores."""

    def validate(self, prefix: str) -> None:
        """Counts, ids and entries are checked here; the hostfile is read by check()."""
        require(self.slots_per_host is None or self.slots_per_host >= 1,
                f"{prefix}.slots_per_host", self.slots_per_host, "must be >= 1, or null")
        require(self.gpus_per_host >= 0, f"{prefix}.gpus_per_host", self.gpus_per_host,
                "must be >= 0")
        require(not self.gpu_ids or self.gpus_per_host in (0, len(self.gpu_ids)),
                f"{prefix}.gpu_ids", list(self.gpu_ids),
                f"must list gpus_per_host ({self.gpus_per_host}) ids, or gpus_per_host must be 0")
        require(len({str(i) for i in self.gpu_ids}) == len(self.gpu_ids), f"{prefix}.gpu_ids",
                list(self.gpu_ids), "must not repeat an id")
        require(bool(self.hosts) or self.hostfile is not None, f"{prefix}.hosts",
                list(self.hosts), "must name at least one host (or set hostfile)")
        require(bool(self.mpirun), f"{prefix}.mpirun", self.mpirun,
                "must name Open MPI's mpirun")
        if self.hostfile is None:
            for i, entry in enumerate(self.hosts):
                parse_host_entry(entry, 1, f"{prefix}.hosts[{i}]")

    @property
    def devices(self) -> tuple[str, ...]:
        """The device ids of every host."""
        return tuple(str(i) for i in self.gpu_ids or range(self.gpus_per_host))


class MpiProvider(LocalProvider):
    """Runs each spec as one mpirun over placed hosts, as many at once as the slots allow."""

    Settings = MpiSettings  # type: ignore[assignment]
    name = "mpi"
    # mpirun is how its hosts are reached, so a one-rank run goes through it too; it
    # passes its own variables to a container through the launch layer.
    capabilities = Capabilities(multi_rank=Launcher.MPIRUN, single_rank=Launcher.MPIRUN,
                                container_env_prefixes=(), container_env_names=())
    poll_interval = 0.01
    max_poll_interval = 0.1

    def __init__(self, settings: MpiSettings | None = None, *,
                 runner: CommandRunner = run_command) -> None:
        super().__init__(LocalSettings(warm=False))
        self.mpi = settings or MpiSettings()
        self.workers = sys.maxsize  # admission is by free slots (_pump), not a worker count
        self._runner = runner
        self._pool: SlotPool | None = None
        self._placements: dict[str, Placement] = {}

    # -- contract --------------------------------------------------------
    def check(self) -> None:
        """mpirun is there and runs; the host list (or hostfile) is valid."""
        path = require_mpirun(self.mpi.mpirun, "provider.mpirun", self.mpi.mpirun)
        try:
            done = self._runner([path, "--version"], timeout=30)
        except OSError as exc:
            raise ProviderUnavailable(f"provider.mpirun={self.mpi.mpirun!r}: cannot run "
                                      f"{path}: {exc}; {MPI_INSTALL_HINT}") from exc
        if done.returncode != 0 or "Open MPI" not in done.stdout + done.stderr:
            raise ProviderUnavailable(
                f"provider.mpirun={self.mpi.mpirun!r}: '{path} --version' did not report "
                f"Open MPI (rc={done.returncode}); allowed: Open MPI's mpirun; {MPI_INSTALL_HINT}")
        self._slot_pool()

    def render(self, runs: Sequence[RunSpec]) -> str:
        """Each run's mpirun line, placed as it would be on idle hosts."""
        pool = self._slot_pool()
        lines = [f"# provider=mpi hosts={pool.describe()} (placement shown for idle hosts)"]
        for spec in runs:
            placement = SlotPool(pool.hosts).place(spec.resources)
            if placement is None:
                raise pool.never_fits(spec.resources) or ConfigError(
                    "resources.tasks", spec.resources.tasks, "does not fit the hosts")
            lines.append(f"# run #{spec.num} key={spec.run_key} dir={spec.run_dir}")
            lines.append(self._render_line(spec, self._options(placement)))
        return "\n".join(lines) + "\n"

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Refuse runs that could never be placed or started, then queue them all."""
        pool = self._slot_pool()
        if runs:
            require_mpirun(self.mpi.mpirun, "provider.mpirun", self.mpi.mpirun)
        for spec in runs:
            error = pool.never_fits(spec.resources)
            if error is not None:
                raise error
        return super().submit(runs)

    # -- what may start, and how ----------------------------------------------
    def _pump(self) -> None:
        pool = self._slot_pool()
        while (spec := self._head()) is not None:
            placement = pool.place(spec.resources)
            if placement is None:
                return  # in order: wait until the head of the queue fits
            job_id = self._job_id(spec)
            del self._queue[job_id]
            self._placements[job_id] = placement
            try:
                self._running[job_id] = self._start(spec)
            except BaseException:
                pool.release(self._placements.pop(job_id))
                raise

    def _reap(self) -> None:
        super()._reap()
        for job_id in [j for j in self._placements if j not in self._running]:
            self._slot_pool().release(self._placements.pop(job_id))

    def _argv(self, spec: RunSpec) -> list[str]:
        placement = self._placements.get(self._job_id(spec))
        return launch_argv(spec, self._options(placement))

    def _failure(self, spec: RunSpec, context: FailureContext) -> FailureContext:
        placement = self._placements.get(self._job_id(spec))
        return rank_failure(spec, context, placement.rank_hosts() if placement else ())

    # -- internals -------------------------------------------------------------
    def _options(self, placement: Placement | None) -> LaunchOptions:
        return self._launch_options(
            placement=placement, cores=usable_cores(), mpirun=self.mpi.mpirun,
            bind_to=self.mpi.bind_to, export=self.mpi.export,
            mpirun_args=tuple(str(a) for a in self.mpi.mpirun_args))

    def _render_line(self, spec: RunSpec, options: LaunchOptions) -> str:
        env = {**dict(spec.env), "PYTHONHASHSEED": str(spec.seed)}
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        workdir = shlex.quote(spec.workdir or spec.run_dir)
        return f"(cd {workdir} && env {prefix} {shlex.join(launch_argv(spec, options))})"

    def _slot_pool(self) -> SlotPool:
        """The host list, read on first use (never in __init__: the hostfile is I/O)."""
        if self._pool is None:
            default = self.mpi.slots_per_host or usable_cores()
            if self.mpi.hostfile is not None:
                path = Path(self.mpi.hostfile).expanduser()
                try:
                    text = path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError("provider.hostfile", self.mpi.hostfile,
                                      f"must be a readable Open MPI hostfile ({exc.strerror})"
                                      ) from exc
                entries = parse_hostfile(text, default, f"provider.hostfile {path}")
            else:
                entries = [parse_host_entry(e, default, f"provider.hosts[{i}]")
                           for i, e in enumerate(self.mpi.hosts)]
            self._pool = SlotPool(build_hosts(entries, self.mpi.devices, "provider.hosts"))
        return self._pool
