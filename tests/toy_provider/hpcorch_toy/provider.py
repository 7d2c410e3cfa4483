"""The toy provider: runs each spec's command as a child process, `slots` at a time.

It uses only hpcorch's public names (the RunSpec/RunStatus data, the job environment),
as a provider written outside hpcorch would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcorch.jobenv import job_environment
from hpcorch.providers.base import Capabilities
from hpcorch.spec import FailureContext, RunHandle, RunSpec, RunState, RunStatus
from hpcorch.store.records import STDERR_FILE, STDOUT_FILE, meta_dir, tail_text


@dataclass(frozen=True)
class ToySettings:
    """The `provider` node of `provider=toy`."""

    name: str = "toy"
    slots: int = 2
    """Runs at once."""


class ToyProvider:
    """Child processes, started in submission order as slots free up."""

    Settings = ToySettings
    name = "toy"
    capabilities = Capabilities()
    """Defaults: several ranks would start under mpirun; no engine variables."""
    poll_interval = 0.05
    max_poll_interval = 0.5

    def __init__(self, settings: ToySettings) -> None:
        self.settings = settings
        self._queued: list[tuple[RunSpec, RunHandle]] = []
        self._running: dict[str, tuple[RunSpec, subprocess.Popen[bytes]]] = {}
        self._done: dict[str, tuple[RunSpec, int]] = {}
        self._count = 0

    def check(self) -> None:
        """Nothing to reach: child processes always work."""

    def render(self, runs: Sequence[RunSpec]) -> str:
        """One line per run: its key, directory and command."""
        return "".join(f"# toy run #{s.num} {s.run_key} in {s.run_dir}: "
                       f"{subprocess.list2cmdline(s.command)}\n" for s in runs)

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Queue the runs; they start as slots free up."""
        handles = []
        for spec in runs:
            self._count += 1
            handle = RunHandle(self.name, spec.run_key, f"toy-{spec.sweep_id}-{self._count}")
            self._queued.append((spec, handle))
            handles.append(handle)
        self._fill()
        return handles

    def _fill(self) -> None:
        while self._queued and len(self._running) < self.settings.slots:
            spec, handle = self._queued.pop(0)
            logs = meta_dir(spec.run_dir)
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / STDOUT_FILE, "ab") as out, open(logs / STDERR_FILE, "ab") as err:
                proc = subprocess.Popen(
                    list(spec.command), cwd=spec.workdir or spec.run_dir, stdout=out, stderr=err,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    env=job_environment(spec, provider=self.name, job_id=handle.job_id))
            self._running[handle.job_id] = (spec, proc)

    def _reap(self) -> None:
        for job_id, (spec, proc) in list(self._running.items()):
            code = proc.poll()
            if code is not None:
                self._done[job_id] = (spec, code)
                del self._running[job_id]
        self._fill()

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Open runs this process submitted (a toy keeps no state across processes)."""
        self._reap()
        wanted = set(run_keys)
        open_runs = [(s, RunHandle(self.name, s.run_key, j)) for j, (s, _) in
                     self._running.items()] + self._queued
        return [h for s, h in open_runs
                if s.run_key in wanted and (sweep_id is None or s.sweep_id == sweep_id)]

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Each run's state; a failure carries its exit code and stderr tail."""
        self._reap()
        queued = {h.job_id for _, h in self._queued}
        out = []
        for handle in handles:
            if handle.job_id in queued:
                out.append(RunStatus(handle, RunState.SUBMITTED))
            elif handle.job_id in self._running:
                out.append(RunStatus(handle, RunState.RUNNING))
            elif handle.job_id in self._done:
                spec, code = self._done[handle.job_id]
                if code == 0:
                    out.append(RunStatus(handle, RunState.SUCCEEDED))
                else:
                    state = RunState.CANCELLED if code < 0 else RunState.FAILED
                    tail = tail_text(Path(meta_dir(spec.run_dir)) / STDERR_FILE)
                    out.append(RunStatus(handle, state, FailureContext(
                        self.name, job_id=handle.job_id, exit_code=code, stderr_tail=tail)))
            else:
                out.append(RunStatus(handle, RunState.UNKNOWN))
        return out

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Drop queued runs, terminate running ones."""
        ids = {h.job_id for h in handles}
        for spec, handle in [q for q in self._queued if q[1].job_id in ids]:
            self._queued.remove((spec, handle))
            self._done[handle.job_id] = (spec, -15)
        for job_id in ids & set(self._running):
            spec, proc = self._running.pop(job_id)
            proc.terminate()
            self._done[job_id] = (spec, proc.wait())

    def close(self) -> None:
        """Terminate what still runs."""
        self.cancel([RunHandle(self.name, s.run_key, j) for j, (s, _) in self._running.items()])
