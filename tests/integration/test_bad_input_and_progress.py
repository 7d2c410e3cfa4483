"""Bad input stops everything before it starts; progress shows only on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import run, write_probe_app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("override, expected", [
    ("provider=nope", "Could not find 'provider/nope'"),
    ("provider.workers=-1", "provider.workers=-1: must be a positive integer, or null"),
    ("provider.workers=two", "provider.workers='two': must be an integer or null"),
    ("+hpcorch.wokers=3", "hpcorch.wokers=3: unknown setting"),
    ("+provider.wokers=3", "did you mean 'workers'?"),
    ("hpcorch.progress=loud", "hpcorch.progress='loud': must be one of 'auto', 'on', 'off'"),
    ("resources.cpus=-2", "resources.cpus"),
])
def test_bad_input_is_one_clear_error_and_starts_nothing(tmp_path: Path, override: str,
                                                        expected: str) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=1,2", override, "hydra.sweep.dir=out")
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((app / "out").glob("*/.hydra")), "a run started despite bad input"


def test_unknown_provider_lists_the_available_ones(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=1", "provider=nope")
    assert "Available options" in proc.stderr and "local" in proc.stderr


def test_progress_is_quiet_without_a_terminal(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=1,2,3")
    assert proc.returncode == 0, proc.stderr
    assert "running" not in proc.stderr and "ETA" not in proc.stderr


def test_progress_shows_on_a_terminal(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "app.py", "-m", "x=1,2,3", "sleep=1"], cwd=app,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary,
                            env={**os.environ, "COLUMNS": "150", "TERM": "xterm"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process exited
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "3/3 done" in screen and "failed" in screen and "ETA" in screen
