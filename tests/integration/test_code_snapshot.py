"""Jobs started as fresh processes run from a snapshot of the git-tracked code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import hpcorch_cli, records, run, write_probe_app

pytestmark = pytest.mark.integration


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _committed_app(tmp_path: Path) -> Path:
    """The probe app in a fresh git repository, committed."""
    app = write_probe_app(tmp_path / "repo")
    _git(app, "init", "-q")
    _git(app, "config", "user.email", "t@example.org")
    _git(app, "config", "user.name", "t")
    _git(app, "add", "app.py", "conf")
    _git(app, "commit", "-qm", "probe")
    return app


def test_editing_the_app_after_submission_changes_nothing(tmp_path: Path) -> None:
    app = _committed_app(tmp_path)
    commit = _git(app, "rev-parse", "HEAD")
    proc = run(app, "-m", "x=1,2", "sleep=2", "hpcorch.detach=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    sid = next(line.split()[1] for line in proc.stderr.splitlines() if "submitted" in line)
    # edit the research code while the sweep is queued or running
    (app / "app.py").write_text((app / "app.py").read_text().replace(
        '"x": float(cfg.x)', '"x": -1000.0'))
    waited = hpcorch_cli(app, "wait", sid, "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    recs = records(app / "out")
    assert [r["return_value"]["x"] for r in recs] == [1.0, 2.0]  # the submitted code ran
    assert all(r["code_version"] == f"git:{commit[:12]}" for r in recs)
    meta = json.loads((app / "out/.hpcorch/code/.hpcorch-snapshot.json").read_text())
    assert meta["commit"] == commit and meta["dirty"] is False
    spec = json.loads((app / "out/0/.hpcorch/spec.json").read_text())
    assert spec["command"][1] == str(app / "out/.hpcorch/code/app.py")


def test_uncommitted_edits_are_part_of_the_snapshot_and_the_key(tmp_path: Path) -> None:
    app = _committed_app(tmp_path)
    (app / "app.py").write_text((app / "app.py").read_text().replace(
        '"x": float(cfg.x)', '"x": 10 * float(cfg.x)'))
    proc = run(app, "-m", "x=3", "provider.warm=false", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    [rec] = records(app / "out")
    assert rec["return_value"]["x"] == 30.0
    assert "+dirty:" in rec["code_version"]
    meta = json.loads((app / "out/.hpcorch/code/.hpcorch-snapshot.json").read_text())
    assert meta["dirty"] is True and rec["code_version"] == meta["label"]


def test_cold_local_runs_of_several_ranks_run_from_the_snapshot(tmp_path: Path) -> None:
    """A warm local sweep whose runs start afresh anyway (2 ranks) runs the snapshot."""
    from tests.conftest import require_service
    from tests.integration.mpi_support import mpi_available

    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py", "scripts/mpi-up.sh")
    app = _committed_app(tmp_path)
    proc = run(app, "-m", "x=1", "resources.tasks=2", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    spec = json.loads((app / "out/0/.hpcorch/spec.json").read_text())
    assert str(app / "out/.hpcorch/code/app.py") in spec["command"]
    assert "no code snapshot" not in proc.stderr
    [rec] = records(app / "out")
    assert rec["state"] == "SUCCEEDED"


def test_without_a_snapshot_one_line_says_jobs_run_the_live_tree(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "untracked")  # no git repository at all
    proc = run(app, "-m", "x=1,2", "provider.warm=false", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if "no code snapshot" in line]
    assert len(notices) == 1 and "jobs run the live tree" in notices[0]
    spec = json.loads((app / "out/0/.hpcorch/spec.json").read_text())
    assert str(app / "app.py") in spec["command"]
    # A warm local sweep forks this process and needs no snapshot: nothing to say.
    warm = run(app, "-m", "x=3", "hydra.sweep.dir=warm")
    assert warm.returncode == 0 and "no code snapshot" not in warm.stderr
