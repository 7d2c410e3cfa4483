"""A run over its memory limit on the real local Slurm: FAILED, and its reason says so.

scripts/slurm-up.sh has Slurm enforce `--mem` (task/cgroup where the cgroup v1
memory controller is writable, else jobacct_gather's OverMemoryKill), so a run
that touches 600 MB under a 0.25 GB request is killed as on a real cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.providers.slurm import SlurmProvider, SlurmSettings
from hpcorch.spec import Resources, RunState
from hpcorch.testing import contract_spec, wait_terminal
from tests.integration.slurm_support import records, require_slurm, run_app, submitted_scripts

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FAST = SlurmSettings(query_interval=1.0, max_query_interval=2.0, max_requeues=0)
LIMIT = Resources(mem_gb=0.25, time_min=5)
REASON = "killed by Slurm for exceeding its memory limit of 0.25 GB"


def touch(mb: int, hold_s: float) -> str:
    """Python that makes `mb` MB resident (every page written), then holds it `hold_s`:
    long enough for a polling enforcer to see it, short enough if nothing enforces."""
    return (f"import time\nblock = bytearray({mb} * 2**20)\n"
            "for i in range(0, len(block), 4096):\n    block[i] = 1\n"
            f"print('holding {mb} MB', flush=True)\ntime.sleep({hold_s})\n")


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


def test_run_over_its_memory_limit_fails_saying_so(tmp_path: Path) -> None:
    """600 MB under 0.25 GB is killed; 40 MB under the same limit is not."""
    provider = SlurmProvider(FAST)
    specs = [dataclasses.replace(contract_spec(tmp_path, num), resources=LIMIT,
                                 command=(sys.executable, "-c", touch(mb, hold_s)))
             for num, mb, hold_s in ((0, 600, 15), (1, 40, 3))]
    handles = provider.submit(specs)
    [script_path] = submitted_scripts(tmp_path / "sweep")
    script = script_path.read_text()
    assert "#SBATCH --mem=256MB" in script
    statuses = wait_terminal(provider, handles, 90)
    assert [s.state for s in statuses] == [RunState.FAILED, RunState.SUCCEEDED], statuses
    context = statuses[0].context
    assert context is not None and context.reason.startswith(REASON), context
    assert context.job_id == handles[0].job_id and context.node
    assert REASON in context.one_line()


HOG_APP = '''
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    if cfg.mb:
        block = bytearray(cfg.mb * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        __import__("time").sleep(15)
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


def test_sweep_record_summary_and_show_name_the_memory_kill(app_dir: Path) -> None:
    (app_dir / "hog.py").write_text(HOG_APP)
    (app_dir / "conf" / "config.yaml").write_text(
        (app_dir / "conf" / "config.yaml").read_text() + "mb: 0\n")
    # No memory retry here: the kill itself is under test (test_slurm_retry.py retries).
    done = run_app(app_dir, "provider=slurm", "mb=0,600", "resources.mem_gb=0.25",
                   "hpcorch.retry.memory=0",
                   "hydra.sweep.dir=out", "provider.query_interval=1.0",
                   # OverMemoryKill kills the task wrapper too: no file says so, Slurm must
                   "provider.max_query_interval=5.0", "hpcorch.progress=off",
                   script="hog.py", timeout=120)
    assert done.returncode != 0, done.stdout[-3000:]
    ok, hog = records(app_dir / "out")
    assert ok["state"] == "SUCCEEDED" and hog["state"] == "FAILED", hog
    assert hog["failure"]["reason"].startswith(REASON), hog["failure"]
    assert hog["failure"]["job_id"] == hog["job_id"]
    assert REASON in " ".join(done.stderr.split()), done.stderr  # the summary table
    show = subprocess.run([sys.executable, "-m", "hpcorch", "show", hog["run_key"]],
                          cwd=app_dir, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "HPCORCH_HOME": str(app_dir / ".hpcorch-home")})
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["failure"]["reason"].startswith(REASON)
