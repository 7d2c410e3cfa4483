"""Preemption and time limits on the real Slurm: requeue, resume from checkpoint, TIMEOUT.

The app keeps its progress with hpcorch.checkpoint and logs every start, so
the tests see which attempt ran and where it resumed from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.providers.slurm.task import read_task_state
from tests.integration.slurm_support import records, require_slurm, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

CKPT_APP = '''
import os, time
import hydra
from hpcorch import checkpoint

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    state = checkpoint.load(default={"step": 0, "starts": 0})
    resumed_from = state["step"]
    state["starts"] += 1
    checkpoint.on_signal(lambda: checkpoint.save(state))   # SIGUSR1 before the limit, SIGTERM
    with open(os.path.join(checkpoint.run_dir(), "attempts.log"), "a") as log:
        log.write(f"restart={checkpoint.restarts()} from={resumed_from}\\n")
    while state["step"] < cfg.steps:
        time.sleep(cfg.step_s)
        state["step"] += 1
        with open(os.path.join(checkpoint.run_dir(), "progress"), "w") as out:
            out.write(str(state["step"]))
    return {"steps": state["step"], "restarts": checkpoint.restarts(),
            "resumed_from": resumed_from, "starts": state["starts"]}

if __name__ == "__main__":
    main()
'''

#: Never checkpoints: at its time limit it must end TIMEOUT, not start from zero again.
PLAIN_APP = """
import os, time
import hydra
from hpcorch import checkpoint

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    out = HydraConfig.get().runtime.output_dir
    with open(os.path.join(out, "attempts.log"), "a") as log:
        # The job contract's restart count (HPCORCH_RESTART_COUNT), checked against Slurm's.
        ours, slurms = checkpoint.restarts(), os.environ.get('SLURM_RESTART_COUNT', '0')
        log.write(f"restart={ours}\\n" if str(ours) == slurms else f"mismatch {ours} {slurms}\\n")
    while True:
        time.sleep(cfg.step_s)

if __name__ == "__main__":
    main()
"""

CONFIG = "defaults:\n  - hpcorch: default\n  - _self_\nsteps: 10\nstep_s: 0.5\n"


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


@pytest.fixture
def ckpt_app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "ckpt.py").write_text(CKPT_APP)
    (app / "plain.py").write_text(PLAIN_APP)
    (app / "conf" / "config.yaml").write_text(CONFIG)
    return app


def start_sweep(app: Path, *overrides: str, script: str = "ckpt.py") -> subprocess.Popen[str]:
    env = {**os.environ, "HPCORCH_HOME": str(app / "home"), "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(
        [sys.executable, script, "-m", "provider=slurm", "hydra.sweep.dir=out",
         "hpcorch.progress=off", "provider.query_interval=1.0", "provider.max_query_interval=5",
         *overrides], cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"sweep did not finish in {timeout}s:\n{out[-3000:]}")
    return proc.returncode, out


def attempts(run_dir: Path) -> list[str]:
    path = run_dir / "attempts.log"
    return path.read_text().split() if path.exists() else []


def test_scontrol_requeue_resumes_from_the_checkpoint(ckpt_app: Path) -> None:
    proc = start_sweep(ckpt_app, "provider.max_requeues=1", "steps=24", "step_s=0.5")
    run_dir = ckpt_app / "out" / "0"
    try:
        wait_for(lambda: (run_dir / "progress").exists()
                 and int((run_dir / "progress").read_text() or 0) >= 3, "3 steps", 120)
        state = read_task_state(run_dir)
        assert state is not None and state.state == "RUNNING"
        subprocess.run(["scontrol", "requeue", state.job_id], check=True, timeout=30)
        code, out = finish(proc, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, out[-3000:]
    [rec] = records(ckpt_app / "out")
    assert rec["state"] == "SUCCEEDED", rec
    metrics = rec["metrics"]
    assert metrics["restarts"] == 1 and metrics["starts"] == 2 and metrics["steps"] == 24
    assert metrics["resumed_from"] >= 3  # the checkpoint saved on SIGTERM was found
    assert attempts(run_dir)[0] == "restart=0" and attempts(run_dir)[2] == "restart=1"
    assert "1 succeeded" in out


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_then_times_out(ckpt_app: Path) -> None:
    """time_min=2 and a run that never ends: SIGUSR2 before the limit (the run gets
    SIGUSR1) -> checkpoint -> requeue by submitit's handler (max_requeues=1) -> resumed second attempt -> no requeue left -> TIMEOUT.

    Not time_min=1: Slurm may send the signal up to 60 s early (sbatch(1), --signal),
    so with a one-minute limit it came one second after the start, before the app ran.
    With 2 minutes and a 30 s grace it comes 30-90 s after the start."""
    # hpcorch.retry.time=0: the TIMEOUT itself is what this test is about (the time
    # retry that would follow is tests/integration/test_slurm_retry.py's).
    proc = start_sweep(ckpt_app, "resources.time_min=2", "provider.signal_grace_s=30",
                       "provider.max_requeues=1", "steps=100000", "step_s=1",
                       "hpcorch.retry.time=0")
    code, out = finish(proc, 480)
    assert code != 0
    run_dir = ckpt_app / "out" / "0"
    [rec] = records(ckpt_app / "out")
    assert rec["state"] == "TIMEOUT", json.dumps(rec, indent=1)[-2000:]
    # One run: submitit submits it as a plain job, so its id has no array index.
    assert "time limit" in rec["failure"]["reason"] and rec["failure"]["job_id"].isdigit()
    log = attempts(run_dir)
    assert log[0::2] == ["restart=0", "restart=1"], log
    assert int(log[3].split("=")[1]) > 0  # the second attempt resumed from the checkpoint
    assert "TIMEOUT" in out


@pytest.mark.slow
def test_time_limit_of_a_run_without_checkpoint_is_timeout_not_requeue(ckpt_app: Path) -> None:
    """As submitit: a run that never checkpoints is not requeued at its time limit (it
    would start from zero again), whatever max_requeues allows. Same limits as above."""
    proc = start_sweep(ckpt_app, "resources.time_min=2", "provider.signal_grace_s=30",
                       "provider.max_requeues=3", "step_s=1", "hpcorch.retry.time=0",
                       script="plain.py")
    code, out = finish(proc, 480)
    assert code != 0
    [rec] = records(ckpt_app / "out")
    assert rec["state"] == "TIMEOUT", json.dumps(rec, indent=1)[-2000:]
    assert attempts(ckpt_app / "out" / "0") == ["restart=0"]
    # Every attempt sacct knows of (-D: requeued ones too): one, and it is no REQUEUED.
    job_id = rec["failure"]["job_id"]
    states = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job_id],
                            capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert states == ["TIMEOUT"], states
    task_log = "".join(p.read_text() for p in (ckpt_app / "out").rglob(f"logs/{job_id}.log"))
    assert "saved no checkpoint" in task_log, task_log[-2000:]
