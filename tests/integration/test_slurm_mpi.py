"""`python train.py -m provider=slurm resources.tasks=N ...` on the real local Slurm: every run
is one N-rank Open MPI job (sbatch allocation + `srun --mpi=pmix` step), with the metrics and
the run key of the single-process local run, and a failing rank named in the failure.

Slurm's clients live in the `hpcorch` network namespace: run these tests inside it,
`scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_slurm_mpi.py`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.integration.mpi_support import (
    CRASH_APP,
    assert_ran_as_ranks,
    assert_rank_failure,
    mpi_available,
)
from tests.integration.slurm_support import records, require_slurm, run_app, submitted_scripts

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.mpi]

TOLERANCE = 1e-9
LRS = "lr=0.1,0.01"


@pytest.fixture(autouse=True)
def _services() -> None:
    require_slurm()
    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py",
                    "run scripts/mpi-up.sh (before slurm-up.sh) and pip install -e '.[mpi]'")


def sweep(app: Path, name: str, *overrides: str, script: str = "train.py"
          ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `-m` sweep in `app` into `app/multirun/NAME` (rerun: never skipped)."""
    sweep_dir = app / "multirun" / name
    proc = run_app(app, *overrides, f"hydra.sweep.dir={sweep_dir}", "hpcorch.progress=off",
                   "hpcorch.rerun=true", script=script)
    return proc, sweep_dir


def succeeded(proc: subprocess.CompletedProcess[str], sweep_dir: Path, runs: int
              ) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = records(sweep_dir)
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * runs
    return recs


def node_cpus() -> int:
    """CPUs of the (one) local Slurm node."""
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True,
                          timeout=30, check=True)
    return max(int(re.match(r"\d+", line.strip())[0])  # type: ignore[index]
               for line in done.stdout.splitlines() if line.strip())


@pytest.fixture
def reference(app_dir: Path) -> dict[float, dict[str, Any]]:
    """The single-process local runs of the same sweep, by learning rate."""
    proc, sweep_dir = sweep(app_dir, "local", LRS)
    recs = succeeded(proc, sweep_dir, 2)
    assert all("ranks" not in r["fingerprint"] for r in recs)
    return {r["config"]["lr"]: r for r in recs}


def log_lines(path: Path) -> list[str]:
    """A Hydra log without its timestamps (and without srun's rank labels)."""
    return [re.sub(r"^(\d+: )?\[[^]]*\]", "", line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("tasks", [2, 4])
def test_ranks_under_slurm_match_the_single_process_run(
        app_dir: Path, reference: dict[float, dict[str, Any]], tasks: int) -> None:
    proc, sweep_dir = sweep(app_dir, f"slurm{tasks}", "provider=slurm",
                            f"resources.tasks={tasks}", LRS)
    recs = succeeded(proc, sweep_dir, 2)
    for rec in recs:
        single = reference[rec["config"]["lr"]]
        assert rec["run_key"] == single["run_key"]  # resources are not part of the run key
        assert rec["seed"] == single["seed"]
        assert rec["metrics"].keys() == single["metrics"].keys()
        for name, value in single["metrics"].items():
            assert abs(rec["metrics"][name] - value) < TOLERANCE, (name, rec["metrics"], value)
        assert re.fullmatch(r"\d+_\d+", rec["job_id"])  # a Slurm array task ran it
        assert_ran_as_ranks(rec, tasks, "pmix")
        run_dir = Path(rec["run_dir"])
        # Only rank 0 wrote Hydra's outputs and the record; every other rank logged the
        # same training curve to its own file: same seed, same initial weights everywhere.
        assert (run_dir / ".hydra" / "config.yaml").exists()
        curve = log_lines(run_dir / "train.log")
        assert curve and curve == log_lines(Path(single["run_dir"]) / "train.log")
        for rank in range(1, tasks):
            assert log_lines(run_dir / ".hpcorch" / "ranks" / f"rank.{rank}.log") == curve
    [script] = submitted_scripts(sweep_dir)
    lines = script.read_text().splitlines()
    overcommit = tasks > node_cpus()
    assert f"#SBATCH --ntasks={tasks}" in lines
    assert ("#SBATCH --overcommit" in lines) is overcommit
    steps = [line for line in lines if line.startswith("#   #")]
    assert len(steps) == 2 and all(f"srun --mpi=pmix --nodes=1 --ntasks={tasks} " in s
                                   for s in steps)
    assert all(("--overcommit" in s) is overcommit for s in steps)


def test_dry_run_renders_the_allocation_and_the_step(app_dir: Path) -> None:
    sweep_dir = app_dir / "multirun" / "dry"
    proc = run_app(app_dir, "provider=slurm", "resources.tasks=2", LRS, "hpcorch.dry_run=true",
                   f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert "#SBATCH --ntasks=2" in out
    steps = [line for line in out if line.startswith("#   #")]
    assert len(steps) == 2
    assert all(s.split(": ", 1)[1].startswith("srun --mpi=pmix --nodes=1 --ntasks=2 ")
               for s in steps)
    assert records(sweep_dir) == []


@pytest.mark.parametrize("fail_rank", [1, 0])
def test_a_failing_rank_fails_the_run_and_is_named(app_dir: Path, fail_rank: int) -> None:
    (app_dir / "crash.py").write_text(CRASH_APP)
    proc, sweep_dir = sweep(app_dir, "crash", "provider=slurm", "resources.tasks=2",
                            f"+fail_rank={fail_rank}", script="crash.py")
    assert proc.returncode != 0
    [rec] = records(sweep_dir)
    failure = assert_rank_failure(rec, "slurm", fail_rank)
    # One run: submitit submits it as a plain job (no array index).
    assert failure["job_id"] == rec["job_id"] and re.fullmatch(r"\d+", rec["job_id"])
    assert f"boom on rank {1 - fail_rank}" not in failure["stderr_tail"]
