"""Multi-rank runs under the Slurm provider, without Slurm: the rendered allocation and srun
step (golden file), the node size read once, the array task's argv, and failure contexts
that name the failed rank from a shared `srun --label` stderr."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpcorch.launch import parse_report
from hpcorch.providers.slurm.accounting import ClusterLimits, parse_node_cpus
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.script import map_data, plan_arrays
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.providers.slurm.task import TaskState, _warm_script, step_argv, write_task_state
from hpcorch.spec import Resources, RunHandle, RunSpec, RunState
from hpcorch.worker.ranks import RankInfo, write_rank_file

GOLDEN = Path(__file__).parent / "golden" / "slurm_mpi_array.sbatch"
PY = "/opt/venv/bin/python"


def spec(num: int, resources: Resources, sweep: str = "/sweeps/mpi") -> RunSpec:
    run_dir = f"{sweep}/{num}"
    return RunSpec(run_key=f"key{num:04d}", sweep_id="mpi1234", num=num,
                   overrides=(f"lr=0.{num}",), config={"lr": num}, seed=num, run_dir=run_dir,
                   command=(PY, "/src/train.py", f"lr=0.{num}", f"hydra.run.dir={run_dir}"),
                   resources=resources, workdir="/src")


def render(resources: Resources, node_cpus: int | None, n: int = 2, **settings: Any) -> str:
    provider = SlurmProvider(SlurmSettings(python=PY, **settings), runner=NodeSizeRunner(""),
                             limits=ClusterLimits(node_cpus=node_cpus))
    return provider.render([spec(i, resources) for i in range(n)])


def test_golden_multi_rank_sbatch_script() -> None:
    """4 ranks on a 2-CPU node: the allocation and the srun step both overcommit, pinned."""
    text = render(Resources(tasks=4, time_min=30), node_cpus=2)
    if os.environ.get("HPCORCH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "regenerate with HPCORCH_UPDATE_GOLDEN=1 if intended"


def test_golden_carries_the_allocation_and_the_step() -> None:
    lines = GOLDEN.read_text().splitlines()
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks=4", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --overcommit"):
        assert line in lines, line
    steps = [ln for ln in lines if ln.startswith("#   #")]
    assert len(steps) == 2
    for step in steps:
        assert "srun --mpi=pmix --nodes=1 --ntasks=4 --cpus-per-task=1 --overcommit --label " \
               "--kill-on-bad-exit=1 --export=ALL,HPCORCH_PROVIDER=slurm," \
               "OMPI_MCA_mpi_yield_when_idle=1 /opt/venv/bin/python /src/train.py" in step


def test_overcommit_only_when_the_ranks_exceed_the_node() -> None:
    fits = render(Resources(tasks=2), node_cpus=2)
    assert "#SBATCH --ntasks=2" in fits.splitlines()
    assert "--overcommit" not in fits and "yield_when_idle" not in fits
    assert "srun --mpi=pmix --nodes=1 --ntasks=2" in fits
    unknown = render(Resources(tasks=4), node_cpus=None)  # sinfo names no node: never guess
    assert "--overcommit" not in unknown


def test_single_rank_runs_render_no_step() -> None:
    text = render(Resources(), node_cpus=2)
    assert "srun" not in text and "#SBATCH --ntasks=1" in text.splitlines()
    always = render(Resources(), node_cpus=2, srun="always")
    assert "srun --mpi=pmix --nodes=1 --ntasks=1" in always


def test_the_task_starts_exactly_the_rendered_step() -> None:
    res = Resources(tasks=4)
    limits = ClusterLimits(node_cpus=2)
    [plan] = plan_arrays([spec(0, res)], SlurmSettings(srun_args=("--cpu-bind=none",)), limits)
    task_map = json.loads(json.dumps(map_data(plan, SlurmSettings(srun_args=("--cpu-bind=none",)))))
    argv = step_argv(spec(0, res), task_map, PY)
    assert argv[:2] == ["srun", "--mpi=pmix"] and "--overcommit" in argv
    assert argv[argv.index("--cpu-bind=none") + 1:] == list(spec(0, res).command)
    # The task starts srun with the job contract's HPCORCH_JOB_ID/HPCORCH_RESTART_COUNT in its
    # environment (run_environment); --export=ALL is what carries them to every rank.
    assert [a for a in argv if a.startswith("--export=")][0].startswith("--export=ALL,")
    text = SlurmProvider(SlurmSettings(python=PY, srun_args=("--cpu-bind=none",)),
                         limits=limits).render([spec(0, res)])
    assert f"#   #0: {' '.join(argv)}" in text.splitlines()


def test_multi_rank_runs_never_take_the_warm_fork() -> None:
    """Packed runs normally fork a warm interpreter; MPI runs must start through srun."""
    task_map = {"warm": True, "srun": "auto", "node_cpus": 2}
    multi = [spec(i, Resources(tasks=2)) for i in range(3)]
    assert _warm_script(multi, task_map) is None
    assert all(step_argv(s, task_map)[0] == "srun" for s in multi)


class NodeSizeRunner:
    """Answers `scontrol show config` and `sinfo`, counting the calls."""

    def __init__(self, sinfo: str = "debug*|2\nbig|64\n") -> None:
        self.sinfo = sinfo
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        out = "MaxArraySize = 1001\n" if argv[0] == "scontrol" else self.sinfo
        return subprocess.CompletedProcess(list(argv), 0, out, "")


def test_node_size_is_read_once_and_only_for_multi_rank_runs() -> None:
    runner = NodeSizeRunner()
    provider = SlurmProvider(SlurmSettings(python=PY), runner=runner)
    provider.render([spec(0, Resources())])
    assert [c[0] for c in runner.calls] == ["scontrol"]
    first = provider.render([spec(0, Resources(tasks=4))])
    second = provider.render([spec(0, Resources(tasks=4))])
    assert [c[0] for c in runner.calls] == ["scontrol", "sinfo"]
    assert "#SBATCH --overcommit" in first.splitlines() and first == second


def test_node_size_of_the_configured_partition() -> None:
    runner = NodeSizeRunner()
    provider = SlurmProvider(SlurmSettings(python=PY, partition="big"), runner=runner)
    text = provider.render([spec(0, Resources(tasks=4))])
    assert runner.calls[-1][-2:] == ["-p", "big"]
    assert "--overcommit" not in text


@pytest.mark.parametrize(("text", "partition", "cpus"), [
    ("debug*|2\n", None, 2),
    ("debug*|2\ndebug*|8\nbig|64\n", None, 8),
    ("debug*|2\nbig|64\nbig|32+\n", "big", 64),
    ("big|64\n", None, None),
    ("", "big", None),
])
def test_parse_node_cpus(text: str, partition: str | None, cpus: int | None) -> None:
    assert parse_node_cpus(text, partition) == cpus


# -- failures ---------------------------------------------------------------------
LABELLED = """0: [INFO] - epoch 0
1: Traceback (most recent call last):
1: RuntimeError: boom on rank 1
1: --------------------------------------------------------------------------
1: MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD
1: with errorcode 1.
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
0: slurmstepd-vm: error: *** STEP 979.0 ON vm CANCELLED AT 2026-11-27T12:12:16 ***
srun: error: vm: task 0: Killed
srun: error: vm: task 1: Exited with exit code 1
"""


def test_labelled_mpi_abort_and_srun_reports_name_the_failed_rank() -> None:
    report = parse_report(LABELLED)
    assert report is not None and (report.rank, report.exit_code) == (1, 1)
    # Without the MPI_ABORT banner srun's own lines decide; a rank it killed is not the culprit.
    srun_only = "\n".join(ln for ln in LABELLED.splitlines() if ln.startswith("srun"))
    report = parse_report(srun_only)
    assert report is not None and (report.rank, report.host, report.exit_code) == (1, "vm", 1)
    killed_only = parse_report("srun: error: c1: task 2: Killed\nsrun: error: c1: task 0: Killed\n")
    assert killed_only is not None and killed_only.rank == 2


def test_failed_step_names_rank_host_and_that_ranks_stderr(tmp_path: Path) -> None:
    run = spec(0, Resources(tasks=2), sweep=str(tmp_path / "sweep"))
    meta = Path(run.run_dir) / ".hpcorch"
    meta.mkdir(parents=True)
    (meta / "spec.json").write_text(run.to_json())
    (meta / "stderr.log").write_text(LABELLED)
    write_rank_file(run.run_dir, RankInfo(0, 2, 0, 2, "vm", "pmix"), state="RUNNING")
    write_rank_file(run.run_dir, RankInfo(1, 2, 1, 2, "vm", "pmix"), state="FAILED",
                    error="RuntimeError: boom on rank 1")
    write_task_state(run.run_dir, TaskState("7_0", "EXITED", "vm", exit_code=1))
    provider = SlurmProvider(SlurmSettings(), limits=ClusterLimits())
    provider._run_dirs["7_0"] = {run.run_key: run.run_dir}  # as submit() remembers it
    [status] = provider.status([RunHandle("slurm", run.run_key, "7_0")])
    assert status.state is RunState.FAILED and status.context is not None
    ctx = status.context
    assert (ctx.provider, ctx.job_id, ctx.node, ctx.exit_code) == ("slurm", "7_0", "vm", 1)
    assert ctx.reason == "rank 1 of 2 on vm exited 1: RuntimeError: boom on rank 1"
    assert ctx.stderr_tail.splitlines()[:2] == ["Traceback (most recent call last):",
                                                "RuntimeError: boom on rank 1"]
    assert "epoch 0" not in ctx.stderr_tail and "srun:" not in ctx.stderr_tail


def test_single_rank_failure_context_is_left_alone(tmp_path: Path) -> None:
    run = spec(0, Resources(), sweep=str(tmp_path / "sweep"))
    meta = Path(run.run_dir) / ".hpcorch"
    meta.mkdir(parents=True)
    (meta / "spec.json").write_text(run.to_json())
    (meta / "stderr.log").write_text("ValueError: x\n")
    write_task_state(run.run_dir, TaskState("7_0", "EXITED", "vm", exit_code=1))
    provider = SlurmProvider(SlurmSettings(), limits=ClusterLimits())
    provider._run_dirs["7_0"] = {run.run_key: run.run_dir}
    [status] = provider.status([RunHandle("slurm", run.run_key, "7_0")])
    assert status.context is not None
    assert (status.context.reason, status.context.stderr_tail) == ("", "ValueError: x")
