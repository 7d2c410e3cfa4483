"""Grid Engine parsers and failure reasons, on qstat/qacct output captured from the real
Son of Grid Engine 8.1.9 of scripts/sge-up.sh (tests/unit/golden/sge_*)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcorch.providers.sge.accounting import (
    AcctRecord,
    QstatTask,
    error_reason,
    latest_records,
    parse_job_dirs,
    parse_qacct,
    parse_qstat,
    parse_size,
    parse_terse,
)
from hpcorch.providers.sge.failure import explain_exit, from_accounting, limit_seconds
from hpcorch.providers.sge.provider import SgeProvider
from hpcorch.providers.sge.settings import SgeSettings
from hpcorch.spec import FailureContext, Resources, RunHandle, RunSpec, RunState

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> str:
    return (GOLDEN / f"sge_{name}").read_text()


def one(name: str) -> AcctRecord:
    [record] = parse_qacct(golden(name))
    return record


def spec(mem_gb: float | None = 0.5) -> RunSpec:
    return RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir="/nonexistent/0", command=("python",),
                   resources=Resources(mem_gb=mem_gb))


def test_terse_ids_of_a_job_and_an_array() -> None:
    assert parse_terse("12\n") == "12"
    assert parse_terse("5.1-5:1\n") == "5"
    assert parse_terse("Your job 5 has been submitted\n") is None


def test_qstat_xml_lists_running_and_pending_tasks() -> None:
    tasks = parse_qstat(golden("qstat_running_pending.xml"))
    assert sorted(tasks) == ["2.1", "4.1", "4.2", "4.3", "4.4"]
    assert tasks["4.1"] == QstatTask("4.1", "del", "r", "all.q@vm")
    assert tasks["4.1"].node == "vm" and tasks["4.1"].run_state() is RunState.RUNNING
    assert tasks["4.3"].state == "qw" and tasks["4.3"].run_state() is RunState.SUBMITTED
    assert tasks["4.3"].node == ""


def test_grouped_pending_tasks_are_spread() -> None:
    xml = ("<job_info><job_info><job_list state='pending'><JB_job_number>7</JB_job_number>"
           "<JB_name>n</JB_name><state>qw</state><tasks>2-6:2,9</tasks></job_list>"
           "</job_info></job_info>")
    assert sorted(parse_qstat(xml)) == ["7.2", "7.4", "7.6", "7.9"]


@pytest.mark.parametrize(("letters", "state"), [
    ("qw", RunState.SUBMITTED), ("hqw", RunState.SUBMITTED), ("Rq", RunState.SUBMITTED),
    ("t", RunState.RUNNING), ("r", RunState.RUNNING), ("Rr", RunState.RUNNING),
    ("dr", RunState.RUNNING), ("Eqw", RunState.FAILED),
])
def test_qstat_letters(letters: str, state: RunState) -> None:
    assert QstatTask("1.1", "n", letters).run_state() is state


def test_qstat_j_gives_the_working_directory() -> None:
    assert parse_job_dirs(golden("qstat_j.xml")) == {"4": ("del", "/tmp/sgex")}


def test_qacct_array_records_per_task() -> None:
    records = latest_records(parse_qacct(golden("qacct_array_exit3.txt")))
    assert sorted(records) == ["1.1", "1.2", "1.3"]
    failed = records["1.2"]
    assert (failed.name, failed.node, failed.failed, failed.exit_status) == \
        ("hpcorch-sw1-a0xdead", "vm", 0, 3)
    assert failed.limit("h_rt") == "600" and failed.limit("h_vmem") is None
    assert records["1.1"].exit_status == 0


def test_sizes_and_limits() -> None:
    assert parse_size("4.961MB") == pytest.approx(4.961e6)
    assert parse_size("0.000B") == 0.0 and parse_size("") is None
    assert limit_seconds("600") == 600 and limit_seconds("0:10:00") == 600
    assert limit_seconds("1:30") == 90 and limit_seconds(None) is None


def test_h_rt_is_a_timeout_with_its_reason() -> None:
    state, context = from_accounting(one("qacct_h_rt.txt"), spec(None), "")
    assert state is RunState.TIMEOUT
    assert context.exit_code == 137 and context.signal == 9 and context.node == "vm"
    assert context.reason.startswith("killed by Grid Engine at its run-time limit h_rt=3 s")


def test_h_vmem_kill_names_the_memory_limit() -> None:
    record = one("qacct_h_vmem_kill.txt")
    assert record.failed == 37 and record.limit("h_vmem") == "512M"
    state, context = from_accounting(record, spec(0.5), "")
    assert state is RunState.FAILED
    assert context.reason.startswith(
        "killed by Grid Engine for exceeding its memory limit of 0.5 GB (resources.mem_gb)")
    assert "maxvmem 524 MB" in context.reason


def test_rlimit_as_memory_error_is_explained_from_stderr() -> None:
    record = one("qacct_rlimit_as.txt")
    tail = "Traceback (most recent call last):\n  File \"<string>\", line 2\nMemoryError"
    state, context = from_accounting(record, spec(0.3), tail)
    assert state is RunState.FAILED and record.failed == 0 and context.exit_code == 1
    assert context.reason.startswith("ran out of memory under its Grid Engine memory limit "
                                     "of 0.3 GB (resources.mem_gb)")
    # without a memory limit, or without the error in stderr, the exit speaks for itself
    assert from_accounting(record, spec(None), tail)[1].reason == ""
    plain = FailureContext("sge", "1.1", exit_code=1, stderr_tail="ValueError: bad")
    assert explain_exit(plain, spec(0.5)).reason == ""


def test_qdel_is_cancelled() -> None:
    state, context = from_accounting(one("qacct_qdel.txt"), spec(None), "")
    assert state is RunState.CANCELLED and "qdel" in context.reason


def test_a_rescheduled_attempt_does_not_hide_the_last_one() -> None:
    text = golden("qacct_array_exit3.txt")
    first = text.split("=" * 62)[1]  # task 2's record
    rescheduled = first.replace("failed       0    ", "failed       25  : rescheduling")
    sep = "=" * 62
    for order in (sep + rescheduled + sep + first, sep + first + sep + rescheduled):
        assert latest_records(parse_qacct(order))["1.2"].failed == 0


class FakeSge:
    """Answers qstat/qacct from the golden files; counts calls."""

    def __init__(self, qstat: str, qacct: dict[str, str]) -> None:
        self.qstat, self.qacct, self.argvs = qstat, qacct, []  # type: ignore[var-annotated]

    def __call__(self, argv, **_):  # type: ignore[no-untyped-def]
        self.argvs.append(list(argv))
        if argv[0] == "qstat":
            return subprocess.CompletedProcess(argv, 0, self.qstat, "")
        if argv[0] == "qacct":
            text = self.qacct.get(argv[2])
            if text is None:
                return subprocess.CompletedProcess(argv, 1, "", f"error: job id {argv[2]} "
                                                   "not found\n")
            return subprocess.CompletedProcess(argv, 0, text, "")
        raise AssertionError(argv)


def test_status_is_one_qstat_plus_one_qacct_per_finished_array() -> None:
    fake = FakeSge(golden("qstat_running_pending.xml"), {"1": golden("qacct_array_exit3.txt")})
    provider = SgeProvider(SgeSettings(), runner=fake)
    handles = [RunHandle("sge", f"k{i}", j) for i, j in enumerate(("4.1", "4.3", "1.1", "1.2"))]
    states = [s.state for s in provider.status(handles)]
    assert states == [RunState.RUNNING, RunState.SUBMITTED, RunState.SUCCEEDED, RunState.FAILED]
    assert [a[0] for a in fake.argvs] == ["qstat", "qacct"]
    [failed] = provider.status(handles[3:])  # final records are kept: no new call
    assert failed.context is not None and failed.context.exit_code == 3
    assert [a[0] for a in fake.argvs] == ["qstat", "qacct"]


def test_a_job_nobody_knows_is_unknown() -> None:
    fake = FakeSge(golden("qstat_running_pending.xml"), {})
    [status] = SgeProvider(SgeSettings(), runner=fake).status([RunHandle("sge", "k", "99.1")])
    assert status.state is RunState.UNKNOWN


def test_error_reason_of_a_job_in_eqw() -> None:
    text = ("job_number:                 30\n"
            "error reason          1:      12/06/2026 21:20:23 [0:5503]: error: can't open "
            "/nonexistent/stdin as dummy input file\n"
            "scheduling info:            Job is in error state\n")
    assert error_reason(text) == "error: can't open /nonexistent/stdin as dummy input file"
    assert error_reason("job_number: 1\n") == ""
