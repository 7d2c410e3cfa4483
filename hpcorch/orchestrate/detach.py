"""Detached sweeps: submit, tell the user how to follow, and return.

Engine-backed providers (Slurm, Ray) keep their runs without us. For the
others (local) a detached sweep is owned by a background `hpcorch resume`
process started in its own session, so logging out does not stop it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpcorch.store.ledger import SweepInfo
from hpcorch.store.records import META_DIR

PID_FILE = "orchestrator.pid"
LOG_FILE = "orchestrator.log"


def orchestrator_pid_path(sweep_dir: str) -> Path:
    """`<sweep_dir>/.hpcorch/orchestrator.pid`: the process that owns a detached local sweep."""
    return Path(sweep_dir) / META_DIR / PID_FILE


def orchestrator_alive(sweep_dir: str) -> int | None:
    """The pid of the sweep's background orchestrator if it is still running."""
    return process_alive(orchestrator_pid_path(sweep_dir))


def process_alive(pid_file: Path) -> int | None:
    """The pid written in `pid_file` if that process is still running (not a zombie)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            if "\nState:\tZ" in handle.read():
                return None
        os.kill(pid, 0)
    except (OSError, ProcessLookupError):
        return None
    return pid


def start_background_resume(info: SweepInfo, home: Path) -> int:
    """Start `hpcorch resume SWEEP_DIR` in a new session; returns its pid."""
    return start_background(info.sweep_dir, info.cwd, ["--home", str(home), "resume",
                                                       info.sweep_dir, "--progress", "off"])


def start_background(directory: str, cwd: str, hpcorch_args: list[str]) -> int:
    """Start `hpcorch <hpcorch_args>` in a new session (so logging out does not stop it),
    owning `directory` (its pid file there, its output in its log); returns its pid."""
    log = Path(directory) / META_DIR / LOG_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpcorch", *hpcorch_args],
            cwd=cwd or None, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True)
    orchestrator_pid_path(directory).write_text(f"{proc.pid}\n")
    return proc.pid


def announce_detached(info: SweepInfo, n_runs: int, n_done: int) -> None:
    """Print the sweep id and the commands that follow it (on stderr, like every notice)."""
    sid = info.sweep_id
    done = f" ({n_done} already done)" if n_done else ""
    print(f"sweep {sid} submitted: {n_runs} run(s) on {info.provider}{done}, detached.\n"
          f"  hpcorch status {sid}    # its runs, now\n"
          f"  hpcorch wait {sid}      # block until they finish\n"
          f"  hpcorch resume {sid}    # resubmit what did not succeed\n"
          f"  hpcorch cancel {sid}    # stop it\n"
          f"sweep directory: {info.sweep_dir}", file=sys.stderr, flush=True)
