"""Telling a run Slurm killed for memory (its state or its task log) from other failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpcorch.providers.slurm.accounting import JobInfo
from hpcorch.providers.slurm.failure import (
    classify,
    describe,
    explain,
    memory_kill,
    memory_reason,
    peak_mem_gb,
    task_log,
)
from hpcorch.spec import FailureClass, FailureContext, Resources, RunSpec, RunState
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
    assert out.failure_class is FailureClass.OOM  # kept through the rank's context
    assert explain(spec.run_dir, context, job("FAILED")).reason == "rank 1 of 2 on c017"


def ended(state: str, exit_code: int | None = None, signal: int | None = None) -> JobInfo:
    return JobInfo("7_3", state, exit_code, signal, "vm", workdir="/nonexistent")


@pytest.mark.parametrize(("info", "run_state", "expected"), [
    (ended("OUT_OF_MEMORY", 0, 9), RunState.FAILED, FailureClass.OOM),
    (ended("TIMEOUT", 0), RunState.TIMEOUT, FailureClass.TIMEOUT),
    (ended("DEADLINE", 0), RunState.TIMEOUT, FailureClass.TIMEOUT),
    (ended("NODE_FAIL", 1), RunState.FAILED, FailureClass.NODE_FAIL),
    (ended("BOOT_FAIL", 0), RunState.FAILED, FailureClass.NODE_FAIL),
    # PREEMPTED that the cluster did not requeue within the grace: the run ended CANCELLED
    (ended("PREEMPTED", 0, 15), RunState.CANCELLED, FailureClass.PREEMPTED),
    (ended("CANCELLED by 1000", 0, 15), RunState.CANCELLED, FailureClass.CANCELLED),
    (ended("REVOKED"), RunState.CANCELLED, FailureClass.CANCELLED),
    (ended("FAILED", 3), RunState.FAILED, FailureClass.APP_ERROR),
    (ended("FAILED", None, 11), RunState.FAILED, FailureClass.APP_ERROR),  # it crashed
    (ended("SPECIAL_EXIT", 2), RunState.FAILED, FailureClass.APP_ERROR),
    (ended("FAILED", None, 9), RunState.FAILED, FailureClass.OTHER),  # SIGKILL, unexplained
    (ended("FAILED", 0), RunState.FAILED, FailureClass.OTHER),
    (None, RunState.UNKNOWN, FailureClass.LOST),
])
def test_classify_by_slurms_end_state_then_the_exit(info: JobInfo | None, run_state: RunState,
                                                    expected: FailureClass) -> None:
    context = info.context() if info is not None else FailureContext("slurm", "7_3")
    assert describe(run_state, "", context, info).failure_class is expected


def test_a_memory_kill_read_from_the_log_beats_the_failed_state(tmp_path: Path) -> None:
    info = JobInfo("7_3", "FAILED", 0, 9, "vm", workdir=str(tmp_path))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "7_3.log").write_text(POLLING_LOG)
    out = describe(RunState.FAILED, "", info.context(), info)
    assert out.failure_class is FailureClass.OOM and "memory limit" in out.reason


def test_the_runs_own_exit_without_slurms_word() -> None:
    """The task-state file answered (no sacct): exit codes are the app's."""
    context = FailureContext("slurm", "7_3", "vm", exit_code=1)
    assert classify(RunState.FAILED, context, None) is FailureClass.APP_ERROR
    assert classify(RunState.FAILED, dataclasses.replace(context, exit_code=None, signal=9),
                    None) is FailureClass.OTHER
    memory_error = dataclasses.replace(context, stderr_tail="Traceback ...\nMemoryError\n")
    assert classify(RunState.FAILED, memory_error, None) is FailureClass.OOM
    assert classify(RunState.FAILED, dataclasses.replace(
        context, stderr_tail="MemoryError\nValueError: later\n"), None) is FailureClass.APP_ERROR
    preset = dataclasses.replace(context, failure_class=FailureClass.NODE_FAIL)
    assert classify(RunState.FAILED, preset, None) is FailureClass.NODE_FAIL


def test_peak_memory_from_sacct_max_rss() -> None:
    info = dataclasses.replace(ended("OUT_OF_MEMORY", 0, 9), max_rss_kb=3 * 1024 ** 2 // 2)
    assert peak_mem_gb(info) == 1.5
    assert peak_mem_gb(ended("FAILED", 1)) is None and peak_mem_gb(None) is None
    out = describe(RunState.FAILED, "", FailureContext("slurm", "7_3", exit_code=1),
                   None, peak_from=info)
    assert out.peak_mem_gb == 1.5 and out.failure_class is FailureClass.APP_ERROR
