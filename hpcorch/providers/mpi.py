"""provider=mpi: MPI runs on a host list (accelerator nodes outside a scheduler), via mpirun.

Every run is one `mpirun` started from this process, with its ranks placed on
free slots (and GPUs) of the host list: several runs at once when they fit,
queued, in order, when they do not. A run that could never fit, or a missing
mpirun, is refused before anything starts.

The child-process life cycle (own session per run, reaping, SIGTERM then
SIGKILL on cancel, stderr tails) is a `ProcessPool`'s, as for provider=local;
this provider plugs in what may start (slot placement on the host list), what
is started (mpirun over the placed hosts, with per-rank devices) and how a
failure is named (the placed host of the failing rank).

    python train.py -m provider=mpi 'provider.hosts=[gpu01:8,gpu02:8]' \
        provider.gpus_per_host=8 resources.tasks=8 resources.gpus=8 lr=0.1,0.01
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpcorch.errors import ConfigError, ProviderUnavailable
from hpcorch.launch import (
    Launcher,
    LaunchOptions,
    Placement,
    SlotPool,
    launch_argv,
    preflight,
    rank_failure,
)
from hpcorch.launch.hosts import build_hosts, parse_host_entry, parse_hostfile
from hpcorch.launch.wrappers import MPI_INSTALL_HINT, require_mpirun
from hpcorch.providers.base import Capabilities
from hpcorch.providers.machine import usable_cores
from hpcorch.providers.processes import ProcessPool, job_id, launch_options, render_line
from hpcorch.runner import CommandRunner, run_command
from hpcorch.settings import require
from hpcorch.spec import (
    FailureContext,
    ResourceLimits,
    Resources,
    RunHandle,
    RunSpec,
    RunStatus,
)


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


#: Where the slot admission gets the host list (read on first use, see _slot_pool).
SlotPoolSource = Callable[[], SlotPool]


class SlotAdmission:
    """A run may start when its ranks (and GPUs) can be placed on free slots of the hosts;
    the placement is held until the run ends."""

    def __init__(self, pool: SlotPoolSource) -> None:
        self._pool = pool
        self.placements: dict[str, Placement] = {}

    def admit(self, job: str, spec: RunSpec) -> bool:
        """Place the run now (True), or False when its slots are not free."""
        placement = self._pool().place(spec.resources)
        if placement is None:
            return False
        self.placements[job] = placement
        return True

    def release(self, job: str) -> None:
        """Give an ended run's slots and devices back."""
        placement = self.placements.pop(job, None)
        if placement is not None:
            self._pool().release(placement)


class MpiProvider:
    """Runs each spec as one mpirun over placed hosts, as many at once as the slots allow."""

    Settings = MpiSettings
    name = "mpi"
    # mpirun is how its hosts are reached, so a one-rank run goes through it too; it
    # passes its own variables to a container through the launch layer.
    capabilities = Capabilities(multi_rank=Launcher.MPIRUN, single_rank=Launcher.MPIRUN,
                                container_env_prefixes=(), container_env_names=())
    poll_interval = 0.01
    max_poll_interval = 0.1

    def __init__(self, settings: MpiSettings | None = None, *,
                 runner: CommandRunner = run_command) -> None:
        self.mpi = settings or MpiSettings()
        self._runner = runner
        self._pool: SlotPool | None = None
        self.slots = SlotAdmission(self._slot_pool)
        self.processes = ProcessPool(self.name, self.slots, self._argv, failure=self._failure,
                                     poll_interval=self.poll_interval)

    @classmethod
    def check_resources(cls, resources: Resources) -> None:
        """Nothing to refuse before planning: ranks go to the hosts' slots, not this
        machine's cores, and whether a run fits the host list is known only once the
        list is read (submit and render refuse it then, naming the hosts)."""

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

    def limits(self, resources: Resources) -> ResourceLimits:
        """Nodes: the hosts of the list (reading the hostfile, if one is set). Memory and
        CPUs of the hosts are not known here (slots count ranks, not cores); whether a
        run's ranks fit the slots is `submit`'s refusal."""
        return ResourceLimits(where="the host list", max_nodes=len(self._slot_pool().hosts))

    def render(self, runs: Sequence[RunSpec]) -> str:
        """Each run's mpirun line, placed as it would be on idle hosts."""
        pool = self._slot_pool()
        lines = [f"# provider={self.name} hosts={pool.describe()} "
                 "(placement shown for idle hosts)"]
        for spec in runs:
            placement = SlotPool(pool.hosts).place(spec.resources)
            if placement is None:
                raise pool.never_fits(spec.resources) or ConfigError(
                    "resources.tasks", spec.resources.tasks, "does not fit the hosts")
            lines.append(f"# run #{spec.num} key={spec.run_key} dir={spec.run_dir}")
            lines.append(render_line(spec, launch_argv(spec, self._options(placement))))
        return "\n".join(lines) + "\n"

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Refuse runs that could never be placed or started, then queue them all."""
        pool = self._slot_pool()
        preflight(runs, self._options(None), one_machine=False)  # mpirun is on PATH
        for spec in runs:
            error = pool.never_fits(spec.resources)
            if error is not None:
                raise error
        return self.processes.submit(runs)

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Runs of this provider object still queued or running (each mpirun is a child of
        the orchestrator and ends with it)."""
        return self.processes.lookup(run_keys, sweep_id)

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Reap finished mpiruns, start queued runs whose slots are free, and report."""
        return self.processes.status(handles)

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Drop queued runs; SIGTERM running mpiruns' sessions, SIGKILL a few seconds later."""
        self.processes.cancel(handles)

    def wait(self, timeout: float) -> None:
        """Start runs as slots free up, for up to `timeout` (see ProcessPool.wait)."""
        self.processes.wait(timeout)

    def close(self) -> None:
        """Leave no mpirun behind (see ProcessPool.close)."""
        self.processes.close()

    # -- what the pool is given ----------------------------------------------------
    def _argv(self, spec: RunSpec) -> list[str]:
        return launch_argv(spec, self._options(self.slots.placements.get(job_id(spec))))

    def _failure(self, spec: RunSpec, context: FailureContext) -> FailureContext:
        placement = self.slots.placements.get(job_id(spec))
        return rank_failure(spec, context, placement.rank_hosts() if placement else ())

    # -- internals -------------------------------------------------------------
    def _options(self, placement: Placement | None) -> LaunchOptions:
        return launch_options(
            self.name, self.capabilities, placement=placement, cores=usable_cores(),
            mpirun=self.mpi.mpirun, bind_to=self.mpi.bind_to, export=self.mpi.export,
            mpirun_args=tuple(str(a) for a in self.mpi.mpirun_args))

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
