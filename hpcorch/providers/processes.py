"""Runs as child processes of the orchestrator: the process handling local and mpi share.

A `ProcessPool` queues runs, starts them in submission order as its admission
lets them, reaps them as they exit and turns their exit into a RunStatus. Every
run gets its own session (process group), so cancelling kills the whole tree it
started and leaves no orphans; SIGTERM first, SIGKILL after KILL_WAIT_S.

What differs between the providers that hold one is plugged in, not
overridden (issue 11: no provider inherits another's private methods):

    admission   may this run start now, and what does it hold until it ends
                (local: worker slots over the usable cores; mpi: slots and GPUs
                placed on its host list); released when the run is reaped
    argv        a cold start's command (mpirun over the placed hosts, or not)
    failure     completes a failed run's context (which rank, which host)
    executor    a warm start: the run's job executed in a fork of this process

With `limit_memory`, a run's child gets `resources.mem_gb` as its RLIMIT_DATA before the
job runs, cold or warm (hpcorch.providers.machine.memory_limit_bytes). A failed run's
context carries its peak memory (max RSS) and, where it can be told, its FailureClass:
OOM for the kernel's OOM killer or a MemoryError, CANCELLED for a cancelled run.
"""

from __future__ import annotations

import functools
import gc
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpcorch.errors import StoreError
from hpcorch.jobenv import HASH_SEED_ENV, job_environment
from hpcorch.launch import LaunchOptions
from hpcorch.providers.base import Capabilities
from hpcorch.providers.kills import kill_reason, oom_kill_count, oom_killed
from hpcorch.providers.machine import limit_memory, memory_limit_bytes
from hpcorch.spec import (
    FailureClass,
    FailureContext,
    RunHandle,
    RunSpec,
    RunState,
    RunStatus,
)
from hpcorch.store.records import STDERR_FILE, STDOUT_FILE, meta_dir, run_record, tail_text
from hpcorch.worker.forked import become_run, exit_with, signal_run

#: A function run inside a forked child to execute one spec; returns the exit code.
Executor = Callable[[RunSpec], int]
#: A failed run's context completed by the provider (the failing rank, its host).
FailureHook = Callable[[RunSpec, FailureContext], FailureContext]

#: Seconds a cancelled run gets between SIGTERM and SIGKILL (like Slurm's KillWait).
KILL_WAIT_S = 5.0

#: The last line of a traceback that ended in MemoryError (`MemoryError` or `MemoryError: ...`).
_MEMORY_ERROR = re.compile(r"^(?:\w+\.)*MemoryError\b", re.MULTILINE)


class Admission(Protocol):
    """Decides whether the next queued run may start now, and takes what it holds."""

    def admit(self, job_id: str, spec: RunSpec) -> bool:
        """Take what the run needs and say True, or say False: it waits, and so do the
        runs queued behind it (runs start in submission order)."""

    def release(self, job_id: str) -> None:
        """Give back what an admitted run held: it ended (was reaped) or failed to start."""


class CoreAdmission:
    """`workers` slots on this machine; a run takes one per rank, capped at `workers` so a
    run bigger than the machine still starts (alone)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._held: dict[str, int] = {}

    def slots(self, spec: RunSpec) -> int:
        """Worker slots a run occupies."""
        return min(max(1, spec.resources.tasks), self.workers)

    def admit(self, job_id: str, spec: RunSpec) -> bool:
        """True (slots taken) when the run's slots are free."""
        need = self.slots(spec)
        if sum(self._held.values()) + need > self.workers:
            return False
        self._held[job_id] = need
        return True

    def release(self, job_id: str) -> None:
        """The run's slots are free again."""
        self._held.pop(job_id, None)


def job_id(spec: RunSpec) -> str:
    """A run's job id in a process pool: `<sweep id>/<run number>`, and `.<attempt>` for a
    retry: the failed attempt's process may still be exiting when its retry starts, and
    its exit must never be taken for the retry's."""
    base = f"{spec.sweep_id}/{spec.num}"
    return f"{base}.{spec.attempt}" if spec.attempt else base


def launch_options(name: str, capabilities: Capabilities, **values: object) -> LaunchOptions:
    """Launch options for starting from this process with a provider's declared launchers."""
    return LaunchOptions.here(name, multi_rank=capabilities.multi_rank,
                              single_rank=capabilities.single_rank, **values)


def render_line(spec: RunSpec, argv: Sequence[str]) -> str:
    """One shell line that starts a run as a cold start would (its variables, its dir)."""
    env = {**dict(spec.env), HASH_SEED_ENV: str(spec.seed)}
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    workdir = shlex.quote(spec.workdir or spec.run_dir)
    return f"(cd {workdir} && env {prefix} {shlex.join(argv)})"


@dataclass
class _Proc:
    spec: RunSpec
    pid: int
    popen: subprocess.Popen[bytes] | None
    started: float
    cancelled: bool = False
    pidfd: int | None = None
    """A pollable descriptor that becomes readable when the process exits (Linux >= 5.3)."""
    oom_kills: int | None = None
    """The kernel's OOM-kill count when the run started (see kill_reason)."""
    max_rss_kb: int | None = None
    """Peak resident memory of the run's process (and the children it waited for), KiB."""


class ProcessPool:
    """Queued, running and finished runs of one provider object, as child processes."""

    def __init__(self, provider: str, admission: Admission, argv: Callable[[RunSpec], list[str]],
                 *, failure: FailureHook | None = None, executor: Executor | None = None,
                 poll_interval: float = 0.05, limit_memory: bool = False) -> None:
        self.provider = provider
        self.limit_memory = limit_memory
        """Give each run's child `resources.mem_gb` as its RLIMIT_DATA (runs started on
        this machine; not mpirun's remote ranks)."""
        self.admission = admission
        self._argv = argv
        self._failure = failure
        self.executor = executor
        self.poll_interval = poll_interval
        self._queue: dict[str, RunSpec] = {}  # job id -> spec, in submission order
        self._running: dict[str, _Proc] = {}
        self._finished: dict[str, RunStatus] = {}
        self._known: dict[str, RunSpec] = {}
        self._host = socket.gethostname()
        self._frozen = False

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._queue and not self._running

    def _handle(self, job: str, spec: RunSpec) -> RunHandle:
        return RunHandle(self.provider, spec.run_key, job)

    # -- what providers delegate -------------------------------------------------
    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Queue the runs (already checked by the provider) and start what may start."""
        handles = []
        for spec in runs:
            job = job_id(spec)
            self._known[job] = spec
            self._finished.pop(job, None)
            self._queue[job] = spec
            handles.append(self._handle(job, spec))
        self._pump()
        return handles

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Runs of this pool still queued or running (a child process dies with its
        orchestrator's session, so there is nothing to find across processes)."""
        wanted = set(run_keys)
        return [self._handle(job, spec) for job, spec in self._known.items()
                if spec.run_key in wanted and job not in self._finished
                and sweep_id in (None, spec.sweep_id)]

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Reap finished children, start queued runs, and report."""
        self._reap()
        self._pump()
        out = []
        for handle in handles:
            if handle.job_id in self._finished:
                out.append(self._finished[handle.job_id])
            elif handle.job_id in self._running:
                out.append(RunStatus(handle, RunState.RUNNING))
            elif handle.job_id in self._queue:
                out.append(RunStatus(handle, RunState.SUBMITTED))
            else:
                out.append(RunStatus(handle, RunState.UNKNOWN))
        return out

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Drop queued runs; SIGTERM running ones' process groups, SIGKILL after KILL_WAIT_S."""
        ids = {h.job_id for h in handles}
        for job in [j for j in self._queue if j in ids]:
            spec = self._queue.pop(job)
            self._finished[job] = RunStatus(
                self._handle(job, spec), RunState.CANCELLED,
                FailureContext(self.provider, reason="cancelled before it started"))
        procs = [p for job, p in self._running.items() if job in ids]
        for proc in procs:
            proc.cancelled = True
            signal_run(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_WAIT_S
        while any(job_id(p.spec) in self._running for p in procs):
            self._reap()
            if time.monotonic() > deadline:
                for proc in procs:
                    signal_run(proc.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)

    def wait(self, timeout: float) -> None:
        """Keep the pool busy for up to `timeout`: each child that exits is reaped and its
        place refilled at once, so runs start as fast as they end however seldom the
        orchestrator looks; returns early once nothing runs any more."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fds = [p.pidfd for p in self._running.values() if p.pidfd is not None]
            if len(fds) < len(self._running) or not fds:  # no pidfds: poll by sleeping
                time.sleep(left if not self._running else min(left, self.poll_interval))
                if not self._running:
                    return
                self._reap()
                self._pump()
                continue
            if select.select(fds, [], [], left)[0]:
                self._reap()
                self._pump()
                if not self._running:
                    return

    def close(self) -> None:
        """Leave no processes behind: runs that already wrote their record get a moment
        to exit by themselves; whatever still runs after that is cancelled."""
        deadline = time.monotonic() + 2.0
        while self._running and time.monotonic() < deadline:
            self._reap()
            if self._running:
                self.wait(0.05)
        self.cancel([self._handle(j, s) for j, s in self._known.items()
                     if j not in self._finished])
        self._queue.clear()
        if self._frozen:  # what the sweep left behind may be collected again
            gc.unfreeze()
            self._frozen = False

    def environment(self, spec: RunSpec) -> dict[str, str]:
        """The environment a run's process starts with (the job contract's)."""
        return job_environment(spec, provider=self.provider, job_id=job_id(spec))

    # -- internals ---------------------------------------------------------------
    def _pump(self) -> None:
        while (spec := next(iter(self._queue.values()), None)) is not None:
            job = job_id(spec)
            if not self.admission.admit(job, spec):
                return  # in order: wait until the head of the queue may start
            del self._queue[job]
            try:
                proc = self._start(spec)
            except BaseException:
                self.admission.release(job)
                raise
            try:
                proc.pidfd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):  # old kernel or not Linux: wait() sleeps instead
                proc.pidfd = None
            proc.oom_kills = oom_kill_count()
            self._running[job] = proc

    def _start(self, spec: RunSpec) -> _Proc:
        meta = meta_dir(spec.run_dir)
        meta.mkdir(parents=True, exist_ok=True)
        out = open(meta / STDOUT_FILE, "ab")  # noqa: SIM115 - handed to the child
        err = open(meta / STDERR_FILE, "ab")  # noqa: SIM115
        try:
            # Ranks and runs inside an image start cold: the warm fork runs on the host.
            if self.executor is None or spec.resources.tasks > 1 or spec.image:
                limit = self._memory_limit(spec)
                # preexec_fn only when there is a limit: it costs Popen its faster spawn.
                popen = subprocess.Popen(
                    self._argv(spec), cwd=spec.workdir or spec.run_dir,
                    env=self.environment(spec), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, start_new_session=True,
                    preexec_fn=None if limit is None else functools.partial(  # noqa: PLW1509
                        limit_memory, limit))
                return _Proc(spec, popen.pid, popen, time.time())
            sys.stdout.flush()
            sys.stderr.flush()
            # Freeze the collector's view of every object the child inherits: a garbage
            # collection in the child would otherwise touch (and so copy) all of the
            # parent's memory, ~100 ms per run here. The parent stays frozen while it has
            # runs (unfreezing in close()): its own full collections would write to every
            # page it shares with its running children, each write a copy-on-write fault.
            gc.freeze()
            self._frozen = True
            pid = os.fork()
            if pid == 0:  # child: never returns
                self._run_child(spec, out.fileno(), err.fileno())
            return _Proc(spec, pid, None, time.time())
        finally:
            out.close()
            err.close()

    def _run_child(self, spec: RunSpec, out_fd: int, err_fd: int) -> None:
        executor = self.executor
        assert executor is not None

        def body() -> int:
            become_run(out_fd, err_fd, self.environment(spec))
            limit_memory(self._memory_limit(spec))
            return executor(spec)

        exit_with(body)

    def _memory_limit(self, spec: RunSpec) -> int | None:
        return memory_limit_bytes(spec.resources) if self.limit_memory else None

    def _reap(self) -> None:
        for job, proc in list(self._running.items()):
            # wait4, not waitpid/poll: its rusage says how much memory the run had used,
            # which is all a person learns of a run killed without a word (SIGKILL).
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, usage = proc.pid, 255 << 8, None
            if pid == 0:
                continue
            rc = os.waitstatus_to_exitcode(status)
            if proc.popen is not None:
                proc.popen.returncode = rc  # reaped here: Popen must not wait for it again
            proc.max_rss_kb = usage.ru_maxrss if usage is not None else None
            del self._running[job]
            if proc.pidfd is not None:
                os.close(proc.pidfd)
            # Like Slurm at the end of a job: whatever the run left running in its
            # session (a forgotten subprocess) goes with it, so nothing is orphaned.
            signal_run(proc.pid, signal.SIGKILL)
            try:
                self._finished[job] = self._outcome(proc, rc)
            finally:  # after the outcome: the failure hook may still read the placement
                self.admission.release(job)

    def _outcome(self, proc: _Proc, rc: int) -> RunStatus:
        handle = self._handle(job_id(proc.spec), proc.spec)
        if rc == 0:
            return RunStatus(handle, RunState.SUCCEEDED)
        oom_after = oom_kill_count()
        tail = tail_text(meta_dir(proc.spec.run_dir) / STDERR_FILE)
        context = FailureContext(
            provider=self.provider, job_id=str(proc.pid), node=self._host,
            exit_code=rc if rc > 0 else None, signal=-rc if rc < 0 else None,
            reason="cancelled" if proc.cancelled else kill_reason(
                rc, proc.oom_kills, oom_after, proc.max_rss_kb),
            stderr_tail=tail, failure_class=self._failure_class(proc, rc, oom_after, tail),
            peak_mem_gb=proc.max_rss_kb / 2**20 if proc.max_rss_kb else None)
        if proc.cancelled:
            return RunStatus(handle, RunState.CANCELLED, context)
        if self._failure is not None:
            context = self._failure(proc.spec, context)
        return RunStatus(handle, RunState.FAILED, context)

    @staticmethod
    def _failure_class(proc: _Proc, rc: int, oom_after: int | None,
                       stderr_tail: str) -> FailureClass | None:
        """CANCELLED or OOM where this pool can tell; None leaves it to the orchestrator
        (a record's error, APP_ERROR, ...)."""
        if proc.cancelled:
            return FailureClass.CANCELLED
        if oom_killed(rc, proc.oom_kills, oom_after):
            return FailureClass.OOM
        try:
            record = run_record(proc.spec.run_dir, proc.spec.run_key, proc.spec.sweep_id)
        except StoreError:  # a torn record says nothing; the stderr tail may
            record = None
        if record is not None and record.error is not None \
                and record.error.type.rpartition(".")[2] == "MemoryError":
            return FailureClass.OOM
        # No record (it died before writing one): its last traceback says it (only the
        # last: the stderr file is appended to by every attempt of the run).
        last = stderr_tail.rpartition("Traceback (most recent call last):")[2]
        return FailureClass.OOM if _MEMORY_ERROR.search(last) else None
