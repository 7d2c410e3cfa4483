"""Single runs (no -m) get a sweep's checks and its provider (issue 10, point 4)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import run

pytestmark = pytest.mark.integration


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / ".hpcorch" / "record.json").read_text())


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("provider.workers=-1", "provider.workers"),
        ("resources.cpus=0", "resources.cpus"),
        ("+hpcorch.detatch=true", "hpcorch.detatch"),
        ("hpcorch.detatch=true", "hpcorch.detatch"),
        ("resources.mem_gb=-1", "resources.mem_gb"),
        ("seed=abc", "seed"),
    ],
)
def test_a_single_run_is_checked_like_a_sweep(app_dir: Path, override: str, named: str) -> None:
    done = run(app_dir, override, "epochs=1", "hydra.run.dir=single", script="train.py")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and named in done.stderr
    assert not (app_dir / "single" / ".hpcorch" / "record.json").exists()


def test_a_plain_local_single_run_runs_in_process(app_dir: Path) -> None:
    done = run(app_dir, "epochs=1", "hydra.run.dir=here", script="train.py")
    assert done.returncode == 0, done.stderr
    record = _record(app_dir / "here")
    assert record["state"] == "SUCCEEDED" and record["sweep_id"] == ""  # no sweep planned
    assert "Launching" not in done.stdout + done.stderr


def test_a_local_single_run_of_two_ranks_goes_through_the_orchestrator(app_dir: Path) -> None:
    from tests.conftest import require_service
    from tests.integration.mpi_support import assert_ran_as_ranks, mpi_available

    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py", "scripts/mpi-up.sh")
    done = run(app_dir, "epochs=1", "resources.tasks=2", "hydra.run.dir=ranks",
               script="train.py")
    assert done.returncode == 0, done.stderr
    record = _record(app_dir / "ranks")
    assert record["state"] == "SUCCEEDED" and record["sweep_id"]
    assert_ran_as_ranks(record, 2, "openmpi")


def _final_slurm_state(job: str) -> str | None:
    """sacct's state of `job` once it has left PENDING/RUNNING, else None."""
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"],
                          capture_output=True, text=True, timeout=60, check=True)
    state = done.stdout.strip()
    return state if state and state not in ("PENDING", "RUNNING", "COMPLETING") else None


@pytest.mark.slurm
def test_a_single_run_with_provider_slurm_runs_on_slurm(app_dir: Path) -> None:
    from tests.integration.slurm_support import require_slurm, wait_for

    require_slurm()
    dry = run(app_dir, "provider=slurm", "epochs=1", "hydra.run.dir=dry", "hpcorch.dry_run=true",
              script="train.py")
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH" in dry.stdout and "nothing submitted" in dry.stdout
    assert not (app_dir / "dry" / ".hpcorch" / "record.json").exists()

    done = run(app_dir, "provider=slurm", "epochs=1", "hydra.run.dir=on-slurm",
               script="train.py")
    assert done.returncode == 0, done.stderr
    record = _record(app_dir / "on-slurm")
    assert record["state"] == "SUCCEEDED" and record["provider"] == "slurm"
    job = record["job_id"].split("_")[0]
    # The record is written before the job's batch shell (and submitit's result pickling)
    # ends, so sacct may still say RUNNING for a moment: await its final state.
    final = wait_for(lambda: _final_slurm_state(job), f"sacct's final state of job {job}")
    assert final == "COMPLETED", final
    assert "on slurm: 1 succeeded" in done.stderr and "SUCCEEDED" not in done.stdout
    # The same run locally has the same run key (where it runs is not what it computes).
    local = run(app_dir, "epochs=1", "hydra.run.dir=on-local", script="train.py")
    assert local.returncode == 0, local.stderr
    assert _record(app_dir / "on-local")["run_key"] == record["run_key"]
    assert _record(app_dir / "on-local")["metrics"] == record["metrics"]

    failed = run(app_dir, "provider=slurm", "epochs=1", "lr=abc", "hydra.run.dir=fails",
                 script="train.py")
    assert failed.returncode == 1, failed.stderr
    assert _record(app_dir / "fails")["state"] == "FAILED"
