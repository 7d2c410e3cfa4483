"""What one Grid Engine array task runs: its run(s), from the spec files, each with its own logs.

    python -m hpcorch.providers.sge.task <sweep dir>/.hpcorch/sge/<token>.json

The map file (written by the provider) lists the runs of every array task id.
For each run of this task, one after the other: start its portable command
(`spec.command`) with the run's environment, stdout/stderr appended to
`<run_dir>/.hpcorch/`, and keep a small task-state file there (`sge.json`:
job id, node, exit code) so the provider learns how the run ended without
asking the scheduler. The run's record is written by the Hydra callback
inside the run, as on every provider.

The run stays in the job's process group: Grid Engine ends a job (qdel, h_rt,
h_vmem) by signalling that group, and a run in a session of its own would
outlive its job. A signal this process gets (qsub -notify's SIGUSR1/SIGUSR2,
SIGTERM) is forwarded to the run; its state file then says STOPPED and the
scheduler's word (qacct) decides how the run ended.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.providers.local import job_environment
from hpcorch.spec import RunSpec
from hpcorch.store.records import (
    STDERR_FILE,
    STDOUT_FILE,
    atomic_write_json,
    meta_dir,
    read_json,
    spec_path,
)

TASK_STATE_FILE = "sge.json"
#: Signals forwarded to the running run.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class TaskState:
    """`<run_dir>/.hpcorch/sge.json`: how far one run got in one Grid Engine task."""

    job_id: str
    """`123.4`: the array task that ran it (a later submission has another id)."""
    state: str
    """RUNNING, EXITED (the run's process ended by itself) or STOPPED (signalled)."""
    node: str = ""
    restart: int = 0
    exit_code: int | None = None
    signal: int | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def exited(self) -> bool:
        """The run's process ended by itself: its exit code is its verdict."""
        return self.state == "EXITED"


def task_state_path(run_dir: str | Path) -> Path:
    """Where a run's task-state file lives."""
    return meta_dir(run_dir) / TASK_STATE_FILE


def read_task_state(run_dir: str | Path) -> TaskState | None:
    """The task-state file of a run directory, or None (missing or unreadable)."""
    try:
        data = read_json(task_state_path(run_dir))
    except (OSError, ValueError):
        return None
    known = {f.name for f in dataclasses.fields(TaskState)}
    try:
        return TaskState(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def write_task_state(run_dir: str | Path, state: TaskState) -> None:
    """Write the task-state file atomically."""
    atomic_write_json(task_state_path(run_dir), dataclasses.asdict(state))


class ArrayTask:
    """Runs the runs of one array task id, forwarding signals to them."""

    def __init__(self, map_path: str, env: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.map: dict[str, Any] = read_json(map_path)
        self.task_id = int(env["SGE_TASK_ID"])
        self.job_id = f"{env['JOB_ID']}.{self.task_id}"
        restarted = env.get("RESTARTED", "0")
        self.restart = int(restarted) if restarted.isdigit() else 0
        self.node = env.get("HOSTNAME") or socket.gethostname()
        self.entries: list[dict[str, Any]] = list(self.map["tasks"][self.task_id - 1])
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        """Run every run of this task; the exit code is the first failing run's."""
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        specs = [RunSpec.from_dict(read_json(spec_path(e["run_dir"]))) for e in self.entries]
        status = 0
        for spec in specs:
            if self.stop_signal is not None:
                break
            done = read_task_state(spec.run_dir)
            if done is not None and done.job_id == self.job_id and done.exited:
                continue  # finished before this task was rescheduled
            code = self._run_one(spec)
            if code is not None and code != 0 and status == 0:
                status = code
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return status

    def _run_one(self, spec: RunSpec) -> int | None:
        """Run one spec to its end; its exit code, or None when it was stopped by a signal."""
        base = TaskState(self.job_id, "RUNNING", self.node, self.restart, started=time.time())
        write_task_state(spec.run_dir, base)
        meta = meta_dir(spec.run_dir)
        with open(meta / STDOUT_FILE, "ab") as out, open(meta / STDERR_FILE, "ab") as err:
            if self.restart:
                err.write(f"hpcorch: restart {self.restart} of job {self.job_id}\n".encode())
                err.flush()
            try:
                self.child = subprocess.Popen(
                    list(spec.command), cwd=spec.workdir or spec.run_dir,
                    env=job_environment(spec, provider="sge", job_id=self.job_id),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except OSError as exc:
                err.write(f"hpcorch: cannot start {spec.command[:1]}: {exc}\n".encode())
                write_task_state(spec.run_dir, dataclasses.replace(
                    base, state="EXITED", exit_code=127, ended=time.time()))
                return 127
        if self.stop_signal is not None:  # a signal arrived while it was starting
            self.child.send_signal(self.stop_signal)
        rc = self._wait(self.child)
        self.child = None
        ended = time.time()
        if self.stop_signal is not None:
            write_task_state(spec.run_dir, dataclasses.replace(
                base, state="STOPPED", signal=self.stop_signal, ended=ended))
            return None
        write_task_state(spec.run_dir, dataclasses.replace(
            base, state="EXITED", exit_code=rc if rc >= 0 else None,
            signal=-rc if rc < 0 else None, ended=ended))
        return rc if rc >= 0 else 128 - rc

    @staticmethod
    def _wait(child: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m hpcorch.providers.sge.task MAP_FILE`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m hpcorch.providers.sge.task MAP_FILE", file=sys.stderr)
        return 2
    return ArrayTask(args[0]).run()


if __name__ == "__main__":
    sys.exit(main())
