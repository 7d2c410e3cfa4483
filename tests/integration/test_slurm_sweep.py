"""`python train.py -m provider=slurm ...` end to end on the real local Slurm."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.slurm_support import records, require_slurm, run_app, submitted_scripts

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

LRS = "lr=0.1,0.01,0.001"
FAST = ("provider.query_interval=1.0", "hpcorch.progress=off")


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


def _by_lr(recs: list[dict]) -> dict[float, tuple[str, dict]]:
    return {r["config"]["lr"]: (r["run_key"], r["metrics"]) for r in recs}


def test_same_run_keys_and_metrics_as_local_packed_or_not(app_dir: Path) -> None:
    local = run_app(app_dir, LRS, "hydra.sweep.dir=out/local", "hpcorch.progress=off",
                    env={"HPCORCH_HOME": str(app_dir / "home-local")})
    assert local.returncode == 0, local.stderr[-3000:]
    expected = _by_lr(records(app_dir / "out/local"))
    assert len(expected) == 3

    slurm = run_app(app_dir, "provider=slurm", LRS, "hydra.sweep.dir=out/slurm", *FAST,
                    env={"HPCORCH_HOME": str(app_dir / "home-slurm")})
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    assert slurm.stderr.count("SUCCEEDED") == 3, slurm.stderr
    assert "on slurm: 3 succeeded" in slurm.stderr
    recs = records(app_dir / "out/slurm")
    assert _by_lr(recs) == expected  # same keys, metrics equal to the last digit
    arrays = {r["job_id"].split("_")[0] for r in recs}
    assert len(arrays) == 1 and all("_" in r["job_id"] for r in recs)  # ONE array
    assert len(submitted_scripts(app_dir / "out/slurm")) == 1
    for rec in recs:
        assert (Path(rec["run_dir"]) / ".hpcorch/stderr.log").exists()

    packed = run_app(app_dir, "provider=slurm", "provider.pack=2", LRS,
                     "hydra.sweep.dir=out/packed", *FAST,
                     env={"HPCORCH_HOME": str(app_dir / "home-packed")})
    assert packed.returncode == 0, packed.stderr[-3000:]
    precs = records(app_dir / "out/packed")
    assert _by_lr(precs) == expected
    jobs = [r["job_id"] for r in precs]
    assert jobs[0] == jobs[1] != jobs[2]  # two runs in the first task, one in the second
    logs = {(Path(r["run_dir"]) / ".hpcorch/stdout.log").read_text() for r in precs}
    assert len(logs) == 3  # each run its own log, even when packed


def test_max_array_size_splits_the_sweep(app_dir: Path) -> None:
    """Five runs under a limit of 2 indices: three arrays, every index below the limit."""
    done = run_app(app_dir, "provider=slurm", "provider.max_array_size=2",
                   "epochs=1", "lr=0.1,0.2,0.3,0.4,0.5", "hydra.sweep.dir=out", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    recs = records(app_dir / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * 5
    scripts = submitted_scripts(app_dir / "out")
    assert len(scripts) == 3
    arrays = sorted(line for s in scripts for line in s.read_text().splitlines()
                    if line.startswith("#SBATCH --array="))
    # submitit submits the lone fifth run as a plain job (no --array, no `_0` in its id).
    assert arrays == ["#SBATCH --array=0-1%2", "#SBATCH --array=0-1%2"]
    assert len({r["job_id"].split("_")[0] for r in recs}) == 3
    assert max(int(r["job_id"].split("_")[1]) for r in recs if "_" in r["job_id"]) < 2
    assert sum("_" not in r["job_id"] for r in recs) == 1


FAILING_APP = '''
import os, sys
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print(f"run {cfg.mode} about to fail", file=sys.stderr, flush=True)
    if cfg.mode == "raise":
        raise ValueError("probe failure")
    if cfg.mode == "exit":
        os._exit(7)       # dies without a record: Slurm's word and the stderr tail tell why
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


def test_failing_runs_show_job_node_exit_code_and_stderr(app_dir: Path) -> None:
    (app_dir / "fail.py").write_text(FAILING_APP)
    (app_dir / "conf" / "config.yaml").write_text(
        (app_dir / "conf" / "config.yaml").read_text() + "mode: ok\n")
    done = run_app(app_dir, "provider=slurm", "mode=ok,raise,exit", "hydra.sweep.dir=out",
                   *FAST, script="fail.py")
    assert done.returncode != 0
    recs = records(app_dir / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED", "FAILED", "FAILED"]
    raised, exited = recs[1], recs[2]
    assert raised["error"]["type"] == "ValueError" and raised["node"]
    assert raised["job_id"].split("_")[1] == "1"
    failure = exited["failure"]
    assert failure["provider"] == "slurm" and failure["job_id"] == exited["job_id"]
    assert failure["job_id"].endswith("_2") and failure["node"]
    assert failure["exit_code"] == 7
    assert "run exit about to fail" in failure["stderr_tail"]
    # The summary table names them too.
    assert "ValueError: probe failure" in done.stderr
    assert f"job={failure['job_id']}" in done.stderr and "exit=7" in done.stderr


def test_override_values_never_reach_a_shell(app_dir: Path, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"hpcorch-injection-{uuid.uuid4().hex}"
    value = f"$(touch {marker}); echo"
    done = run_app(app_dir, "provider=slurm", f"name='{value}'", "epochs=1",
                   "hydra.sweep.dir=out", *FAST)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        [rec] = records(app_dir / "out")
        assert rec["state"] == "SUCCEEDED"
        assert rec["config"]["name"] == value  # reached the run literally
        assert not marker.exists()
    finally:
        if marker.exists():
            os.unlink(marker)


def test_site_profile_extends_slurm(app_dir: Path) -> None:
    done = run_app(app_dir, "provider=mycluster", "epochs=1", "lr=0.1,0.01",
                   "hydra.sweep.dir=out", "hpcorch.progress=off")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["state"] for r in records(app_dir / "out")] == ["SUCCEEDED"] * 2
    [script] = submitted_scripts(app_dir / "out")
    text = script.read_text()
    # From mycluster.yaml, on top of provider/slurm.yaml's defaults:
    assert "#SBATCH --partition=debug" in text and "#SBATCH --time=30" in text
    # array_throttle 64, and submitit caps it at the array size.
    assert "#SBATCH --array=0-1%2" in text and "export OMP_NUM_THREADS=1" in text
    assert "#SBATCH --signal=B:USR2@90" in text  # the shipped default still applies


def test_dry_run_prints_the_script_and_submits_nothing(app_dir: Path) -> None:
    done = run_app(app_dir, "provider=slurm", "lr=0.1,0.01", "hydra.sweep.dir=out",
                   "hpcorch.dry_run=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "#SBATCH --array=0-1" in done.stdout and "hpcorch.providers.slurm.task" in done.stdout
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    limit = next(line.split("=", 1)[1].strip() for line in shown.splitlines()
                 if line.startswith("MaxArraySize"))
    assert f"MaxArraySize={limit}" in done.stdout  # read from the cluster
    assert not (app_dir / "out/.hpcorch/slurm").exists()
