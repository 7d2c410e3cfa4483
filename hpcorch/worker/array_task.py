"""The scheduler-independent part of an array task: run the runs of one array index.

A batch scheduler (Slurm, Grid Engine) starts one process per array index
with a map file the provider wrote; that process runs the index's runs one
after the other, each with stdout/stderr appended to `<run_dir>/.hpcorch/`,
and keeps a small task-state file there (job id, node, exit code) so the
provider learns how the run ended without asking the scheduler. A run that
finished before the task was requeued or rescheduled is not run again. A
signal the task gets is forwarded to the running run; its state then says
STOPPED and the scheduler's word decides how the run ended.

Time limits, for every scheduler alike: the scheduler sends `limit_signal`
`grace_s` before the limit. What happens then is `timeout_decision`'s choice, as
submitit does it: with `requeue_on_timeout: checkpointed` (the default) only a
run that can resume (hpcorch.checkpoint: it saved a checkpoint, or it catches
the signal) gets hpcorch.checkpoint's signal and, once it saved or stopped to
resume, the task is requeued while the run's time-limit requeues
(`TaskState.timeouts`; preemptions do not count) are below max_requeues; the
task then starts again with the runs that have not finished (they find their
checkpoints in their run directories). Any other run keeps running into its
limit and ends TIMEOUT, instead of being started from zero again. `always`
requeues every run, `never` none.

What differs per scheduler (where the index, job id and restart count come
from, how a run is started, signalled and polled, how a task is requeued) is a
subclass in the scheduler's own module: hpcorch.providers.slurm.task,
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

from hpcorch import checkpoint
from hpcorch.spec import RunSpec
from hpcorch.store.records import (
    STDERR_FILE,
    STDOUT_FILE,
    atomic_write_json,
    meta_dir,
    read_json,
    spec_path,
)
from hpcorch.worker.timeouts import TimeoutAction, timeout_decision

#: Seconds between two checks of a running child (signals interrupt the wait anyway).
_POLL_S = 0.05


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
    timeouts: int = 0
    """How often this array task was requeued at this run's time limit (the budget of
    `max_requeues`; the scheduler's restart count also counts preemptions)."""

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
    entries of the map file), and provides `_start`, `_signal_child`, `_poll` and, for
    time-limit requeues, `_requeue_task`."""

    #: The task-state file of this scheduler.
    state_file: TaskStateFile[S]
    #: Signals caught and forwarded to the running run.
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
    #: The signal the scheduler sends `grace_s` before the time limit (None: none).
    limit_signal: int | None = None
    #: What the run gets instead of `limit_signal`: hpcorch.checkpoint's "save now".
    run_signal: int = checkpoint.STOP_SIGNALS[0]

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
        self.timeouts = 0
        """The current run's time-limit requeues so far."""
        self.requeue: TimeoutAction | None = None
        """What the time-limit signal decided (None: no such signal came)."""
        self.deadline = float("inf")
        """When a run told of its time limit is killed if it has not stopped."""

    # -- the scheduler's part ---------------------------------------------------
    def _start(self, spec: RunSpec, out_fd: int, err_fd: int) -> Any:
        """Start one run (stdin closed, output to the fds); a handle for `_forward`/`_wait`."""
        raise NotImplementedError

    def _signal_child(self, signum: int) -> None:
        """Send a signal to the running run, if any."""
        raise NotImplementedError

    def _poll(self, child: Any) -> int | None:
        """The run's exit status if it ended (negative: the signal that ended it), else None."""
        raise NotImplementedError

    def _requeue_task(self) -> int:
        """Have the scheduler start this task again later; the task's exit code."""
        raise NotImplementedError

    def _base_state(self, spec: RunSpec, started: float) -> S:
        """The RUNNING state written before the run starts (with the run's time-limit
        requeues so far in this array task)."""
        previous = self.state_file.read(spec.run_dir)
        self.timeouts = previous.timeouts if previous and previous.job_id == self.job_id else 0
        return self.state_file.cls(self.job_id, TaskStatus.RUNNING, self.node, self.restart,
                                   started=started, timeouts=self.timeouts)

    def _prepare(self, specs: Sequence[RunSpec]) -> None:
        """Before the first run (e.g. warm up an interpreter to fork from)."""

    def _finish(self, specs: Sequence[RunSpec], status: int) -> int:
        """The task's exit code once the loop ended (128 + signal when one stopped it);
        at a time limit, requeue or let the limit end the task."""
        if self.requeue is TimeoutAction.REQUEUE_IF_SAVED and not self._resumable(specs):
            return self._expire(f"job {self.job_id}: the run saved no checkpoint when told of "
                                "its time limit: not requeued")
        if self.requeue is not None:
            return self._requeue()
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return status

    # -- signals -------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        if signum == self.limit_signal:
            usage = checkpoint.usage(self.current.run_dir) if self.current else checkpoint.Usage()
            action, why = timeout_decision(
                str(self.map.get("requeue_on_timeout", "checkpointed")), self.timeouts,
                int(self.map.get("max_requeues", 0)), usage)
            if action is TimeoutAction.EXPIRE:
                # Let the time limit end it (TIMEOUT): keep running, do not signal the run
                # (a run that does not catch the signal would die of it).
                self.stop_signal = None
                print(f"hpcorch: time limit near for job {self.job_id}: {why}",
                      file=sys.stderr, flush=True)
                return
            self.requeue = action
            # Give the run most of the grace period to save its checkpoint.
            self.deadline = time.monotonic() + max(1.0, float(self.map.get("grace_s", 60)) - 5)
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        """Pass a signal on to the running run (the time-limit one as `run_signal`)."""
        self._signal_child(self.run_signal if signum == self.limit_signal else signum)

    def _wait(self, child: Any) -> int:
        """Wait for the run (polling, so signals and the time-limit deadline are seen);
        its exit status (negative: the signal that ended it)."""
        while True:
            status = self._poll(child)
            if status is not None:
                return status
            if time.monotonic() > self.deadline:
                self._signal_child(signal.SIGKILL)
            time.sleep(_POLL_S)

    # -- time limits -------------------------------------------------------------------
    def _resumable(self, specs: Sequence[RunSpec]) -> bool:
        """The stopped run saved a checkpoint or stopped itself to be resumed."""
        stopped = self.current or (specs[0] if specs else None)
        return self.stopped_rc == checkpoint.EXIT_RESUME or (
            stopped is not None and checkpoint.usage(stopped.run_dir).saved)

    def _requeue(self) -> int:
        """Spend the run's time-limit budget, then have the scheduler requeue the task."""
        print(f"hpcorch: requeueing job {self.job_id} (time-limit requeue {self.timeouts + 1} "
              f"of {self.map.get('max_requeues')})", file=sys.stderr, flush=True)
        if self.current is not None:  # spend the run's budget before the task starts again
            state = self.state_file.read(self.current.run_dir)
            if state is not None:
                self.state_file.write(self.current.run_dir,
                                      dataclasses.replace(state, timeouts=self.timeouts + 1))
        return self._requeue_task()

    def _expire(self, notice: str) -> int:
        """Say why (`notice`, to stderr), then wait for the time limit to end this task
        (TIMEOUT), as for a run not requeued."""
        # The scheduler's SIGTERM/SIGKILL at the limit ends it; SIGTERM's default action
        # is installed before the notice, so a SIGTERM right after it is not swallowed by
        # the forwarding handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"hpcorch: {notice}", file=sys.stderr, flush=True)
        end = time.monotonic() + float(self.map.get("grace_s", 60)) + 120
        while time.monotonic() < end:
            time.sleep(0.5)
        return 128 + int(self.limit_signal or signal.SIGTERM)

    def wait_to_be_ended(self) -> int:
        """After a requeue: the scheduler now ends this attempt (SIGTERM, then SIGKILL) and
        starts the task again later; exiting first could race the requeue with an end of
        its own. 0 if it has not ended it within `requeue_wait_s`."""
        end = time.monotonic() + float(self.map.get("requeue_wait_s", 30))
        while time.monotonic() < end:
            time.sleep(0.5)
        return 0

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
