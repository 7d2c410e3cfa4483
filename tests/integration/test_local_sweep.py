"""The main job end to end: `python train.py -m ...` on the local provider, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import hpcorch_cli, only_sweep_dir, records, run

pytestmark = pytest.mark.integration


def test_main_job_table_status_and_skip(app_dir: Path) -> None:
    first = run(app_dir, "-m", "lr=0.1,0.01", "epochs=5", script="train.py")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("SUCCEEDED") == 2
    for metric in ("test_acc", "train_loss", "val_acc"):
        assert metric in first.stderr
    recs = records(only_sweep_dir(app_dir))
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r["overrides"] for r in recs] == [["lr=0.1", "epochs=5"], ["lr=0.01", "epochs=5"]]
    assert recs[0]["metrics"]["test_acc"] > 0.6  # it really trained
    assert recs[0]["seed"] != recs[1]["seed"]

    status = hpcorch_cli(app_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    runs = json.loads(status.stdout)["runs"]
    assert [(r["num"], r["state"]) for r in runs] == [(0, "SUCCEEDED"), (1, "SUCCEEDED")]
    assert [r["run_key"] for r in runs] == [r["run_key"] for r in recs]

    again = run(app_dir, "-m", "lr=0.1,0.01", "epochs=5", script="train.py")
    assert again.returncode == 0, again.stderr
    assert "skipped 2 run(s)" in again.stderr and again.stderr.count("SKIPPED") == 2

    forced = run(app_dir, "-m", "lr=0.1,0.01", "epochs=5", "hpcorch.rerun=true", script="train.py")
    assert forced.returncode == 0 and forced.stderr.count("SUCCEEDED") == 2


def test_plain_run_writes_the_same_record(app_dir: Path) -> None:
    sweep = run(app_dir, "-m", "lr=0.05", "epochs=4", script="train.py")
    assert sweep.returncode == 0, sweep.stderr
    [swept] = records(only_sweep_dir(app_dir))
    single = run(app_dir, "lr=0.05", "epochs=4", script="train.py")
    assert single.returncode == 0, single.stderr
    [path] = app_dir.glob("outputs/*/*/.hpcorch/record.json")
    plain = json.loads(path.read_text())
    assert plain["state"] == "SUCCEEDED"
    assert plain["run_key"] == swept["run_key"] and plain["seed"] == swept["seed"]
    assert plain["metrics"] == swept["metrics"]
    assert plain["fingerprint"]["packages"]["hydra-core"].startswith("1.3")
    assert {"random", "numpy"} <= set(plain["seeded"])


def test_warm_and_cold_runs_agree(app_dir: Path) -> None:
    warm = run(app_dir, "-m", "lr=0.1,0.02", "epochs=3", "hydra.sweep.dir=warm", script="train.py")
    cold = run(app_dir, "-m", "lr=0.1,0.02", "epochs=3", "hydra.sweep.dir=cold",
               "provider.warm=false", "hpcorch.rerun=true", script="train.py")
    assert warm.returncode == 0, warm.stderr
    assert cold.returncode == 0, cold.stderr
    warm_recs, cold_recs = records(app_dir / "warm"), records(app_dir / "cold")
    assert [r["run_key"] for r in warm_recs] == [r["run_key"] for r in cold_recs]
    assert [r["metrics"] for r in warm_recs] == [r["metrics"] for r in cold_recs]
    # the cold run really was a fresh interpreter with the run's hash seed
    assert [r["fingerprint"]["hash_seed"] for r in cold_recs] == [str(r["seed"]) for r in cold_recs]
    assert not any("warnings" in r["fingerprint"] for r in warm_recs + cold_recs)


def test_job_failure_fails_the_multirun_after_the_others(tmp_path: Path) -> None:
    from tests.integration.helpers import write_probe_app

    app = write_probe_app(tmp_path / "probe")
    proc = run(app, "-m", "x=1,2", "fail=true,false")
    assert proc.returncode != 0
    assert "probe failure x=1" in proc.stderr
    recs = records(only_sweep_dir(app))
    assert sorted(r["state"] for r in recs) == ["FAILED", "FAILED", "SUCCEEDED", "SUCCEEDED"]
    failed = [r for r in recs if r["state"] == "FAILED"]
    assert all(r["error"]["type"] == "ValueError" for r in failed)
    assert "raise ValueError" in failed[0]["error"]["traceback"]
    assert "FAILED" in proc.stderr and "probe failure" in proc.stderr  # summary explains it


def test_cli_show_logs_sweeps_rebuild(app_dir: Path, _isolated_home: Path) -> None:
    proc = run(app_dir, "-m", "lr=0.1", "epochs=2", script="train.py")
    assert proc.returncode == 0, proc.stderr
    [rec] = records(only_sweep_dir(app_dir))
    show = hpcorch_cli(app_dir, "show", rec["run_key"][:8])
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["run_key"] == rec["run_key"] and "packages" in shown["fingerprint"]
    logs = hpcorch_cli(app_dir, "logs", f"{rec['sweep_id']}/0")
    assert logs.returncode == 0 and "train_loss" in logs.stdout
    sweeps = hpcorch_cli(app_dir, "sweeps")
    assert rec["sweep_id"] in sweeps.stdout
    (_isolated_home / "index.db").unlink()
    rebuilt = hpcorch_cli(app_dir, "rebuild", str(app_dir / "multirun"))
    assert rebuilt.returncode == 0 and "1 sweep(s), 1 run(s)" in rebuilt.stdout
    status = hpcorch_cli(app_dir, "status", rec["sweep_id"], "--json")
    assert json.loads(status.stdout)["runs"][0]["state"] == "SUCCEEDED"
    missing = hpcorch_cli(app_dir, "show", "ffffffffffff")
    assert missing.returncode == 2 and "no run" in missing.stderr
