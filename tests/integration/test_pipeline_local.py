"""Pipelines end to end on the local provider: order, reuse, failures, resume, kill, detach
(the toy app of pipeline_support)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.pipeline_support import (
    copy_example,
    hpcorch,
    record,
    starts,
    toy_pipeline,
)
from tests.integration.slurm_support import wait_for

pytestmark = pytest.mark.integration


def test_a_pipeline_runs_in_order_chains_keys_and_runs_nothing_again(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    done = hpcorch(tmp_path, "pipeline", "run", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pipeline toy: prep 2 succeeded; train 4 succeeded; ev 1 succeeded" in done.stderr
    assert len(starts(tmp_path)) == 7
    prep = [record(tmp_path, "prep", n) for n in range(2)]
    train = [record(tmp_path, "train", n) for n in range(4)]
    # Each train run consumed its shard (matched on shard); ev consumed every train run.
    assert [t["metrics"]["value"] for t in train] == [2.0, 12.0, 3.0, 13.0]
    evaluate = record(tmp_path, "ev", 0)
    assert evaluate["metrics"] == {"value": 30.0, "inputs": 4.0}
    # Order: no train run started before its shard ended; ev after the last train run.
    for t in train:
        shard = int(t["overrides"][-1].rpartition("=")[2])
        assert t["started"] >= prep[shard]["ended"]
    assert evaluate["started"] >= max(t["ended"] for t in train)
    # The same pipeline again runs nothing and says what it reused.
    again = hpcorch(tmp_path, "pipeline", "run", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(starts(tmp_path)) == 7
    assert ("prep 2 succeeded (2 reused); train 4 succeeded (4 reused); ev 1 succeeded "
            "(1 reused)") in again.stderr
    status = hpcorch(tmp_path, "status", "toy", "--json")
    assert status.returncode == 0, status.stderr
    assert [s["states"] for s in json.loads(status.stdout)["stages"]] == [
        {"SUCCEEDED": 2}, {"SUCCEEDED": 4}, {"SUCCEEDED": 1}]


def test_changing_one_shard_reruns_exactly_its_subtree(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    assert hpcorch(tmp_path, "pipeline", "run", str(path)).returncode == 0
    keys = [record(tmp_path, "train", n)["run_key"] for n in range(4)]
    (tmp_path / "starts.log").unlink()
    changed = hpcorch(tmp_path, "pipeline", "run", str(path), "prep.+shard=0,3")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert starts(tmp_path) == ["ev ", "prep +shard=3", "train +lr=1 ++shard=3",
                                 "train +lr=2 ++shard=3"]
    assert [record(tmp_path, "train", n)["run_key"] == k for n, k in enumerate(keys)] == [
        True, False, True, False]


def test_a_failure_cancels_exactly_its_dependents_and_resume_finishes(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    (tmp_path / "fail-prep-1").touch()
    failed = hpcorch(tmp_path, "pipeline", "run", str(path))
    assert failed.returncode == 1
    assert "prep 1 failed, 1 succeeded; train 2 cancelled, 2 succeeded; ev 1 cancelled" \
        in failed.stderr, failed.stderr[-3000:]
    for num in (1, 3):  # the train runs of shard 1; shard 0's branch went on
        cancelled = record(tmp_path, "train", num)
        assert cancelled["state"] == "CANCELLED"
        reason = cancelled["failure"]["reason"]  # the upstream run's failure, where it ran
        assert reason.startswith("upstream prep #1 FAILED: "), reason
        assert reason.endswith("ValueError: asked to fail: prep shard 1"), reason
    assert record(tmp_path, "ev", 0)["failure"]["reason"].startswith("upstream train #1 "
                                                                      "CANCELLED")
    assert hpcorch(tmp_path, "status", "toy").returncode == 3
    (tmp_path / "fail-prep-1").unlink()
    (tmp_path / "starts.log").unlink()
    resumed = hpcorch(tmp_path, "resume", str(tmp_path / "pipelines" / "toy"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Only what failed or was cancelled ran again.
    assert starts(tmp_path) == ["ev ", "prep +shard=1", "train +lr=1 ++shard=1",
                                 "train +lr=2 ++shard=1"]
    assert record(tmp_path, "ev", 0)["metrics"]["inputs"] == 4.0


def test_when_always_runs_on_what_succeeded(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path, mode="all", when="always")
    (tmp_path / "fail-train-0").touch()
    done = hpcorch(tmp_path, "pipeline", "run", str(path))
    assert done.returncode == 1  # two train runs failed
    evaluate = record(tmp_path, "ev", 0)
    assert evaluate["state"] == "SUCCEEDED" and evaluate["metrics"]["inputs"] == 2.0


def test_the_job_rechecks_its_upstream_records_before_the_research_code(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    assert hpcorch(tmp_path, "pipeline", "run", str(path)).returncode == 0
    prep_record = tmp_path / "pipelines" / "toy" / "prep" / "1" / ".hpcorch" / "record.json"
    data = json.loads(prep_record.read_text())
    prep_record.write_text(json.dumps({**data, "state": "FAILED"}))
    spec_file = tmp_path / "pipelines" / "toy" / "train" / "1" / ".hpcorch" / "spec.json"
    spec = json.loads(spec_file.read_text())
    (tmp_path / "starts.log").unlink()
    env = {**os.environ, "HPCORCH_SPEC": str(spec_file), "HPCORCH_HOME": str(tmp_path / "home")}
    job = subprocess.run(spec["command"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert job.returncode != 0
    assert "upstream prep #1 is FAILED, not SUCCEEDED" in job.stderr
    assert not (tmp_path / "starts.log").exists()  # the research code never started


def test_killing_the_driver_and_resuming_submits_nothing_twice(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    env = {**os.environ, "HPCORCH_HOME": str(tmp_path / "home")}
    driver = subprocess.Popen([sys.executable, "-m", "hpcorch", "pipeline", "run", str(path),
                               "train.+sleep=3"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(s.startswith("train") for s in starts(tmp_path)),
             "the train stage to start", timeout=240)
    driver.send_signal(signal.SIGKILL)  # no chance to clean up: its stage process lives on
    driver.wait(timeout=60)
    resumed = hpcorch(tmp_path, "resume", "toy")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "still running: waiting for it" in resumed.stderr
    started = starts(tmp_path)
    assert len(started) == 7 and len(set(started)) == 7, started


def test_a_detached_pipeline_is_followed_from_another_process(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    started = hpcorch(tmp_path, "pipeline", "run", str(path), "--detach")
    assert started.returncode == 0, started.stderr
    assert "started in the background" in started.stderr
    waited = hpcorch(tmp_path, "wait", "toy", timeout=600)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "prep" in waited.stdout and "4 succeeded" in waited.stdout
    assert len(starts(tmp_path)) == 7


def test_dry_run_prints_the_graph_and_every_stages_commands_and_runs_nothing(
        tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    dry = hpcorch(tmp_path, "pipeline", "run", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "train (4 runs, app.py) <- prep [each]" in dry.stdout
    assert "```mermaid" in dry.stdout and "prep -->|each| train" in dry.stdout
    assert dry.stdout.count("# dry run:") == 3
    assert "++shard=1" in dry.stdout and not (tmp_path / "starts.log").exists()


def test_bad_input_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    bad = hpcorch(tmp_path, "pipeline", "run", str(path), "train.lr")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "hpcorch: error: override='train.lr': STAGE.key=value with STAGE one of ['prep', "
        "'train', 'ev'] (e.g. train.lr=1e-3,1e-4 or train.provider=slurm)"]
    assert not (tmp_path / "pipelines").exists()


def test_cancel_stops_a_detached_pipeline_and_records_its_open_runs(tmp_path: Path) -> None:
    path = toy_pipeline(tmp_path)
    started = hpcorch(tmp_path, "pipeline", "run", str(path), "--detach", "train.+sleep=300")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: any(s.startswith("train") for s in starts(tmp_path)),
             "the train stage to start", timeout=240)
    running = json.loads(hpcorch(tmp_path, "status", "toy", "--json").stdout)
    assert running["driver_pid"] is not None
    train_now = running["stages"][1]["states"]
    assert set(train_now) <= {"SUBMITTED", "RUNNING"} and sum(train_now.values()) == 4, train_now
    cancelled = hpcorch(tmp_path, "cancel", "toy")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    status = hpcorch(tmp_path, "status", "toy", "--json")
    assert status.returncode == 3
    data = json.loads(status.stdout)
    assert data["driver_pid"] is None
    assert [s["states"] for s in data["stages"]] == [
        {"SUCCEEDED": 2}, {"CANCELLED": 4}, {"NOT STARTED": 1}]


def test_the_example_pipeline_runs_verbatim_and_passes_its_baseline(tmp_path: Path) -> None:
    """The README's command, all on local: evaluate's baseline check is part of the run."""
    example = copy_example(tmp_path)
    done = hpcorch(example, "pipeline", "run", "conf/pipeline/example.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "prepare 2 succeeded; train 4 succeeded; evaluate 1 succeeded" in done.stderr
    out = example / "pipelines" / "example" / "evaluate" / "0"
    table = (out / "table.md").read_text()
    assert "| epochs=10 lr=0.1 | 2 |" in table and "| epochs=10 lr=0.3 | 2 |" in table
    assert table in (out / ".hpcorch" / "stdout.log").read_text()  # evaluate printed it
    # A baseline that no longer matches fails evaluate, naming the metric. (Another file:
    # the baseline's content is not part of the run key, its path is; in a git checkout
    # an edited baseline changes the code version, so evaluate runs again there too.)
    baseline = example / "baselines" / "pipeline_example.yaml"
    text = baseline.read_text().replace("test_acc: {mean: 0.8", "test_acc: {mean: 0.9")
    (example / "baselines" / "drifted.yaml").write_text(text)
    drift = hpcorch(example, "pipeline", "run", "conf/pipeline/example.yaml",
                    "evaluate.baseline.path=baselines/drifted.yaml")
    assert drift.returncode == 1
    assert "evaluate 1 failed" in drift.stderr and "test_acc" in drift.stderr
