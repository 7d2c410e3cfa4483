"""Inside the Ray cluster: run one RunSpec and leave its outcome in the run directory.

Used by the sweep driver's named tasks and by a one-run job alike, so every
mode leaves the same files: `<run_dir>/.hpcorch/stdout.log`, `stderr.log` and
`ray.json` (this module's outcome file, read by `RayProvider.status`). It
imports neither Ray nor Hydra at module level: a task pays only for what it uses.

Two ways to start the run, as for the local provider:
- cold: the portable command (`python train.py ... hydra.run.dir=...`) as a
  child process, with the job environment (HPCORCH_SPEC, PYTHONHASHSEED, ...);
- warm: fork the (already warmed-up) Ray worker and execute the same script
  with the same argv in the child, in-process. It saves an interpreter and
  import start-up per run; the child never touches Ray and dies with its
  parent (PR_SET_PDEATHSIG). Never for a run inside a container (cold only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpcorch.jobenv import job_environment as contract_environment
from hpcorch.spec import RunSpec
from hpcorch.store.records import (
    STDERR_FILE,
    STDOUT_FILE,
    atomic_write_json,
    meta_dir,
    read_json,
    tail_text,
)
from hpcorch.worker.forked import die_with_parent
from hpcorch.worker.warm import fork_run, warm_script, warm_up

#: The outcome file this provider keeps next to the run record.
OUTCOME_FILE = "ray.json"
#: A file whose presence asks the sweep driver to cancel this run.
CANCEL_FILE = "ray-cancel"
#: Seconds a cancelled run gets between SIGTERM and SIGKILL.
KILL_WAIT_S = 5.0
#: Lines of the run's output echoed into the Ray task's own log (the dashboard shows them).
ECHO_LINES = 200



def outcome_path(run_dir: str | Path) -> Path:
    """`<run_dir>/.hpcorch/ray.json`."""
    return meta_dir(run_dir) / OUTCOME_FILE


def cancel_path(run_dir: str | Path) -> Path:
    """`<run_dir>/.hpcorch/ray-cancel`."""
    return meta_dir(run_dir) / CANCEL_FILE


def write_outcome(spec: RunSpec, submission_id: str, state: str, **fields: Any) -> None:
    """Record where this run is, for this submission (a later submission overwrites it)."""
    data = {"submission_id": submission_id, "run_key": spec.run_key, "num": spec.num,
            "state": state, "time": time.time(), **fields}
    # No fsync: the run record is the durable truth; this file only tracks the way there.
    atomic_write_json(outcome_path(spec.run_dir), data, durable=False)


def read_outcome(run_dir: str | Path) -> dict[str, Any] | None:
    """The outcome file of a run directory, or None (also for a torn or foreign file)."""
    path = outcome_path(run_dir)
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_spec(path: str | Path) -> RunSpec:
    """A RunSpec written by the orchestrator (`<run_dir>/.hpcorch/spec.json`)."""
    return RunSpec.from_dict(read_json(path))


def job_environment(spec: RunSpec, job_id: str = "") -> dict[str, str]:
    """The run's environment (hpcorch.jobenv's job contract), with its Ray job id."""
    return contract_environment(spec, provider="ray", job_id=job_id)


def node_name() -> str:
    """This node's host name (what a person types to go and look)."""
    return socket.gethostname()


@contextlib.contextmanager
def _log_files(spec: RunSpec) -> Iterator[tuple[Any, Any]]:
    meta = meta_dir(spec.run_dir)
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / STDOUT_FILE, "ab") as out, open(meta / STDERR_FILE, "ab") as err:
        yield out, err


class RunProcess:
    """One started run: a forked warm child or a cold subprocess, in its own session."""

    def __init__(self, spec: RunSpec, warm: bool, job_id: str = "") -> None:
        self.spec = spec
        self._code: int | None = None
        self.max_rss_kb: int | None = None
        """The run's peak resident memory in KiB, once it ended (the rusage of wait4)."""
        # A run inside a container is the wrapped command (podman run ... python SCRIPT):
        # only a fresh process can start it, never a fork of this host-side worker.
        script = warm_script([spec]) if warm else None
        sys.stdout.flush()
        sys.stderr.flush()
        with _log_files(spec) as (out, err):
            if script is not None:
                warm_up(script, spec)
                self.pid = fork_run(spec, script, job_environment(spec, job_id), out.fileno(),
                                    err.fileno())
                self._popen: subprocess.Popen[bytes] | None = None
            else:
                self._popen = subprocess.Popen(
                    list(spec.command), cwd=spec.workdir or spec.run_dir,
                    env=job_environment(spec, job_id), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err,
                    start_new_session=True, preexec_fn=die_with_parent)  # noqa: PLW1509
                self.pid = self._popen.pid

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self._code is not None:
            return self._code
        # wait4, not waitpid: its rusage is the run's peak memory (max RSS, KiB).
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._code = os.waitstatus_to_exitcode(status)
        self.max_rss_kb = usage.ru_maxrss or None
        if self._popen is not None:
            self._popen.returncode = self._code  # reaped here: Popen must not wait again
        return self._code

    def wait(self, interval: float = 0.002) -> int:
        """Block until the run ends; returns its exit code.

        Polls (a blocking waitpid would hide Ray's cancellation, a KeyboardInterrupt
        raised between bytecodes) with a short ceiling: most runs of a sweep last
        well under a second, and every oversleep here is lost wall time per run.
        """
        while True:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(interval)
            interval = min(interval * 1.5, 0.02)

    def terminate(self) -> int:
        """SIGTERM the run's whole session, SIGKILL after KILL_WAIT_S; returns the exit code."""
        self._killpg(signal.SIGTERM)
        deadline = time.monotonic() + KILL_WAIT_S
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                self._killpg(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)
        return code

    def _killpg(self, sig: int) -> None:
        for kill in (os.killpg, os.kill):  # before setsid() the group is not there yet
            try:
                kill(self.pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                continue


def run_spec(spec: RunSpec, submission_id: str, *, warm: bool, echo: bool = True,
             job_id: str = "") -> dict[str, Any]:
    """Run one spec to the end, keeping its outcome file current; returns the final outcome.

    A KeyboardInterrupt (Ray's way of cancelling a task) stops the run's whole
    process tree and records it CANCELLED.
    """
    node = node_name()
    started = time.time()
    if threading.current_thread() is threading.main_thread():
        # A Ray started from a non-interactive shell's background job inherits SIGINT
        # ignored; Ray's cancellation would then never reach this task as KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    write_outcome(spec, submission_id, "RUNNING", node=node, started=started, job_id=job_id,
                  pid=os.getpid())
    proc = RunProcess(spec, warm, job_id)
    cancelled = False
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        cancelled = True
        code = proc.terminate()
    state = "CANCELLED" if cancelled else ("SUCCEEDED" if code == 0 else "FAILED")
    outcome = {"node": node, "started": started, "ended": time.time(), "job_id": job_id,
               "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
               "reason": "cancelled" if cancelled else "", "max_rss_kb": proc.max_rss_kb}
    write_outcome(spec, submission_id, state, **outcome)
    if echo:
        _echo(spec, state, code)
    return {"state": state, **outcome}


def remote_run(spec_file: str, submission_id: str, warm: bool, job_id: str) -> dict[str, Any]:
    """The body of a run's Ray task (module-level, so Ray ships it by reference)."""
    return run_spec(load_spec(spec_file), submission_id, warm=warm, job_id=job_id)


def _echo(spec: RunSpec, state: str, code: int) -> None:
    """Copy the run's output into this task's own log, so the dashboard shows it per run."""
    meta = meta_dir(spec.run_dir)
    head = f"[hpcorch] run #{spec.num} key={spec.run_key} {state} exit={code} dir={spec.run_dir}"
    print(head, flush=True)
    out = tail_text(meta / STDOUT_FILE, ECHO_LINES)
    if out:
        print(out, flush=True)
    err = tail_text(meta / STDERR_FILE, ECHO_LINES)
    if err:
        print(err, file=sys.stderr, flush=True)


def outcome_summary(outcome: dict[str, Any]) -> str:
    """One line for the driver's log."""
    return json.dumps({k: outcome.get(k) for k in ("state", "exit_code", "signal", "node")})
