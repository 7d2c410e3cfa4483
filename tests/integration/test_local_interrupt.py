"""SIGINT/SIGTERM during a sweep: runs stop, no orphans, CANCELLED records, re-run finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import records, run, write_probe_app

pytestmark = pytest.mark.integration


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker in cmdline and "\nState:\tZ" not in status:
            found.append(int(entry.name))
    return found


def _wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_cancels_runs_and_rerun_finishes(tmp_path: Path, sig: signal.Signals) -> None:
    app = write_probe_app(tmp_path / "app")
    marker = f"probe-grandchild {app}"
    args = ["-m", "x=1,2,3,4", "sleep=30", "provider.workers=2", "hydra.sweep.dir=out"]
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=app, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: len(list((app / "out").glob("*/started"))) == 2)
        assert len(_processes_with(marker)) == 2
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "sweep interrupted" in err
    _wait_for(lambda: not _processes_with(marker), timeout=10)  # no orphans left
    recs = records(app / "out")
    assert [r["state"] for r in recs] == ["CANCELLED"] * 4
    assert all(sig.name in r["failure"]["reason"] for r in recs)

    # the same command again finishes the sweep (told by the environment not to sleep,
    # which changes neither config nor run keys)
    again = run(app, *args[:-1], "hydra.sweep.dir=out2", env={"PROBE_NO_SLEEP": "1"})
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in records(app / "out2")] == ["SUCCEEDED"] * 4


def test_finished_runs_survive_an_interrupt(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    args = ["-m", "sleep=0,30", "provider.workers=2", "hydra.sweep.dir=out"]
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=app, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (app / "out/1/started").exists()
              and (app / "out/0/.hpcorch/record.json").exists())
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert [r["state"] for r in records(app / "out")] == ["SUCCEEDED", "CANCELLED"]
    # the very same command finishes the rest and does not redo what succeeded
    again = run(app, *args[:-1], "hydra.sweep.dir=again", env={"PROBE_NO_SLEEP": "1"})
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in records(app / "again")] == ["SKIPPED", "SUCCEEDED"]
