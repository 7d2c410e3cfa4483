"""Parsing recorded scheduler output (sacct -P, squeue, scontrol) and mapping Slurm states."""

from __future__ import annotations

import pytest

from hpcorch.providers.slurm.accounting import (
    PREEMPT_GRACE_S,
    STATE_MAP,
    JobInfo,
    SlurmState,
    array_ids,
    expand_job_id,
    parse_config,
    parse_exit_code,
    parse_lookup,
    parse_max_rss_kb,
    parse_sacct,
    parse_squeue,
    spread_array_records,
)
from hpcorch.spec import RunState

# Recorded on the local Slurm 22.05 (sacct -P -n -D -o JobID,State,ExitCode,NodeList,Reason,
# JobName,End,MaxRSS,WorkDir), then extended with the states a single node cannot produce on
# demand. Step lines (`.batch`, `.extern`) carry MaxRSS only.
SACCT = """\
8_0|COMPLETED|0:0|vm|None|hpcorch-s1-a0x1|2026-11-27T10:00:00||/tmp/slurm exp
8_1|FAILED|1:0|vm|None|hpcorch-s1-a0x1|2026-11-27T10:00:00||/tmp/slurm exp
8_[2-5%2]|PENDING|0:0|None assigned|JobArrayTaskLimit|hpcorch-s1-a0x1|Unknown||/tmp/slurm exp
14_0|RUNNING|0:0|vm|None|hpcorch-s1-a0x2|Unknown||/w|with|bars
14_1|REQUEUED|0:0|vm|None|hpcorch-s1-a0x2|2026-11-27T10:00:00||/w
14_1.batch|CANCELLED|0:15|vm||batch|2026-11-27T10:00:00|81920K|
14_1|PENDING|0:0|None assigned|BeginTime|hpcorch-s1-a0x2|Unknown||/w
20_0|OUT_OF_MEMORY|0:125|c017|None|n|2026-11-27T10:00:00||/w
20_0.batch|OUT_OF_MEMORY|0:125|c017||batch|2026-11-27T10:00:00|250940K|
20_0.extern|COMPLETED|0:0|c017||extern|2026-11-27T10:00:00|1.5M|
20_1|TIMEOUT|0:0|c018|None|n|2026-11-27T10:00:00||/w
20_1.batch|CANCELLED|0:15|c018||batch|2026-11-27T10:00:00||
20_2|CANCELLED by 1000|0:15|c019|None|n|2026-11-27T10:00:00||/w
20_3|NODE_FAIL|1:0|c020|None|n|2026-11-27T10:00:00||/w
20_4|PREEMPTED|0:15|c021|None|n|2026-01-01T00:00:00||/w
20_5|BOOT_FAIL|0:0|c022|None|n|2026-11-27T10:00:00||/w
20_6|DEADLINE|0:0|c023|None|n|2026-11-27T10:00:00||/w
20_7|REQUEUED|0:0|c024|None|n|2026-11-27T10:00:00||/w
20_8|SOME_FUTURE_STATE|0:0|c025|None|n|2026-11-27T10:00:00||/w
21|COMPLETED|0:0|c001|None|plain|2026-11-27T10:00:00||/w
22_0|PREEMPTED|0:15|c021|None|n|2026-11-27T10:00:00||/w
"""


@pytest.fixture(scope="module")
def jobs() -> dict[str, JobInfo]:
    return parse_sacct(SACCT)


def test_array_tasks_and_pending_ranges(jobs: dict[str, JobInfo]) -> None:
    for task in ("8_2", "8_3", "8_4", "8_5"):
        assert jobs[task].run_state()[0] is RunState.SUBMITTED
        assert jobs[task].reason == "JobArrayTaskLimit" and jobs[task].node == ""
    assert jobs["8_0"].run_state() == (RunState.SUCCEEDED, "")
    assert jobs["8_1"].run_state()[0] is RunState.FAILED and jobs["8_1"].exit_code == 1
    assert jobs["21"].run_state()[0] is RunState.SUCCEEDED


def test_cancelled_pending_tail_is_reported_as_the_bare_array_id() -> None:
    # Recorded after `scancel` of a throttled array whose tasks 1-2 never started.
    text = ("41_0|CANCELLED by 0|0:0|vm|None|hpcorch-c-a0x9|2026-11-27T10:00:00||/w\n"
            "41|CANCELLED by 0|0:0|None assigned|JobArrayTaskLimit|hpcorch-c-a0x9|Unknown||/w\n")
    jobs = spread_array_records(parse_sacct(text), ["41_0", "41_1", "41_2"])
    assert [jobs[f"41_{i}"].run_state()[0] for i in range(3)] == [RunState.CANCELLED] * 3
    assert jobs["41_2"].job_id == "41_2"


def test_step_lines_give_their_job_its_peak_memory(jobs: dict[str, JobInfo]) -> None:
    assert jobs["20_0"].max_rss_kb == 250940  # the larger of .batch and .extern (1.5M)
    assert jobs["20_0"].base_state is SlurmState.OUT_OF_MEMORY  # steps change nothing else
    assert jobs["20_1"].max_rss_kb is None  # a step with no sample
    assert jobs["8_0"].max_rss_kb is None
    # requeued: the earlier attempt's step does not speak for the attempt now waiting
    assert jobs["14_1"].max_rss_kb is None and jobs["14_1"].requeued
    assert not any("." in job_id for job_id in jobs)


@pytest.mark.parametrize(("text", "kb"), [
    ("76360K", 76360), ("1.50M", 1536), ("2G", 2 * 1024 ** 2), ("78192640", 76360),
    ("", None), ("0", None), ("16?", None),
])
def test_max_rss_units(text: str, kb: int | None) -> None:
    # 76360K and 78192640 (bytes, --noconvert) recorded from the same job on Slurm 22.05
    assert parse_max_rss_kb(text) == kb


def test_workdir_may_contain_the_separator(jobs: dict[str, JobInfo]) -> None:
    assert jobs["14_0"].workdir == "/w|with|bars"
    assert jobs["8_0"].workdir == "/tmp/slurm exp"


def test_requeued_task_waiting_again_is_preempted_not_new(jobs: dict[str, JobInfo]) -> None:
    state, reason = jobs["14_1"].run_state()
    assert state is RunState.PREEMPTED and not state.terminal
    assert "requeued" in reason


def test_preempted_waits_for_a_requeue_then_counts_as_ended(jobs: dict[str, JobInfo]) -> None:
    """A requeueing cluster shows the next attempt PENDING at once; a cancelling one leaves
    the job PREEMPTED for good, and the sweep must end."""
    info = jobs["22_0"]
    assert info.ended is not None
    state, reason = info.run_state(now=info.ended + 5)
    assert state is RunState.PREEMPTED and not state.terminal and reason == "preempted"
    state, reason = info.run_state(now=info.ended + PREEMPT_GRACE_S + 1)
    assert state is RunState.CANCELLED and "preempted and not requeued" in reason
    assert jobs["14_0"].ended is None  # still running: sacct says Unknown


@pytest.mark.parametrize("job_id,state,reason_part,exit_code,signal", [
    ("20_0", RunState.FAILED, "memory", None, 125),
    ("20_1", RunState.TIMEOUT, "time limit", 0, None),
    ("20_2", RunState.CANCELLED, "cancelled by uid 1000", None, 15),
    ("20_3", RunState.FAILED, "node failed", 1, None),
    ("20_4", RunState.CANCELLED, "preempted and not requeued", None, 15),
    ("20_5", RunState.FAILED, "boot", 0, None),
    ("20_6", RunState.TIMEOUT, "deadline", 0, None),
    ("20_7", RunState.PREEMPTED, "requeued", 0, None),
])
def test_state_mapping_and_context(jobs: dict[str, JobInfo], job_id: str, state: RunState,
                                   reason_part: str, exit_code: int | None,
                                   signal: int | None) -> None:
    info = jobs[job_id]
    got, reason = info.run_state()
    assert got is state and reason_part in reason
    context = info.context("Traceback...\nMemoryError", job_id)
    assert context.provider == "slurm" and context.job_id == job_id
    assert context.node == info.node and context.node.startswith("c0")
    assert (context.exit_code, context.signal) == (exit_code, signal)
    assert context.stderr_tail.endswith("MemoryError")
    assert reason_part in context.one_line()


def test_oom_is_a_failure_that_says_memory(jobs: dict[str, JobInfo]) -> None:
    state, reason = jobs["20_0"].run_state()
    assert state is RunState.FAILED
    assert "OUT_OF_MEMORY" in reason and "memory" in reason


def test_unknown_state_keeps_watching(jobs: dict[str, JobInfo]) -> None:
    state, reason = jobs["20_8"].run_state()
    assert state is RunState.SUBMITTED and not state.terminal and "SOME_FUTURE_STATE" in reason


def test_every_slurm_state_is_mapped_and_only_ends_are_terminal() -> None:
    assert set(STATE_MAP) == set(SlurmState)
    ends = {s for s, (rs, _) in STATE_MAP.items() if rs.terminal}
    assert ends == {SlurmState.COMPLETED, SlurmState.FAILED, SlurmState.SPECIAL_EXIT,
                    SlurmState.OUT_OF_MEMORY, SlurmState.NODE_FAIL, SlurmState.BOOT_FAIL,
                    SlurmState.CANCELLED, SlurmState.REVOKED, SlurmState.TIMEOUT,
                    SlurmState.DEADLINE}


@pytest.mark.parametrize("text,expected", [
    ("0:0", (0, None)), ("3:0", (3, None)), ("0:15", (None, 15)), ("1:9", (1, 9)),
    ("", (0, None)), ("x:y", (None, None)),
])
def test_exit_code(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("job_id,expected", [
    ("123_[5-7%2]", ["123_5", "123_6", "123_7"]),
    ("123_[1,3,8-9]", ["123_1", "123_3", "123_8", "123_9"]),
    ("123_[0-6:3]", ["123_0", "123_3", "123_6"]),
    ("123_4", ["123_4"]), ("77", ["77"]),
])
def test_expand_job_id(job_id: str, expected: list[str]) -> None:
    assert expand_job_id(job_id) == expected


def test_squeue_fallback_output() -> None:
    # Recorded: squeue -h -r -t all -O ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,Reason:|,
    # NodeList:|,exit_code:|,Name:|,WorkDir:
    text = ("8|0|9|COMPLETED|None|vm|0|hpcorch-exp|/tmp/slurm exp|\n"
            "8|4|13|FAILED|NonZeroExitCode|vm|1024|hpcorch-exp|/tmp/slurm exp|\n"
            "14|1|14|RUNNING|None|vm|0|hpcorch-exp|/tmp/x|\n"
            "30|N/A|30|CANCELLED|None||15|plain|/tmp|\n")
    jobs = parse_squeue(text)
    assert jobs["8_0"].run_state()[0] is RunState.SUCCEEDED
    assert jobs["8_4"].exit_code == 4 and jobs["8_4"].run_state()[0] is RunState.FAILED
    assert jobs["14_1"].run_state()[0] is RunState.RUNNING
    assert jobs["30"].signal == 15 and jobs["30"].run_state()[0] is RunState.CANCELLED


def test_config_limits() -> None:
    text = ("AccountingStorageType   = accounting_storage/slurmdbd\n"
            "MaxArraySize            = 1001\n"
            "MaxJobCount             = 10000\nSLURM_VERSION           = 22.05.8\n")
    limits = parse_config(text)
    assert (limits.max_array_size, limits.max_job_count, limits.accounting) == (1001, 10000, True)
    assert limits.version == "22.05.8"
    off = parse_config("AccountingStorageType = accounting_storage/none\nMaxArraySize = 5\n")
    assert (off.max_array_size, off.accounting) == (5, False)


def test_lookup_and_array_ids() -> None:
    rows = list(parse_lookup("8_[2-3]|PENDING|hpcorch-s-a0x1|/tmp/a b\n9|RUNNING|other|/x\n"
                             "8_0|COMPLETING|hpcorch-s-a0x1|/tmp/a b\n"
                             "8_1|CANCELLED|hpcorch-s-a0x1|/tmp/a|b\n"
                             "8_4|REQUEUED|hpcorch-s-a0x1|/tmp/a|b\n"))
    assert rows == [("8_2", "hpcorch-s-a0x1", "/tmp/a b"), ("8_3", "hpcorch-s-a0x1", "/tmp/a b"),
                    ("9", "other", "/x"), ("8_4", "hpcorch-s-a0x1", "/tmp/a|b")]
    assert array_ids(["8_1", "8_2", "9", "10_0"]) == ["8", "9", "10"]
