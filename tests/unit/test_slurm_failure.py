"""Telling a run Slurm killed for memory (its state or its task log) from other failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpcorch.providers.slurm.accounting import JobInfo
from hpcorch.providers.slurm.failure import explain, memory_kill, memory_reason, task_log
from hpcorch.spec import FailureContext, Resources, RunSpec
from hpcorch.store.records import STDERR_FILE, atomic_write_json, meta_dir, spec_path

# Task logs recorded on the local Slurm 22.05: OverMemoryKill (jobacct_gather polling) and
# task/cgroup (the kernel's OOM killer; sacct says OUT_OF_MEMORY then).
POLLING_LOG = """\
slurmstepd-vm: error: StepId=1685.batch exceeded memory limit (637262848 > 268435456), being \
killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 1685 ON vm CANCELLED AT 2026-11-27T13:56:01 ***
slurmstepd-vm: error: StepId=1685.batch exceeded memory limit (637262848 > 268435456), being \
killed
slurmstepd-vm: error: Exceeded job memory limit
"""
CGROUP_LOG = """\
/var/spool/slurmd/job01613/slurm_script: line 8: 26414 Killed                  python3 -c
slurmstepd-vm: error: Detected 1 oom-kill event(s) in StepId=1613.batch. Some of your \
processes may have been killed by the cgroup out-of-memory handler.
"""
PLAIN_FAILURE_LOG = "Traceback (most recent call last):\nMemoryError: not Slurm's doing\n"


def job(state: str, workdir: str = "/w", job_id: str = "7_3") -> JobInfo:
    return JobInfo(job_id, state, 0, 9, "vm", workdir=workdir)


def test_out_of_memory_state_needs_no_log() -> None:
    assert memory_kill(job("OUT_OF_MEMORY"), log_text="") == "OUT_OF_MEMORY"


@pytest.mark.parametrize("log", [POLLING_LOG, CGROUP_LOG])
def test_failed_task_whose_log_says_memory(log: str) -> None:
    evidence = memory_kill(job("FAILED"), log_text=log)
    assert evidence is not None and evidence.startswith("FAILED, its Slurm log says: slurmstepd")


@pytest.mark.parametrize(("state", "log"), [
    ("FAILED", PLAIN_FAILURE_LOG),  # a MemoryError of the run's own is not a Slurm kill
    ("FAILED", ""),
    ("TIMEOUT", POLLING_LOG),  # only a FAILED task is read as a memory kill
    ("CANCELLED by 0", POLLING_LOG),
    ("COMPLETED", POLLING_LOG),
])
def test_other_endings_are_not_memory_kills(state: str, log: str) -> None:
    assert memory_kill(job(state), log_text=log) is None


def test_the_log_is_read_from_the_tasks_slurm_log(tmp_path: Path) -> None:
    info = job("FAILED", str(tmp_path))
    path = task_log(info)
    assert path == tmp_path / "logs" / "7_3.log"
    assert memory_kill(info) is None  # no log yet
    path.parent.mkdir()
    path.write_text(POLLING_LOG)
    assert memory_kill(info) == "FAILED, its Slurm log says: " \
        "slurmstepd-vm: error: Exceeded job memory limit"
    assert task_log(dataclasses.replace(info, workdir="")) is None
    # a single-task plan is a plain job (submitit submits a batch of one so): logs/%j.log
    assert task_log(dataclasses.replace(info, job_id="7")) == tmp_path / "logs" / "7.log"


def test_reason_names_the_requested_memory() -> None:
    assert memory_reason("OUT_OF_MEMORY", 0.25) == (
        "killed by Slurm for exceeding its memory limit of 0.25 GB (resources.mem_gb) "
        "(OUT_OF_MEMORY)")
    assert memory_reason("OUT_OF_MEMORY", None) == (
        "killed by Slurm for exceeding its memory limit (OUT_OF_MEMORY)")


def _spec(tmp_path: Path, **resources: object) -> RunSpec:
    run_dir = tmp_path / "run"
    spec = RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir=str(run_dir), command=("python", "-c", "pass"),
                   resources=Resources(**resources))  # type: ignore[arg-type]
    atomic_write_json(spec_path(spec.run_dir), spec.to_dict())
    return spec


def test_explain_puts_the_memory_kill_into_the_reason(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mem_gb=0.5)
    context = FailureContext("slurm", "7_3", "vm", None, 9, "", "allocating...")
    out = explain(spec.run_dir, context, job("OUT_OF_MEMORY"))
    assert out.reason == memory_reason("OUT_OF_MEMORY", 0.5)
    assert out.stderr_tail == "allocating..." and out.signal == 9
    assert "memory limit of 0.5 GB" in out.one_line()
    # nothing in a log: the kill itself is said, and that Slurm recorded no limit
    for unexplained in (explain(spec.run_dir, context, job("FAILED")),
                        explain(spec.run_dir, context)):
        assert unexplained.reason.startswith(
            "killed by SIGKILL (signal 9), not by a limit Slurm recorded"), unexplained.reason
    assert explain("", context, job("OUT_OF_MEMORY")).reason == memory_reason(
        "OUT_OF_MEMORY", None)  # no run dir: the memory is not known, the kill is


def test_explain_keeps_the_failed_rank_of_a_multi_rank_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mem_gb=1, tasks=2)
    context = FailureContext("slurm", "7_3", "vm")
    memory = memory_reason("OUT_OF_MEMORY", 1)
    assert explain(spec.run_dir, context, job("OUT_OF_MEMORY")).reason == memory  # no rank named
    (meta_dir(spec.run_dir) / STDERR_FILE).write_text(
        "srun: error: c017: task 1: Out Of Memory\n")
    out = explain(spec.run_dir, context, job("OUT_OF_MEMORY"))
    assert out.reason == f"{memory}; rank 1 of 2 on c017" and out.node == "c017"
    assert explain(spec.run_dir, context, job("FAILED")).reason == "rank 1 of 2 on c017"
