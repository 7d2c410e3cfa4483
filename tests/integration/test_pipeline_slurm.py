"""Pipelines on the real engines: the example across local, Slurm and Ray, and the fault
cases of native Slurm dependencies (afterok), each checked against sacct and squeue.

Run inside the Slurm network namespace (scripts/in-netns.sh), like every Slurm test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from hpcorch.identity import short_hash
from tests.integration.pipeline_support import (
    copy_example,
    hpcorch,
    record,
    starts,
    toy_pipeline,
)
from tests.integration.ray_support import ray_url  # noqa: F401 - fixture
from tests.integration.slurm_support import require_slurm, squeue_jobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ON_SLURM = {"overrides": ["+hydra/launcher/provider=slurm"]}


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A copy of the example pipeline (Slurm must be up)."""
    require_slurm()
    return copy_example(tmp_path)


def _pipeline(root: Path, *args: str, home: str, timeout: float = 900
              ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPCORCH_HOME": str(root / home)}
    return subprocess.run([sys.executable, "-m", "hpcorch", "pipeline", "run", *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _records(directory: Path, stage: str) -> list[dict]:
    found = sorted((directory / stage).glob("*/.hpcorch/record.json"),
                   key=lambda p: int(p.parent.parent.name))
    return [json.loads(p.read_text()) for p in found]


def _sacct(job: str) -> dict[str, tuple[float | None, float | None, str, str]]:
    """Task id -> (Start, End, State, Reason) of a Slurm job or array, from the accounting."""
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o",
                           "JobID,Start,End,State,Reason"],
                          capture_output=True, text=True, timeout=60, check=True)

    def stamp(text: str) -> float | None:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:  # Unknown, None: it never started or has not ended
            return None

    out = {}
    for line in done.stdout.splitlines():
        job_id, start, end, state, reason = line.split("|")
        out[job_id] = (stamp(start), stamp(end), state.split()[0], reason)
    return out


def _submissions(stage_dir: Path) -> list[str]:
    """The job ids submitit submitted for a stage (one `<id>_submission.sh` per sbatch)."""
    return sorted(p.name.split("_")[0] for p in
                  (stage_dir / ".hpcorch" / "slurm" / "submitit").glob("*_submission.sh"))


def _no_leftovers(job_ids: list[str]) -> None:
    done = subprocess.run(["squeue", "-h", "-o", "%i %T %r"], capture_output=True, text=True,
                          timeout=60, check=True)
    left = [line for line in done.stdout.splitlines()
            if line.split()[0].split("_")[0] in set(job_ids)]
    assert not left, left


@pytest.mark.ray
def test_the_example_runs_prepare_local_train_on_slurm_evaluate_on_ray(
        example_dir: Path, ray_url: str) -> None:  # noqa: F811
    mixed = _pipeline(example_dir, "conf/pipeline/example.yaml", "--dir", "mixed",
                      "train.provider=slurm", "evaluate.provider=ray",
                      f"evaluate.provider.address={ray_url}", home="home-mixed")
    assert mixed.returncode == 0, mixed.stderr[-4000:]
    out = example_dir / "mixed"
    prepare, train, [evaluate] = (_records(out, s) for s in ("prepare", "train", "evaluate"))
    assert [r["provider"] for r in (*prepare, *train, evaluate)] == \
        ["local"] * 2 + ["slurm"] * 4 + ["ray"]
    # One sbatch for the train stage's array, and sacct's own times say the order held.
    [array] = _submissions(out / "train")
    accounted = _sacct(array)
    for run in train:
        start, end, state, _ = accounted[run["job_id"]]
        shard = int(run["overrides"][-1].rpartition("=")[2])
        assert state == "COMPLETED" and start is not None and end is not None
        assert start >= int(prepare[shard]["ended"]), (run["job_id"], start, prepare[shard])
    last_train_end = max(accounted[r["job_id"]][1] or 0 for r in train)
    assert evaluate["started"] >= last_train_end
    assert evaluate["started"] >= max(r["ended"] for r in train)
    # The same pipeline all on local: the same run keys and metrics, stage by stage.
    local = _pipeline(example_dir, "conf/pipeline/example.yaml", "--dir", "local",
                      home="home-local")
    assert local.returncode == 0, local.stderr[-4000:]
    for stage in ("prepare", "train", "evaluate"):
        here, there = _records(example_dir / "local", stage), _records(out, stage)
        assert [r["run_key"] for r in here] == [r["run_key"] for r in there]
        assert [r["metrics"] for r in here] == [r["metrics"] for r in there]


def test_a_failed_upstream_cancels_the_dependency_slurm_can_never_satisfy(tmp_path: Path) -> None:
    require_slurm()
    path = toy_pipeline(tmp_path, {"prep": dict(ON_SLURM), "train": dict(ON_SLURM),
                                   "ev": dict(ON_SLURM)})
    (tmp_path / "fail-prep-1").touch()
    done = hpcorch(tmp_path, "pipeline", "run", str(path), timeout=900)
    assert done.returncode == 1, done.stderr[-4000:]
    assert "train: its submission waits on prep runs that did not succeed" in done.stderr
    assert "prep 1 failed, 1 succeeded; train 2 cancelled, 2 succeeded; ev 1 cancelled" \
        in done.stderr
    # Exactly prep #1's dependents are cancelled, with the reason; shard 0's branch ran.
    states = [record(tmp_path, "train", n)["state"] for n in range(4)]
    assert states == ["SUCCEEDED", "CANCELLED", "SUCCEEDED", "CANCELLED"]
    reason = record(tmp_path, "train", 1)["failure"]["reason"]
    assert reason.startswith("upstream prep #1 FAILED: "), reason
    assert reason.endswith("ValueError: asked to fail: prep shard 1"), reason
    assert record(tmp_path, "ev", 0)["failure"]["reason"].startswith("upstream train #1 ")
    # The train array first submitted with afterok never ran (cancelled while pending on
    # its dependency: Slurm's reason is DependencyNeverSatisfied once its scheduler looked,
    # None when hpcorch was quicker); the second one ran shard 0's runs.
    first, _again = _submissions(tmp_path / "pipelines" / "toy" / "train")
    assert {(s, r in ("DependencyNeverSatisfied", "None", "Dependency"))
            for _, _, s, r in _sacct(first).values()} == {("CANCELLED", True)}
    elapsed = subprocess.run(["sacct", "-n", "-X", "-P", "-j", first, "-o", "Elapsed"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert set(elapsed.split()) == {"00:00:00"}, elapsed
    assert [s for s in starts(tmp_path) if s.startswith("train")] == [
        "train +lr=1 ++shard=0", "train +lr=2 ++shard=0"]
    jobs = [j for stage in ("prep", "train", "ev")
            for j in _submissions(tmp_path / "pipelines" / "toy" / stage)]
    _no_leftovers(jobs)


def test_an_upstream_requeued_then_succeeding_lets_its_dependents_run(tmp_path: Path) -> None:
    require_slurm()
    path = toy_pipeline(tmp_path, {"prep": {"overrides": [*ON_SLURM["overrides"], "+sleep=20"]},
                                   "train": dict(ON_SLURM), "ev": dict(ON_SLURM)})
    env = {**os.environ, "HPCORCH_HOME": str(tmp_path / "home")}
    driver = subprocess.Popen([sys.executable, "-m", "hpcorch", "pipeline", "run", str(path)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    sweep = short_hash(os.path.abspath(tmp_path / "pipelines" / "toy" / "prep"), 10)
    wait_for(lambda: len([s for s in starts(tmp_path) if s.startswith("prep")]) == 2,
             "both prep runs to start", timeout=300)
    [(job, _)] = {(j.split("_")[0], n) for j, n in squeue_jobs(f"hpcorch-{sweep}")}
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-4000:]
    prep_starts = [s for s in starts(tmp_path) if s.startswith("prep")]
    assert len(prep_starts) == 4, prep_starts  # both started again after the requeue
    assert [record(tmp_path, "train", n)["state"] for n in range(4)] == ["SUCCEEDED"] * 4
    prep_end = max(record(tmp_path, "prep", n)["ended"] for n in range(2))
    assert min(record(tmp_path, "train", n)["started"] for n in range(4)) >= prep_end
    assert record(tmp_path, "ev", 0)["state"] == "SUCCEEDED"
    _no_leftovers([job])


def test_a_retried_upstream_run_that_succeeds_releases_its_dependents(tmp_path: Path) -> None:
    """prep #1 raises once; its stage allows one app-error retry (a stage override):
    attempt 2 succeeds and the train runs of shard 1 run on it, after it."""
    require_slurm()
    path = toy_pipeline(tmp_path, {
        "prep": {"overrides": [*ON_SLURM["overrides"],
                               "++hydra.launcher.hpcorch.retry.app_error=1"]},
        "train": dict(ON_SLURM), "ev": dict(ON_SLURM)})
    (tmp_path / "fail-once-prep-1").touch()
    done = hpcorch(tmp_path, "pipeline", "run", str(path), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    retried = tmp_path / "pipelines" / "toy" / "prep" / "1" / ".hpcorch"
    first = json.loads((retried / "record.attempt-0.json").read_text())
    assert first["state"] == "FAILED" and first["failure"]["failure_class"] == "APP_ERROR"
    assert record(tmp_path, "prep", 1)["attempt"] == 1
    assert [record(tmp_path, "train", n)["state"] for n in range(4)] == ["SUCCEEDED"] * 4
    assert min(record(tmp_path, "train", n)["started"] for n in (1, 3)) >= \
        record(tmp_path, "prep", 1)["ended"]
    assert record(tmp_path, "ev", 0)["state"] == "SUCCEEDED"
    jobs = [j for stage in ("prep", "train", "ev")
            for j in _submissions(tmp_path / "pipelines" / "toy" / stage)]
    _no_leftovers(jobs)


def test_killing_the_driver_of_a_chained_pipeline_and_resuming_submits_nothing_twice(
        tmp_path: Path) -> None:
    require_slurm()
    path = toy_pipeline(tmp_path, {"prep": dict(ON_SLURM),
                                   "train": {"overrides": [*ON_SLURM["overrides"], "+sleep=10"]},
                                   "ev": dict(ON_SLURM)})
    env = {**os.environ, "HPCORCH_HOME": str(tmp_path / "home")}
    driver = subprocess.Popen([sys.executable, "-m", "hpcorch", "pipeline", "run", str(path)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    ledger = tmp_path / "pipelines" / "toy" / "ev" / ".hpcorch" / "sweep.json"
    wait_for(ledger.exists, "the chained ev stage to be submitted", timeout=300)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    resumed = hpcorch(tmp_path, "resume", "toy", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for stage in ("prep", "train", "ev"):
        assert len(_submissions(tmp_path / "pipelines" / "toy" / stage)) == 1, stage
    started = starts(tmp_path)
    assert len(started) == 7 and len(set(started)) == 7, started


def test_dry_run_shows_each_stages_sbatch_script_with_its_dependency(tmp_path: Path) -> None:
    require_slurm()
    path = toy_pipeline(tmp_path, {"prep": dict(ON_SLURM), "train": dict(ON_SLURM),
                                   "ev": dict(ON_SLURM)})
    dry = hpcorch(tmp_path, "pipeline", "run", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-4000:]
    prep, train, evaluate = dry.stdout.split("# dry run:")[:3]
    assert "--dependency" not in prep.split("```")[-1]
    assert "#SBATCH --dependency='afterok:<prep job>'" in train
    assert "#SBATCH --dependency='afterok:<train job>'" in evaluate
    assert not list(tmp_path.rglob("*_submission.sh")) and not starts(tmp_path)
