"""Detached Slurm sweeps followed from new processes; a SIGKILLed orchestrator loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import write_probe_app
from tests.integration.slurm_support import (
    records,
    require_slurm,
    squeue_ids,
    squeue_jobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture(autouse=True)
def _slurm() -> None:
    require_slurm()


def _cli(
    app: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcorch", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _app(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", "-m", "provider=slurm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _sweep_id(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("sweep ") and "submitted" in x)
    return line.split()[1]


def test_detach_status_wait(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = _app(app, "x=1,2", "hpcorch.detach=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    sid = _sweep_id(proc.stderr)
    assert f"hpcorch wait {sid}" in proc.stderr
    waited = _cli(app, "wait", sid, "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED", "SUCCEEDED"]
    status = json.loads(_cli(app, "status", sid, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(r["job_id"] for r in status["runs"])  # the Slurm job ids are shown


def test_cancel_a_detached_sweep(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = _app(app, "x=1,2", "sleep=120", "hpcorch.detach=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    sid = _sweep_id(proc.stderr)
    queued = wait_for(lambda: squeue_jobs(f"hpcorch-{sid}"), "the array to be queued")
    # squeue shows the Hydra job name (the app's script) first, then what finds the sweep
    assert all(name.startswith(f"app.hpcorch-{sid}-") for _, name in queued), queued
    cancelled = _cli(app, "cancel", sid)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    wait_for(lambda: not squeue_ids(f"hpcorch-{sid}"), "the jobs to leave the queue", timeout=60)
    assert [r["state"] for r in records(app / "out")] == ["CANCELLED", "CANCELLED"]


def test_sigkill_then_resume_without_duplicates(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = subprocess.Popen(
        # `++`: the key may or may not be in the shipped provider/slurm.yaml yet
        [sys.executable, "app.py", "-m", "provider=slurm", "sleep=0,8", "hydra.sweep.dir=out",
         "++provider.job_name=resume-me"],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ledger = app / "out/.hpcorch/sweep.json"
    wait_for(lambda: ledger.exists(), "the sweep ledger")
    sid = json.loads(ledger.read_text())["sweep_id"]
    jobs = wait_for(lambda: squeue_jobs(f"hpcorch-{sid}"), "the array to be queued")
    queued = [job_id for job_id, _ in jobs]
    # provider.job_name first: resume still finds the jobs by the sweep id after it
    assert all(name.startswith(f"resume-me.hpcorch-{sid}-") for _, name in jobs), jobs
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator dies; the Slurm jobs live on
    proc.wait(timeout=30)
    resumed = _cli(app, "resume", str(app / "out"), "--progress", "off")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED", "SUCCEEDED"]
    # every run ran exactly once, in the array submitted before the kill
    array_ids = {r["job_id"].split("_")[0] for r in records(app / "out")}
    assert array_ids == {queued[0].split("_")[0]}
    assert not list((app / "out").glob("*/.hpcorch/record.attempt-*.json"))
