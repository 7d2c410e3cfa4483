"""The scheduler-independent part of an array task: run the runs of one array index.

A batch scheduler (Slurm, Grid Engine) starts one process per array index
with a map file the provider wrote; that process runs the index's runs one
after the other, each with stdout/stderr appended to `<run_dir>/.hpcorch/`,
and keeps a small task-state file there (job id, node, exit code) so the
provider learns how the run ended without asking the scheduler. A run that
finished before the task was requeued or rescheduled is not run again. A
signal the task gets is forwarded to the running run; its state then says
STOPPED and the scheduler's word decides how the run ended.

What differs per scheduler (where the index, job id and restart count come
from, how a run is started, signalled and waited for, what happens at a time
limit) is a subclass in the scheduler's own module: hpcorch.providers.slurm.task,
hpcorch.providers.sge.task.
"""

from __future__ import annotations

import dataclasses
import enum
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from hpcorch.spec import RunSpec
from hpcorch.store.records import (
    STDERR_FILE,
    STDOUT_FILE,
    atomic_write_json,
    meta_dir,
    read_json,
    spec_path,
)


class TaskStatus(str, enum.Enum):
    """How far a run got in one array task (stored as its name, a plain JSON string)."""

    RUNNING = "RUNNING"
    EXITED = "EXITED"
    """The run's process ended by itself: its exit code is its verdict."""
    STOPPED = "STOPPED"
    """It was signalled (time limit, cancel, preemption): the scheduler has the verdict."""
    CANCELLED = "CANCELLED"
    """Cancelled before it started (written by the provider, not by the task)."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TaskState:
    """`<run_dir>/.hpcorch/<scheduler>.json`: how far one run got in one array task."""

    job_id: str
    """The array task that ran it (a later submission has another id)."""
    state: TaskStatus
    """RUNNING, EXITED (the run's process ended by itself), STOPPED (signalled) or
    CANCELLED; a plain string is taken as its TaskStatus."""
    node: str = ""
    restart: int = 0
    exit_code: int | None = None
    signal: int | None = None
    started: float | None = None
    ended: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, TaskStatus):
            object.__setattr__(self, "state", TaskStatus(self.state))

    @property
    def exited(self) -> bool:
        """The run's process ended by itself: its exit code is its verdict."""
        return self.state is TaskStatus.EXITED


S = TypeVar("S", bound=TaskState)


class TaskStateFile(Generic[S]):
    """One scheduler's task-state file: its name under `<run_dir>/.hpcorch/` and its class."""

    def __init__(self, name: str, cls: type[S]) -> None:
        self.name = name
        self.cls = cls

    def path(self, run_dir: str | Path) -> Path:
        """Where a run's task-state file lives."""
        return meta_dir(run_dir) / self.name

    def read(self, run_dir: str | Path) -> S | None:
        """The task-state file of a run directory, or None (missing or unreadable)."""
        try:
            data = read_json(self.path(run_dir))
        except (OSError, ValueError):
            return None
        known = {f.name for f in dataclasses.fields(self.cls)}
        try:
            return self.cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError):  # a field missing, or a state no enum knows
            return None

    def write(self, run_dir: str | Path, state: S) -> None:
        """Write the task-state file atomically."""
        atomic_write_json(self.path(run_dir), dataclasses.asdict(state))


class ArrayTaskRunner(Generic[S]):
    """Runs the runs of one array index in order, forwarding signals to the running one.

    A subclass sets `map`, `job_id`, `node`, `restart` and `entries` (the index's
    entries of the map file), and provides `_start`, `_forward` and `_wait`."""

    #: The task-state file of this scheduler.
    state_file: TaskStateFile[S]
    #: Signals caught and forwarded to the running run.
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, map_path: str) -> None:
        self.map: dict[str, Any] = read_json(map_path)
        self.job_id = ""
        self.node = ""
        self.restart = 0
        self.entries: list[dict[str, Any]] = []
        self.child: Any = None
        """The running run's handle (from `_start`), None between runs."""
        self.current: RunSpec | None = None
        """The run started last, until it ends by itself (a signal then is about the next)."""
        self.stop_signal: int | None = None
        self.stopped_rc: int | None = None
        """The exit status of the run a signal stopped."""

    # -- the scheduler's part ---------------------------------------------------
    def _start(self, spec: RunSpec, out_fd: int, err_fd: int) -> Any:
        """Start one run (stdin closed, output to the fds); a handle for `_forward`/`_wait`."""
        raise NotImplementedError

    def _forward(self, signum: int) -> None:
        """Pass a signal on to the running run, if any."""
        raise NotImplementedError

    def _wait(self, child: Any) -> int:
        """Wait for the run; its exit status (negative: the signal that ended it)."""
        raise NotImplementedError

    def _base_state(self, spec: RunSpec, started: float) -> S:
        """The RUNNING state written before the run starts."""
        return self.state_file.cls(self.job_id, TaskStatus.RUNNING, self.node, self.restart,
                                   started=started)

    def _prepare(self, specs: Sequence[RunSpec]) -> None:
        """Before the first run (e.g. warm up an interpreter to fork from)."""

    def _finish(self, specs: Sequence[RunSpec], status: int) -> int:
        """The task's exit code once the loop ended (128 + signal when one stopped it)."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return status

    # -- signals -------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        self._forward(signum)

    # -- the task --------------------------------------------------------------------
    def run(self) -> int:
        """Run every run of this index; the exit code is the first failing run's."""
        for sig in self.signals:
            signal.signal(sig, self._on_signal)
        specs = [RunSpec.from_dict(read_json(spec_path(e["run_dir"]))) for e in self.entries]
        self._prepare(specs)
        status = 0
        for spec in specs:
            if self.stop_signal is not None:
                break
            done = self.state_file.read(spec.run_dir)
            if done is not None and done.job_id == self.job_id and done.exited:
                continue  # finished before this task was requeued or rescheduled
            code = self._run_one(spec)
            if code is not None and code != 0 and status == 0:
                status = code
        return self._finish(specs, status)

    def _run_one(self, spec: RunSpec) -> int | None:
        """Run one spec to its end; its exit code, or None when it was stopped by a signal."""
        base = self._base_state(spec, time.time())
        self.current = spec
        self.state_file.write(spec.run_dir, base)
        meta = meta_dir(spec.run_dir)
        with open(meta / STDOUT_FILE, "ab") as out, open(meta / STDERR_FILE, "ab") as err:
            if self.restart:
                err.write(f"hpcorch: restart {self.restart} of job {self.job_id}\n".encode())
                err.flush()
            try:
                self.child = self._start(spec, out.fileno(), err.fileno())
            except OSError as exc:
                err.write(f"hpcorch: cannot start {spec.command[:1]}: {exc}\n".encode())
                self.state_file.write(spec.run_dir, dataclasses.replace(
                    base, state=TaskStatus.EXITED, exit_code=127, ended=time.time()))
                return 127
        if self.stop_signal is not None:  # a signal arrived while it was starting
            self._forward(self.stop_signal)
        rc = self._wait(self.child)
        self.child = None
        ended = time.time()
        if self.stop_signal is not None:
            self.stopped_rc = rc
            self.state_file.write(spec.run_dir, dataclasses.replace(
                base, state=TaskStatus.STOPPED, signal=self.stop_signal, ended=ended))
            return None
        self.current = None  # ended by itself: a later signal is about the next run
        self.state_file.write(spec.run_dir, dataclasses.replace(
            base, state=TaskStatus.EXITED, exit_code=rc if rc >= 0 else None,
            signal=-rc if rc < 0 else None, ended=ended))
        return rc if rc >= 0 else 128 - rc


def task_main(argv: Sequence[str] | None, module: str,
              make: Callable[[str], ArrayTaskRunner[Any]]) -> int:
    """A scheduler's entry point, `python -m <module> MAP_FILE`: run that array task."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(f"usage: python -m {module} MAP_FILE", file=sys.stderr)
        return 2
    return make(args[0]).run()
