"""Time limits on the real Grid Engine: told before h_rt, checkpoint, rescheduled, resumed.

The app (the Slurm requeue tests' own) keeps its progress with hpcorch.checkpoint
and logs every start. Needs scripts/sge-up.sh, and the tests inside its network
namespace (`scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_sge_requeue.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.providers.sge.task import read_task_state
from tests.integration.slurm_support import records
from tests.integration.test_sge_contract import require_sge
from tests.integration.test_slurm_requeue import CKPT_APP, CONFIG, attempts, finish

pytestmark = [pytest.mark.integration, pytest.mark.sge]


@pytest.fixture(autouse=True)
def _needs_sge() -> None:
    require_sge()


def test_time_limit_checkpoints_is_rescheduled_and_resumes(tmp_path: Path) -> None:
    """h_rt 60 s (time_min=1), told 30 s before: the run saves at about 28 of its 35
    steps, the task exits 99, Grid Engine starts it again (RESTARTED=1), and the run
    resumes from its checkpoint and succeeds within its second limit."""
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "ckpt.py").write_text(CKPT_APP)
    (app / "conf" / "config.yaml").write_text(CONFIG)
    env = {**os.environ, "HPCORCH_HOME": str(app / "home"), "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "ckpt.py", "-m", "provider=sge", "hydra.sweep.dir=out",
         "hpcorch.progress=off", "provider.query_interval=1.0",
         "provider.max_query_interval=5", "resources.time_min=1",
         "provider.signal_grace_s=30", "provider.max_requeues=1", "steps=35", "step_s=1"],
        cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    code, out = finish(proc, 400)
    assert code == 0, out[-3000:]
    [rec] = records(app / "out")
    assert rec["state"] == "SUCCEEDED", rec
    metrics = rec["metrics"]
    assert metrics["restarts"] == 1 and metrics["starts"] == 2 and metrics["steps"] == 35
    assert metrics["resumed_from"] >= 5  # the checkpoint saved when told was found
    log = attempts(app / "out" / "0")
    assert log[0::2] == ["restart=0", "restart=1"], log
    state = read_task_state(app / "out" / "0")
    assert state is not None and state.timeouts == 1 and state.restart == 1
