"""A reused record is always the record of the same run (issue 10, point 1).

Every path that can hand back an earlier record is exercised: the run's own
directory holding its own record (reused), holding another run's record (a
fixed `hydra.sweep.dir` given another config: archived, run again), a success
in another sweep found through the index (reused, but not when that directory
has since been taken by another run), `hpcorch.rerun=true`, `hpcorch resume`,
a detached sweep, the real Slurm, and Hydra's Optuna sweeper, which calls the
launcher in batches and learns from the values it is handed back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import hpcorch_cli, records, run

pytestmark = pytest.mark.integration

#: A Hydra app that has never heard of hpcorch: its value is a function of x only.
PLAIN_APP = '''
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    print(f"app x={cfg.x}")
    return float(cfg.x) * 2.0

if __name__ == "__main__":
    main()
'''


@pytest.fixture
def plain_app(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "app.py").write_text(PLAIN_APP)
    (root / "config.yaml").write_text("x: 1\n")
    return root


def _by_lr(sweep: Path) -> dict[str, dict]:
    return {next(o for o in r["overrides"] if o.startswith("lr=")): r for r in records(sweep)}


def _archived(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/.hpcorch/record.attempt-*"))]


def test_a_fixed_sweep_dir_given_another_config_runs_the_new_runs(app_dir: Path) -> None:
    first = run(app_dir, "-m", "lr=0.1,0.2", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert first.returncode == 0, first.stderr
    old = _by_lr(app_dir / "X")
    second = run(app_dir, "-m", "lr=0.3,0.4", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert second.returncode == 0, second.stderr
    new = _by_lr(app_dir / "X")
    assert set(new) == {"lr=0.3", "lr=0.4"}
    assert all(r["state"] == "SUCCEEDED" for r in new.values())
    assert {r["run_key"] for r in new.values()}.isdisjoint(r["run_key"] for r in old.values())
    # Their own metrics, not the first sweep's.
    assert new["lr=0.3"]["metrics"] != old["lr=0.1"]["metrics"]
    assert new["lr=0.4"]["metrics"] != old["lr=0.2"]["metrics"]
    # The summary (stderr) shows the new runs; the first sweep's records are kept, archived.
    assert "lr=0.3" in second.stderr and "lr=0.1 " not in second.stderr.split("on local")[-1]
    assert "held the record of another run" in second.stderr
    assert {r["run_key"] for r in _archived(app_dir / "X")} == {
        r["run_key"] for r in old.values()}
    # The same config again in the same dir reuses its own records, untouched.
    third = run(app_dir, "-m", "lr=0.3,0.4", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert third.returncode == 0, third.stderr
    assert _by_lr(app_dir / "X") == new
    assert "held the record of another run" not in third.stderr


def test_the_index_never_hands_back_a_directory_another_run_took(app_dir: Path) -> None:
    a = run(app_dir, "-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert a.returncode == 0, a.stderr
    [k1] = records(app_dir / "X")
    # Another sweep in another dir finds lr=0.1 through the index and reuses it (SKIPPED).
    b = run(app_dir, "-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=Y", script="train.py")
    assert b.returncode == 0, b.stderr
    [reused] = records(app_dir / "Y")
    assert reused["state"] == "SKIPPED" and reused["run_key"] == k1["run_key"]
    assert reused["reused_from"] == k1["run_dir"] and reused["metrics"] == k1["metrics"]
    # Now X/0 is taken by lr=0.3; the index still says lr=0.1 succeeded there.
    c = run(app_dir, "-m", "lr=0.3", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert c.returncode == 0, c.stderr
    d = run(app_dir, "-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=Z", script="train.py")
    assert d.returncode == 0, d.stderr
    [fresh] = records(app_dir / "Z")
    assert fresh["state"] == "SUCCEEDED" and fresh["run_key"] == k1["run_key"]
    assert fresh["overrides"] == ["lr=0.1", "epochs=2"] and not fresh.get("reused_from")
    assert fresh["metrics"] == k1["metrics"]  # deterministic: the same run, run again


def test_rerun_runs_again_and_keeps_the_earlier_attempt(app_dir: Path) -> None:
    first = run(app_dir, "-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert first.returncode == 0, first.stderr
    [before] = records(app_dir / "X")
    again = run(app_dir, "-m", "lr=0.1", "epochs=2", "hydra.sweep.dir=X", "hpcorch.rerun=true",
                script="train.py")
    assert again.returncode == 0, again.stderr
    [after] = records(app_dir / "X")
    assert after["state"] == "SUCCEEDED" and after["attempt"] == 1
    assert after["started"] > before["ended"]
    assert [r["started"] for r in _archived(app_dir / "X")] == [before["started"]]


def test_resume_and_wait_never_adopt_another_runs_record(app_dir: Path) -> None:
    first = run(app_dir, "-m", "lr=0.1,0.2", "epochs=2", "hydra.sweep.dir=X", script="train.py")
    assert first.returncode == 0, first.stderr
    old = _by_lr(app_dir / "X")
    detached = run(app_dir, "-m", "lr=0.3,0.4", "epochs=2", "hydra.sweep.dir=X",
                   "hpcorch.detach=true", script="train.py")
    assert detached.returncode == 0, detached.stderr
    waited = hpcorch_cli(app_dir, "wait", str(app_dir / "X"), "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    new = _by_lr(app_dir / "X")
    assert set(new) == {"lr=0.3", "lr=0.4"}
    assert all(r["state"] == "SUCCEEDED" for r in new.values())
    assert new["lr=0.3"]["metrics"] != old["lr=0.1"]["metrics"]
    # `hpcorch resume` of the finished sweep runs nothing and reports the new runs.
    resumed = hpcorch_cli(app_dir, "resume", str(app_dir / "X"), "--progress", "off")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _by_lr(app_dir / "X") == new
    assert "lr=0.3" in resumed.stderr and "lr=0.1" not in resumed.stderr


def test_any_hydra_app_keeps_stdout_for_itself(plain_app: Path) -> None:
    done = run(plain_app, "-m", "hydra/launcher=hpcorch", "x=1,2", "hydra.sweep.dir=S")
    assert done.returncode == 0, done.stderr
    recs = records(plain_app / "S")
    assert [(r["state"], r["metrics"]) for r in recs] == [
        ("SUCCEEDED", {"value": 2.0}), ("SUCCEEDED", {"value": 4.0})]
    assert recs[0]["provider"] == "local" and recs[0]["seed"] != recs[1]["seed"]
    # stdout: Hydra's own log lines, nothing of hpcorch's summary; each job's own prints
    # are kept in its run directory (as a scheduler keeps a job's output).
    assert "Launching 2 jobs" in done.stdout
    assert (plain_app / "S" / "0" / ".hpcorch" / "stdout.log").read_text() == "app x=1\n"
    for hpcorch_text in ("SUCCEEDED", "details: hpcorch status", "┃"):
        assert hpcorch_text not in done.stdout
        assert hpcorch_text in done.stderr
    # The same with fresh processes: the launcher adds its callback to each job's command.
    cold = run(plain_app, "-m", "hydra/launcher=hpcorch", "x=1,2", "hydra.sweep.dir=C",
               "+hydra/launcher/provider=local", "hydra.launcher.provider.warm=false")
    assert cold.returncode == 0, cold.stderr
    assert [r["run_key"] for r in records(plain_app / "C")] == [r["run_key"] for r in recs]


def test_optuna_learns_only_from_the_trials_it_ran(plain_app: Path) -> None:
    """Optuna asks the launcher two trials at a time; the values it gets back must be
    those of the trials it asked for, even in a sweep dir that holds other trials."""
    common = ["-m", "hydra/launcher=hpcorch", "hydra/sweeper=optuna", "hydra.sweep.dir=O",
              "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
              "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=0"]
    first = run(plain_app, *common, "x=choice(1,2)")
    assert first.returncode == 0, first.stderr
    second = run(plain_app, *common, "x=choice(10,20)")
    assert second.returncode == 0, second.stderr
    import yaml

    result = yaml.safe_load((plain_app / "O" / "optimization_results.yaml").read_text())
    assert result["best_params"]["x"] in (10, 20)
    assert result["best_value"] == 2.0 * result["best_params"]["x"]
    assert all(r["metrics"]["value"] == 2.0 * float(r["overrides"][0].split("=")[1])
               for r in records(plain_app / "O"))


@pytest.mark.slurm
def test_on_slurm_a_fixed_sweep_dir_given_another_config_runs_the_new_runs(
        app_dir: Path) -> None:
    from tests.integration.slurm_support import require_slurm, run_app

    require_slurm()
    env = {"HPCORCH_HOME": str(app_dir / ".hpcorch-home")}
    common = ["provider=slurm", "epochs=2", "hydra.sweep.dir=X", "hpcorch.progress=off"]
    first = run_app(app_dir, *common, "lr=0.1,0.2", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    old = _by_lr(app_dir / "X")
    assert all(r["provider"] == "slurm" for r in old.values())
    # The second sweep is detached, then followed from another process.
    second = run_app(app_dir, *common, "lr=0.3,0.4", "hpcorch.detach=true", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "held the record of another run" in second.stderr
    waited = hpcorch_cli(app_dir, "--home", env["HPCORCH_HOME"], "wait", str(app_dir / "X"),
                         "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    new = _by_lr(app_dir / "X")
    assert set(new) == {"lr=0.3", "lr=0.4"}
    assert all(r["state"] == "SUCCEEDED" and r["provider"] == "slurm" for r in new.values())
    assert {r["job_id"] for r in new.values()}.isdisjoint(r["job_id"] for r in old.values())
    assert new["lr=0.3"]["metrics"] != old["lr=0.1"]["metrics"]
    # And the same config again reuses exactly these records, submitting nothing.
    third = run_app(app_dir, *common, "lr=0.3,0.4", env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert _by_lr(app_dir / "X") == new
