"""The local provider: runs on this machine, several runs at once.

Two ways to start a run, proven to give the same records (tests/integration):
- warm (default): fork the already-initialised orchestrator process and run
  the job in the child through an executor the launcher supplies; costs
  milliseconds instead of an interpreter start-up per run.
- cold (`provider.warm=false`, or no executor): start the run's portable
  command, `python train.py <overrides> hydra.run.dir=...`, as a new process.
The processes themselves (own session per run, reaping, cancelling) are a
`ProcessPool`'s (hpcorch.providers.processes); this provider admits runs by
worker slots over the usable cores and starts several ranks under mpirun.

`resources.mem_gb` is enforced for a run of one rank: its process starts with that
much RLIMIT_DATA, so going over raises MemoryError in the run (a run of several
ranks is not limited; see hpcorch.providers.machine.memory_limit_bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hpcorch.jobenv import JOB_ID_ENV, SPEC_ENV, job_environment
from hpcorch.launch import launch_argv, preflight, rank_failure
from hpcorch.providers.base import Capabilities
from hpcorch.providers.machine import (
    check_rank_count,
    check_ranks,
    machine_limits,
    usable_cores,
)
from hpcorch.providers.processes import (
    CoreAdmission,
    Executor,
    ProcessPool,
    launch_options,
    render_line,
)
from hpcorch.settings import require
from hpcorch.spec import (
    FailureContext,
    ResourceLimits,
    Resources,
    RunHandle,
    RunSpec,
    RunStatus,
)

__all__ = ["JOB_ID_ENV", "SPEC_ENV", "Executor", "LocalProvider", "LocalSettings",
           "check_rank_count", "check_ranks", "job_environment", "usable_cores"]


@dataclass(frozen=True)
class LocalSettings:
    """`provider=local` settings."""

    name: Literal["local"] = "local"
    workers: int | None = None
    """Runs at once; null means one per usable core."""
    warm: bool = True
    """Start runs by forking the warm orchestrator (fast) instead of a fresh interpreter."""

    def validate(self, prefix: str) -> None:
        """workers must be positive."""
        require(
            self.workers is None or self.workers >= 1,
            f"{prefix}.workers",
            self.workers,
            "must be a positive integer, or null for one per usable core",
        )


class LocalProvider:
    """Runs specs as child processes of the orchestrator, `workers` at a time."""

    Settings = LocalSettings
    name = "local"
    capabilities = Capabilities(forks_submitter=True)
    # Runs start from wait() the moment a worker frees up: the orchestrator's polls only
    # collect what finished, in batches, so they need not follow each run.
    poll_interval = 0.05
    max_poll_interval = 0.1

    def __init__(
        self, settings: LocalSettings | None = None, *, executor: Executor | None = None
    ) -> None:
        self.settings = settings or LocalSettings()
        self.workers = self.settings.workers or usable_cores()
        self.processes = ProcessPool(
            self.name, CoreAdmission(self.workers), self._argv, failure=self._failure,
            executor=executor if self.settings.warm else None,
            poll_interval=self.poll_interval, limit_memory=True)

    @classmethod
    def check_resources(cls, resources: Resources) -> None:
        """A sweep's resources checked before anything is planned (the Hydra sweeper asks):
        this provider's ranks share this machine's cores."""
        check_rank_count(resources)

    # -- contract --------------------------------------------------------
    def check(self) -> None:
        """Nothing to reach: the local machine is always there. (Runs of more ranks than
        usable cores are refused by `check_resources` and again in `submit`.)"""

    def limits(self, resources: Resources) -> ResourceLimits:
        """This machine: its memory (MemTotal), its usable cores (unless the run may
        oversubscribe them), one node."""
        return machine_limits(resources)

    def render(self, runs: Sequence[RunSpec]) -> str:
        """One shell line per run, exactly what the cold path would start."""
        warm = self.processes.executor is not None
        lines = [f"# provider={self.name} workers={self.workers} warm={warm}"]
        for spec in runs:
            lines.append(f"# run #{spec.num} key={spec.run_key} dir={spec.run_dir}")
            lines.append(render_line(spec, self._argv(spec)))
        return "\n".join(lines) + "\n"

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Queue the runs and start as many as there are free workers."""
        check_ranks(runs)  # before anything starts
        preflight(runs, launch_options(self.name, self.capabilities), one_machine=True)
        return self.processes.submit(runs)

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Runs of this provider object still queued or running (a local run dies with
        its orchestrator's session, so there is nothing to find across processes)."""
        return self.processes.lookup(run_keys, sweep_id)

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Reap finished children, start queued runs, and report."""
        return self.processes.status(handles)

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Drop queued runs; SIGTERM running ones' process groups, SIGKILL a few seconds later."""
        self.processes.cancel(handles)

    def wait(self, timeout: float) -> None:
        """Keep the workers busy for up to `timeout` (see ProcessPool.wait)."""
        self.processes.wait(timeout)

    def close(self) -> None:
        """Leave no processes behind (see ProcessPool.close)."""
        self.processes.close()

    # -- what the pool is given ------------------------------------------------
    def _argv(self, spec: RunSpec) -> list[str]:
        """A cold start's argv: the portable command, under mpirun when it has several ranks."""
        return launch_argv(spec, launch_options(self.name, self.capabilities,
                                                slots=usable_cores()))

    @staticmethod
    def _failure(spec: RunSpec, context: FailureContext) -> FailureContext:
        """A multi-rank run's failure names its rank, host and that rank's stderr."""
        return rank_failure(spec, context) if spec.resources.tasks > 1 else context
