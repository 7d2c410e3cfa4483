"""Shared pieces of the Slurm integration tests (tests/integration/test_slurm*.py).

They need the real local Slurm: `scripts/slurm-up.sh`, and the tests themselves
running inside its network namespace (`scripts/in-netns.sh python -m pytest ...`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
HOW = "run scripts/slurm-up.sh, then the tests inside scripts/in-netns.sh"


def slurm_available() -> bool:
    """The controller answers and the node can run jobs."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and any(
        s.strip().rstrip("*") in ("idle", "mix", "alloc", "comp") for s in done.stdout.split())


_AVAILABLE: list[bool] = []


def require_slurm() -> None:
    """Skip (developer machine) or fail (CI=true) when the local Slurm is not reachable."""
    if not _AVAILABLE:
        _AVAILABLE.append(slurm_available())
    require_service(_AVAILABLE[0], "Slurm (local cluster in netns 'hpcorch')", HOW)


def run_app(cwd: Path, *args: str, script: str = "train.py", timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python SCRIPT -m ARGS` in `cwd`, its own HPCORCH_HOME unless `env` names one."""
    full = {**os.environ, "HYDRA_FULL_ERROR": "1", "HPCORCH_HOME": str(cwd / ".hpcorch-home"),
            **(env or {})}
    return subprocess.run([sys.executable, script, "-m", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The run records of a sweep directory, in run order."""
    found = sorted(sweep_dir.glob("*/.hpcorch/record.json"),
                   key=lambda p: int(p.parent.parent.name))
    return [json.loads(p.read_text()) for p in found]


def wait_for(predicate: Any, what: str, timeout: float = 120.0, step: float = 0.2) -> Any:
    """Poll `predicate()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def squeue_jobs(name_prefix: str) -> list[tuple[str, str]]:
    """(job id, job name) of this user's jobs whose name, or its part after the Hydra job
    name (`train.hpcorch-<sweep id>-<token>`), starts with `name_prefix`."""
    done = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%j"], capture_output=True,
                          text=True, timeout=30, check=False)
    rows = [line.split("|", 1) for line in done.stdout.splitlines() if "|" in line]
    return [(i, n) for i, n in rows if n.startswith(name_prefix) or f".{name_prefix}" in n]


def squeue_ids(name_prefix: str) -> list[str]:
    """Job ids of this user's jobs whose name starts with `name_prefix` (see squeue_jobs)."""
    return [job_id for job_id, _ in squeue_jobs(name_prefix)]


def submitted_scripts(sweep_dir: Path) -> list[Path]:
    """The sbatch scripts submitit submitted for a sweep (one per array or single-task job:
    `<sweep>/.hpcorch/slurm/submitit/<job id>_submission.sh`), in job id order."""
    found = (sweep_dir / ".hpcorch" / "slurm" / "submitit").glob("*_submission.sh")
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[0]))
