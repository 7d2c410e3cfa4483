"""The login-node scripts against the real Slurm: scripts/sweep.sbatch and scripts/cron-sweep.sh."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.slurm_support import ROOT, records, require_slurm

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

SWEEP = ROOT / "scripts" / "sweep.sbatch"
CRON = ROOT / "scripts" / "cron-sweep.sh"


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


def test_sweep_sbatch_runs_the_orchestrator_as_a_job(app_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HPCORCH_PYTHON": sys.executable, "HPCORCH_HOME": str(tmp_path / "h")}
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--output={tmp_path}/orch-%j.out", "--time=10",
         str(SWEEP), "train.py", "provider=slurm", "provider.query_interval=1.0",
         "lr=0.1,0.01", "epochs=2", f"hydra.sweep.dir={tmp_path}/out"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=300, check=False)
    job = done.stdout.strip().split(";")[0]
    out = (tmp_path / f"orch-{job}.out").read_text()
    assert done.returncode == 0, out[-3000:] + done.stderr
    recs = records(tmp_path / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(r["job_id"].split("_")[0] != job for r in recs)  # runs are jobs of their own
    assert f"orchestrator: job {job}" in out and "2 succeeded" in out
    assert "finished with exit status 0" in out


def test_sweep_sbatch_usage(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SWEEP)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Usage:" in done.stderr


def cron(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CRON), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_cron_sweep_lock_logs_and_exit_codes(app_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HPCORCH_HOME": str(tmp_path / "h"), "HPCORCH_CRON_DIR": str(tmp_path)}
    train = str(app_dir / "train.py")
    sweep = [train, "provider=slurm", "provider.query_interval=1.0", "epochs=1", "lr=0.1,0.01",
             f"hydra.sweep.dir={tmp_path}/out"]

    ok = cron("-p", sys.executable, "-n", "nightly", *sweep, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "" and ok.stderr == ""  # quiet for cron
    [log] = tmp_path.glob("nightly-*.log")
    text = log.read_text()
    assert "2 succeeded" in text and "exit status 0" in text
    assert [r["state"] for r in records(tmp_path / "out")] == ["SUCCEEDED", "SUCCEEDED"]

    with open(tmp_path / "nightly.lock", "a") as held:  # another instance is still running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = cron("-p", sys.executable, "-n", "nightly", *sweep, cwd=tmp_path, env=env)
    assert busy.returncode == 3 and "still running" in busy.stderr
    assert len(list(tmp_path.glob("nightly-*.log"))) == 1  # nothing was done

    bad = cron("-p", sys.executable, "-n", "broken", "-k", "1", train, "provider=slurm",
               "no_such_key=1", cwd=tmp_path, env=env)
    assert bad.returncode == 1
    assert "FAILED" in bad.stderr and "no_such_key" in bad.stderr  # the log tail, for the mail

    assert cron("-p", sys.executable, str(tmp_path / "missing.py"), cwd=tmp_path,
                env=env).returncode == 2
    assert cron("-k", "x", train, cwd=tmp_path, env=env).returncode == 2
