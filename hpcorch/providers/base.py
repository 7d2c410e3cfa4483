"""The provider contract: one small, batched interface in front of every engine.

Optionally a provider may define `detachable = True` when its runs live in the
engine and survive the submitting process (then `hpcorch.detach=true` just
submits), and `wait(timeout)`: block until something
may have changed (a child exited, an event arrived) or `timeout` passes, using
the time to start queued runs if it likes. The orchestrator then waits on it
instead of sleeping between polls.

Two optional class methods are checks the planner runs before anything is written or
submitted, each raising ConfigError: `check_resources(resources)` (what the provider can
place, e.g. ranks on this machine's cores) and `check_sweep_dir(path)` (paths the engine
cannot use, e.g. control characters in an sbatch script). A third,
`dashboard_links(provider_settings, job_ids)`, gives `hpcorch status` the pages of an
engine's dashboard for a sweep's jobs.

`limits(resources)` (instance method, may do I/O, called after `check()`): the most the
engine can give one run of that shape, as a ResourceLimits (Slurm: the partition's
MaxTime and memory, read with scontrol; local: this machine). The orchestrator refuses a
run that could never fit before it submits anything, and the retry policy never
escalates past them.

`submit` may raise TransientSubmitError (hpcorch.errors) for a passing refusal, with the
handles of what did get in; the orchestrator submits the rest again with backoff
(`hpcorch.retry.submit`) while it goes on watching, instead of the provider sleeping.

A provider receives RunSpecs (data) and its own typed settings, never Hydra
objects. Every call takes a whole batch, so an engine is asked once per
interval, not once per run. Constructors do no I/O; `check()` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from hpcorch.launch import Launcher
from hpcorch.spec import RunHandle, RunSpec, RunStatus


@dataclass(frozen=True)
class Capabilities:
    """What a provider's engine does for a run, declared by the provider class.

    Core code (the launch wrappers, the container wrapper, the Hydra glue, the CLI) asks
    these instead of switching on a provider's name, so a provider from another package
    gets the same treatment as a built-in one.
    """

    multi_rank: Launcher = Launcher.MPIRUN
    """How a run with several ranks is started inside its allocation (srun under Slurm,
    Open MPI's mpirun elsewhere)."""
    single_rank: Launcher = Launcher.DIRECT
    """How a one-rank run is started: directly, or through the launcher that reaches the
    provider's hosts (provider=mpi)."""
    container_env_prefixes: tuple[str, ...] = ()
    """The engine's variables a run in a container needs (job id, task index, ...),
    passed by prefix; the launcher's own (mpirun's) are passed by the launch layer."""
    container_env_names: tuple[str, ...] = ()
    """The same variables by name, for runtimes that pass no patterns (docker)."""
    forks_submitter: bool = False
    """Warm runs are forks of the submitting process (the Hydra glue then runs a plain
    single run in-process instead of submitting it)."""
    shared_run_dirs: bool = True
    """Run directories are on a file system the submitter sees (records are read there)."""
    after_jobs: Callable[[Sequence[str]], dict[str, Any]] | None = None
    """Provider settings that hold a submission until these jobs (ids as this provider
    reported them) have succeeded: the engine's native dependencies, or None where it has
    none. A pipeline then submits a stage while its upstream stage is still queued."""

    def launcher_for(self, tasks: int) -> Launcher:
        """The launcher of a run with `tasks` ranks."""
        return self.multi_rank if tasks > 1 else self.single_rank


@runtime_checkable
class Provider(Protocol):
    """Where runs execute. Implementations: local, slurm, ray, mpi (and a fake for tests)."""

    name: str
    """The name used in `provider=NAME`."""
    capabilities: ClassVar[Capabilities]
    """What the engine does for a run (see Capabilities); declared on the class."""
    poll_interval: float
    """Seconds between status queries the orchestrator should start from (it backs off)."""
    max_poll_interval: float
    """The longest the orchestrator waits between two status queries."""

    def check(self) -> None:
        """Preflight: raise ProviderUnavailable, with a hint, when the engine cannot be used."""

    def render(self, runs: Sequence[RunSpec]) -> str:
        """The exact script(s) or command(s) `submit` would hand to the engine (a dry run)."""

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Hand a batch of runs to the engine; one handle per run, in order."""

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Handles of earlier submissions of these run keys that the engine still knows;
        with `sweep_id`, only those submitted for that sweep (the same experiment started
        again in another sweep directory has the same run keys, not the same runs)."""

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """The state of every handle, in order; UNKNOWN for a job the engine does not know."""

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Stop these runs; cancelling a finished or unknown run is not an error."""

    def close(self) -> None:
        """Release what the provider holds (connections, helper processes)."""
