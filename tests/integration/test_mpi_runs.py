"""`python train.py -m ...` as real MPI runs (Open MPI + mpi4py): same metrics as one process.

Every sweep runs as a subprocess in a copy of the example app. 4 ranks on this
machine's 2 cores are oversubscribed on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require_service
from tests.integration.mpi_support import (
    CRASH_APP,
    assert_ran_as_ranks,
    assert_rank_failure,
    mpi_available,
)

pytestmark = [pytest.mark.integration, pytest.mark.mpi]

TOLERANCE = 1e-9
LRS = "lr=0.1,0.05"
MPI4 = "provider.hosts=[localhost:4]"



@pytest.fixture(autouse=True)
def _needs_mpi() -> None:
    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py",
                    "run scripts/mpi-up.sh and pip install -e '.[mpi]'")


def sweep(app: Path, name: str, *overrides: str, script: str = "train.py",
          home: Path | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run one `-m` sweep in `app`; returns the process and the sweep directory."""
    sweep_dir = app / "multirun" / name
    env = dict(os.environ)
    if home is not None:
        env["HPCORCH_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, script, "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
         "hpcorch.progress=off"],
        cwd=app, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc, sweep_dir


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The run records of a sweep, by run number."""
    found = [json.loads(p.read_text()) for p in sweep_dir.glob("*/.hpcorch/record.json")]
    return sorted(found, key=lambda r: r["num"])


def _failed_stderr(sweep_dir: Path) -> str:
    """The stderr files of the sweep's failed runs: what mpirun said, for the failure report."""
    failed = [p.parent for p in sweep_dir.glob("*/.hpcorch/record.json")
              if json.loads(p.read_text()).get("state") != "SUCCEEDED"]
    return "".join(f"\n--- {meta}/stderr.log:\n"
                   + (meta / "stderr.log").read_text(errors="replace")[-3000:]
                   for meta in sorted(failed) if (meta / "stderr.log").exists())


def succeeded(proc: subprocess.CompletedProcess[str], sweep_dir: Path, runs: int) -> list[dict]:
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]
                                  + _failed_stderr(sweep_dir))
    recs = records(sweep_dir)
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * runs
    return recs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict[str, Any]]:
    """The single-process records of the same sweep, by learning rate."""
    if not mpi_available():
        return {}
    app = tmp_path_factory.mktemp("baseline") / "app"
    app.mkdir()
    shutil.copy(ROOT / "train.py", app / "train.py")
    shutil.copytree(ROOT / "conf", app / "conf")
    proc, sweep_dir = sweep(app, "single", LRS, home=app / "home")
    recs = succeeded(proc, sweep_dir, 2)
    assert all("ranks" not in r["fingerprint"] for r in recs)
    return {r["config"]["lr"]: r for r in recs}


@pytest.mark.parametrize(("provider", "tasks"), [
    ("local", 2), ("local", 4), ("mpi", 2), ("mpi", 4),
])
def test_ranks_match_single_process(app_dir: Path, baseline: dict[float, dict[str, Any]],
                                    provider: str, tasks: int) -> None:
    # 4 ranks on this 2-core machine: provider=local needs the explicit opt-in.
    extra = [MPI4] if provider == "mpi" else ["resources.oversubscribe=true"]
    proc, sweep_dir = sweep(app_dir, f"{provider}{tasks}", LRS, f"provider={provider}",
                            f"resources.tasks={tasks}", *extra)
    for rec in succeeded(proc, sweep_dir, 2):
        single = baseline[rec["config"]["lr"]]
        assert rec["seed"] == single["seed"]
        assert rec["metrics"].keys() == single["metrics"].keys()
        for name, value in single["metrics"].items():
            assert abs(rec["metrics"][name] - value) < TOLERANCE, (name, rec["metrics"], value)
        assert_ran_as_ranks(rec, tasks, "openmpi")
        run_dir = Path(rec["run_dir"])
        # Only rank 0 wrote Hydra's outputs; the others logged to their own files.
        assert (run_dir / ".hydra" / "config.yaml").exists()
        log_lines = (run_dir / "train.log").read_text().splitlines()
        assert len(log_lines) == len(Path(single["run_dir"], "train.log").read_text().splitlines())
        for rank in range(1, tasks):
            assert "train_loss" in (run_dir / ".hpcorch" / "ranks" / f"rank.{rank}.log").read_text()


@pytest.mark.parametrize("provider", ["local", "mpi"])
@pytest.mark.parametrize("fail_rank", [1, 0])
def test_rank_failure_names_rank_host_and_stderr(app_dir: Path, provider: str,
                                                 fail_rank: int) -> None:
    (app_dir / "crash.py").write_text(CRASH_APP)
    proc, sweep_dir = sweep(app_dir, "crash", f"provider={provider}", "resources.tasks=2",
                            f"+fail_rank={fail_rank}", script="crash.py")
    assert proc.returncode != 0
    [rec] = records(sweep_dir)
    assert_rank_failure(rec, provider, fail_rank)


@pytest.mark.parametrize("provider", ["local", "mpi"])
def test_sys_exit_on_one_rank_fails_the_run_instead_of_hanging(app_dir: Path,
                                                               provider: str) -> None:
    (app_dir / "crash.py").write_text(CRASH_APP)
    hosts = ["provider.hosts=[localhost:2]"] if provider == "mpi" else []
    proc, sweep_dir = sweep(app_dir, "exit", f"provider={provider}", "resources.tasks=2", *hosts,
                            "+fail_rank=1", "+exit_code=3", script="crash.py")
    assert proc.returncode != 0
    [rec] = records(sweep_dir)
    assert rec["state"] == "FAILED"


def _devices_seen(rec: dict[str, Any]) -> list[str | None]:
    """What CUDA_VISIBLE_DEVICES every rank saw: its rank file, cross-checked with the record."""
    run_dir = Path(rec["run_dir"])
    files = [json.loads((run_dir / ".hpcorch" / "ranks" / f"rank.{r}.json").read_text())
             for r in range(rec["fingerprint"]["ranks"]["size"])]
    seen = [f["devices"] for f in files]
    assert seen == [r["devices"] for r in rec["fingerprint"]["ranks"]["ranks"]]
    return seen


def test_gpus_local_one_device_per_rank(app_dir: Path) -> None:
    proc, sweep_dir = sweep(app_dir, "gpu", "resources.tasks=2", "resources.gpus=2")
    [rec] = succeeded(proc, sweep_dir, 1)
    assert _devices_seen(rec) == ["0", "1"]


def test_gpus_mpi_placed_runs_get_disjoint_devices(app_dir: Path) -> None:
    """Two 2-rank runs share a 4-GPU host: each rank its own device, no device twice."""
    proc, sweep_dir = sweep(app_dir, "gpu", LRS, "provider=mpi", MPI4,
                            "provider.gpus_per_host=4", "resources.tasks=2", "resources.gpus=2")
    recs = succeeded(proc, sweep_dir, 2)
    assert [_devices_seen(r) for r in recs] == [["0", "1"], ["2", "3"]]


def test_gpus_mpi_configured_mapping(app_dir: Path) -> None:
    proc, sweep_dir = sweep(app_dir, "gpu", "provider=mpi", "provider.gpu_ids=[7,5]",
                            "resources.tasks=2", "resources.gpus=2")
    [rec] = succeeded(proc, sweep_dir, 1)
    assert _devices_seen(rec) == ["7", "5"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["provider=mpi", "provider.hosts=[localhost:2]", "resources.tasks=4"],
     "resources.tasks=4: 1 node(s) x 4 rank(s) do not fit the provider=mpi hosts (localhost:2"),
    (["provider=mpi", "provider.mpirun=/nonexistent/mpirun"],
     "provider.mpirun='/nonexistent/mpirun': the name or full path of Open MPI's mpirun"),
    (["provider=mpi", "resources.nodes=2", "resources.tasks=2"],
     "resources.nodes=2: the host list allows at most 1 nodes"),
    (["resources.nodes=2", "resources.tasks=2"],
     "resources.nodes=2: this machine allows at most 1 nodes"),
])
def test_bad_input_is_refused_before_anything_starts(app_dir: Path, overrides: list[str],
                                                     message: str) -> None:
    proc, sweep_dir = sweep(app_dir, "bad", *overrides)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert records(sweep_dir) == []
    assert not list(sweep_dir.glob("*/.hpcorch/stdout.log"))  # no run was started
