"""The srun wrapper on the real local Slurm: the rendered `srun --mpi=pmix ...` starts real
Open MPI ranks (4 on 2 cores with --overcommit) and a failed rank is named from srun's report.

Slurm's clients live in the `hpcorch` network namespace: run these tests inside it,
e.g. `scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_mpi_srun.py`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.jobenv import RANK_SOURCES_ENV
from hpcorch.launch import Launcher, LaunchOptions, parse_report, slurm_allocation_args, wrap
from hpcorch.launch.rankenv import encode_sources
from hpcorch.providers.local import usable_cores
from hpcorch.providers.slurm.task import SRUN_RANK_SOURCES
from hpcorch.spec import Resources
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.mpi]

PROBE = """
import json, os
from mpi4py import MPI
from hpcorch.worker.ranks import current
comm = MPI.COMM_WORLD
me = current()
if me.rank == int(os.environ.get("FAIL_RANK", "-1")):
    os._exit(3)  # dies without MPI_Finalize, as a crashing rank does
total = comm.allreduce(me.rank + 1)
print(json.dumps({"rank": me.rank, "size": me.size, "source": me.source, "mpi_rank": comm.rank,
                  "mpi_size": comm.size, "total": total,
                  "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
"""


def _slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("mpirun") is None:
        return False
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_service(_slurm_up(), "Slurm (inside the hpcorch netns) with Open MPI and mpi4py",
                    "run scripts/mpi-up.sh, scripts/slurm-up.sh, then the tests via "
                    "scripts/in-netns.sh")


def run_batch(tmp_path: Path, resources: Resources, fail_rank: int = -1) -> tuple[int, str, str]:
    """sbatch --wait a script whose step is exactly what the srun wrapper renders."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    step = wrap([sys.executable, str(probe)], resources,
                LaunchOptions("slurm", slots=usable_cores(), python=sys.executable,
                              multi_rank=Launcher.SRUN))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    script = tmp_path / "job.sh"
    lines = ["#!/bin/bash", *(f"#SBATCH {a}" for a in slurm_allocation_args(
        resources, node_cpus=usable_cores())),
        f"#SBATCH --output={out}", f"#SBATCH --error={err}", "#SBATCH --time=5",
        f"export FAIL_RANK={fail_rank}",
        # What the Slurm array task sets for its runs (hpcorch.providers.slurm.task).
        f"export {RANK_SOURCES_ENV}={shlex.quote(encode_sources(SRUN_RANK_SOURCES))}",
        shlex.join(step)]
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run(["sbatch", "--wait", "--job-name=hpcorch-mpi-test", str(script)],
                          capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, out.read_text(), err.read_text()


@pytest.mark.parametrize("tasks", [2, 4])
def test_srun_pmix_ranks(tmp_path: Path, tasks: int) -> None:
    rc, out, err = run_batch(tmp_path, Resources(tasks=tasks, gpus=2))
    assert rc == 0, err
    seen = sorted((json.loads(line) for line in out.splitlines()), key=lambda d: d["rank"])
    assert [d["rank"] for d in seen] == [d["mpi_rank"] for d in seen] == list(range(tasks))
    assert {d["size"] for d in seen} == {d["mpi_size"] for d in seen} == {tasks}
    assert {d["source"] for d in seen} == {"pmix"}
    assert {d["total"] for d in seen} == {tasks * (tasks + 1) // 2}
    assert [d["devices"] for d in seen] == ["0", "1"] * (tasks // 2)


def test_srun_failed_rank_is_named(tmp_path: Path) -> None:
    rc, _, err = run_batch(tmp_path, Resources(tasks=2), fail_rank=1)
    assert rc != 0
    report = parse_report(err)
    assert report is not None, err
    assert (report.rank, report.exit_code) == (1, 3)
