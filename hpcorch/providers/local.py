"""The local provider: runs on this machine, several runs at once.

Two ways to start a run, proven to give the same records (tests/integration):
- warm (default): fork the already-initialised orchestrator process and run
  the job in the child through an executor the launcher supplies; costs
  milliseconds instead of an interpreter start-up per run.
- cold (`provider.warm=false`, or no executor): start the run's portable
  command, `python train.py <overrides> hydra.run.dir=...`, as a new process.
Every run gets its own session (process group), so cancelling kills the whole
tree it started and leaves no orphans.
"""

from __future__ import annotations

import gc
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from hpcorch.jobenv import JOB_ID_ENV, SPEC_ENV, job_environment
from hpcorch.launch import LaunchOptions, launch_argv, preflight, rank_failure
from hpcorch.providers.base import Capabilities
from hpcorch.providers.kills import kill_reason, oom_kill_count
from hpcorch.providers.machine import check_rank_count, check_ranks, usable_cores
from hpcorch.settings import require
from hpcorch.spec import FailureContext, Resources, RunHandle, RunSpec, RunState, RunStatus
from hpcorch.store.records import STDERR_FILE, STDOUT_FILE, meta_dir, tail_text
from hpcorch.worker.forked import become_run, exit_with, signal_run

#: A function run inside a forked child to execute one spec; returns the exit code.
Executor = Callable[[RunSpec], int]

#: Seconds a cancelled run gets between SIGTERM and SIGKILL (like Slurm's KillWait).
KILL_WAIT_S = 5.0

__all__ = ["JOB_ID_ENV", "SPEC_ENV", "LocalProvider", "LocalSettings", "check_rank_count",
           "check_ranks", "job_environment", "usable_cores"]


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
        self._executor = executor if self.settings.warm else None
        self._queue: dict[str, RunSpec] = {}  # job id -> spec, in submission order
        self._running: dict[str, _Proc] = {}
        self._finished: dict[str, RunStatus] = {}
        self._known: dict[str, RunSpec] = {}
        self._host = socket.gethostname()
        self._frozen = False

    @classmethod
    def check_resources(cls, resources: Resources) -> None:
        """A sweep's resources checked before anything is planned (the Hydra sweeper asks):
        this provider's ranks share this machine's cores. Subclasses that place ranks on
        other hosts (provider=mpi) keep their own limits, so the check is this class's."""
        if cls.name == LocalProvider.name:
            check_rank_count(resources)

    # -- contract --------------------------------------------------------
    def check(self) -> None:
        """Nothing to reach: the local machine is always there. (Runs of more ranks than
        usable cores are refused by `check_resources` and again in `submit`.)"""

    def render(self, runs: Sequence[RunSpec]) -> str:
        """One shell line per run, exactly what the cold path would start."""
        lines = [f"# provider=local workers={self.workers} warm={self._executor is not None}"]
        for spec in runs:
            env = {**dict(spec.env), "PYTHONHASHSEED": str(spec.seed)}
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
            workdir = shlex.quote(spec.workdir or spec.run_dir)
            lines.append(f"# run #{spec.num} key={spec.run_key} dir={spec.run_dir}")
            lines.append(f"(cd {workdir} && env {prefix} {shlex.join(self._argv(spec))})")
        return "\n".join(lines) + "\n"

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Queue the runs and start as many as there are free workers."""
        self._check_ranks(runs)  # before anything starts
        preflight(runs, self._launch_options(), one_machine=True)
        handles = []
        for spec in runs:
            job_id = self._job_id(spec)
            self._known[job_id] = spec
            self._finished.pop(job_id, None)
            self._queue[job_id] = spec
            handles.append(RunHandle(self.name, spec.run_key, job_id))
        self._pump()
        return handles

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Runs of this provider object still queued or running (a local run dies with
        its orchestrator's session, so there is nothing to find across processes)."""
        wanted = set(run_keys)
        return [
            RunHandle(self.name, spec.run_key, job_id)
            for job_id, spec in self._known.items()
            if spec.run_key in wanted and job_id not in self._finished
            and sweep_id in (None, spec.sweep_id)
        ]

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
        for job_id in [j for j in self._queue if j in ids]:
            spec = self._queue.pop(job_id)
            self._finished[job_id] = RunStatus(
                RunHandle(self.name, spec.run_key, job_id),
                RunState.CANCELLED,
                FailureContext(self.name, reason="cancelled before it started"),
            )
        procs = [p for job_id, p in self._running.items() if job_id in ids]
        for proc in procs:
            proc.cancelled = True
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + KILL_WAIT_S
        while any(self._job_id(p.spec) in self._running for p in procs):
            self._reap()
            if time.monotonic() > deadline:
                for proc in procs:
                    self._signal(proc, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)

    def wait(self, timeout: float) -> None:
        """Keep the workers busy for up to `timeout`: each child that exits is reaped and
        its worker refilled at once, so runs start as fast as they end however seldom
        the orchestrator looks; returns early once nothing runs any more."""
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
        self.cancel(
            [
                RunHandle(self.name, s.run_key, j)
                for j, s in self._known.items()
                if j not in self._finished
            ]
        )
        self._queue.clear()
        if self._frozen:  # what the sweep left behind may be collected again
            gc.unfreeze()
            self._frozen = False

    # -- internals -------------------------------------------------------
    def _check_ranks(self, runs: Sequence[RunSpec]) -> None:
        if type(self).name == LocalProvider.name:  # see check_resources
            check_ranks(runs)

    @staticmethod
    def _job_id(spec: RunSpec) -> str:
        return f"{spec.sweep_id}/{spec.num}"

    def _slots(self, spec: RunSpec) -> int:
        """Worker slots a run occupies: one per rank (capped, so a big run still starts)."""
        return min(max(1, spec.resources.tasks), self.workers)

    def _head(self) -> RunSpec | None:
        """The queued run that starts next (runs start in submission order)."""
        return next(iter(self._queue.values()), None)

    def _pump(self) -> None:
        busy = sum(self._slots(p.spec) for p in self._running.values())
        while (spec := self._head()) is not None:
            if busy + self._slots(spec) > self.workers:
                break
            del self._queue[self._job_id(spec)]
            busy += self._slots(spec)
            proc = self._start(spec)
            try:
                proc.pidfd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):  # old kernel or not Linux: wait() sleeps instead
                proc.pidfd = None
            proc.oom_kills = oom_kill_count()
            self._running[self._job_id(spec)] = proc

    def _start(self, spec: RunSpec) -> _Proc:
        meta = meta_dir(spec.run_dir)
        meta.mkdir(parents=True, exist_ok=True)
        out = open(meta / STDOUT_FILE, "ab")  # noqa: SIM115 - handed to the child
        err = open(meta / STDERR_FILE, "ab")  # noqa: SIM115
        try:
            # Ranks and runs inside an image start cold: the warm fork runs on the host.
            if self._executor is None or spec.resources.tasks > 1 or spec.image:
                popen = subprocess.Popen(
                    self._argv(spec),
                    cwd=spec.workdir or spec.run_dir,
                    env=self._environment(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
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
        def body() -> int:
            become_run(out_fd, err_fd, self._environment(spec))
            assert self._executor is not None
            return self._executor(spec)

        exit_with(body)

    def _environment(self, spec: RunSpec) -> dict[str, str]:
        return job_environment(spec, provider=self.name, job_id=self._job_id(spec))

    def _reap(self) -> None:
        for job_id, proc in list(self._running.items()):
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
            del self._running[job_id]
            if proc.pidfd is not None:
                os.close(proc.pidfd)
            # Like Slurm at the end of a job: whatever the run left running in its
            # session (a forgotten subprocess) goes with it, so nothing is orphaned.
            signal_run(proc.pid, signal.SIGKILL)
            self._finished[job_id] = self._outcome(proc, rc)

    def _outcome(self, proc: _Proc, rc: int) -> RunStatus:
        handle = RunHandle(self.name, proc.spec.run_key, self._job_id(proc.spec))
        if rc == 0:
            return RunStatus(handle, RunState.SUCCEEDED)
        context = FailureContext(
            provider=self.name,
            job_id=str(proc.pid),
            node=self._host,
            exit_code=rc if rc > 0 else None,
            signal=-rc if rc < 0 else None,
            reason="cancelled" if proc.cancelled else kill_reason(
                rc, proc.oom_kills, oom_kill_count(), proc.max_rss_kb),
            stderr_tail=tail_text(meta_dir(proc.spec.run_dir) / STDERR_FILE),
        )
        state = RunState.CANCELLED if proc.cancelled else RunState.FAILED
        if state is RunState.FAILED:
            context = self._failure(proc.spec, context)
        return RunStatus(handle, state, context)

    def _argv(self, spec: RunSpec) -> list[str]:
        """A cold start's argv: the portable command, under mpirun when it has several ranks."""
        return launch_argv(spec, self._launch_options(slots=usable_cores()))

    def _launch_options(self, **values: object) -> LaunchOptions:
        """Launch options from this process, with this provider's declared launchers."""
        caps = type(self).capabilities
        return LaunchOptions.here(self.name, multi_rank=caps.multi_rank,
                                  single_rank=caps.single_rank, **values)

    def _failure(self, spec: RunSpec, context: FailureContext) -> FailureContext:
        """A multi-rank run's failure names its rank, host and that rank's stderr."""
        return rank_failure(spec, context) if spec.resources.tasks > 1 else context

    @staticmethod
    def _signal(proc: _Proc, sig: int) -> None:
        signal_run(proc.pid, sig)
