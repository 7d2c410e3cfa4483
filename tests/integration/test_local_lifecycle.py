"""Detached sweeps on the local provider, and wait / resume / cancel from new processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import hpcorch_cli, records, run, write_probe_app

pytestmark = pytest.mark.integration


def _sweep_id(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("sweep ") and "submitted" in line:
            return line.split()[1]
    raise AssertionError(f"no sweep id in: {stdout}")


def test_detach_then_wait(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=1,2,3", "sleep=1", "hpcorch.detach=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    sid = _sweep_id(proc.stderr)
    assert f"hpcorch wait {sid}" in proc.stderr
    waited = hpcorch_cli(app, "wait", sid, "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stderr.count("SUCCEEDED") == 3
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED"] * 3
    status = json.loads(hpcorch_cli(app, "status", sid, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["SUCCEEDED"] * 3


def test_cancel_a_detached_sweep_then_resume_it(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=1,2", "sleep=60", "hpcorch.detach=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    sid = _sweep_id(proc.stderr)
    deadline = time.monotonic() + 60
    while len(list((app / "out").glob("*/started"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = hpcorch_cli(app, "cancel", sid)
    assert cancelled.returncode == 0, cancelled.stderr
    assert [r["state"] for r in records(app / "out")] == ["CANCELLED", "CANCELLED"]
    resumed = subprocess.run([sys.executable, "-m", "hpcorch", "resume", sid, "--progress", "off"],
                             cwd=app, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PROBE_NO_SLEEP": "1"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED", "SUCCEEDED"]
    kept = list((app / "out").glob("*/.hpcorch/record.attempt-0.json"))
    assert len(kept) == 2  # the cancelled attempts are kept, not overwritten


def test_sigkilled_orchestrator_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the sweeping process mid-sweep; `resume` finishes without redoing finished runs."""
    app = write_probe_app(tmp_path / "app")
    proc = subprocess.Popen([sys.executable, "app.py", "-m", "sleep=0,20", "provider.warm=false",
                             "provider.workers=2", "hydra.sweep.dir=out"], cwd=app,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not ((app / "out/0/.hpcorch/record.json").exists() and (app / "out/1/started").exists()):
        assert time.monotonic() < deadline, "runs did not start"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its runs, as a crash would
    proc.wait(timeout=30)
    first = (app / "out/0/.hpcorch/record.json").read_text()
    resumed = subprocess.run([sys.executable, "-m", "hpcorch", "resume", str(app / "out"),
                              "--progress", "off"], cwd=app, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PROBE_NO_SLEEP": "1"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED", "SUCCEEDED"]
    assert (app / "out/0/.hpcorch/record.json").read_text() == first  # not run again
