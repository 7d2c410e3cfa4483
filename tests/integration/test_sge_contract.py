"""provider=sge against the real local Grid Engine: the conformance suite and its SGE specifics.

Needs scripts/sge-up.sh, and the tests running inside its network namespace
(`scripts/in-netns.sh python -m pytest ...`).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.providers.sge import SgeProvider, SgeSettings
from hpcorch.providers.sge.task import read_task_state
from hpcorch.spec import RunHandle, RunState
from hpcorch.testing import ProviderContract, contract_spec, wait_state, wait_terminal
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.sge]

FAST = SgeSettings(query_interval=0.5, max_query_interval=3.0)
HOW = "run scripts/sge-up.sh, then the tests inside scripts/in-netns.sh"
_AVAILABLE: list[bool] = []


def sge_available() -> bool:
    """sge_qmaster answers and the queue instance is usable (not in an alarm state)."""
    try:
        done = subprocess.run(["qstat", "-f", "-q", "all.q"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and any(
        line.startswith("all.q@") and line.split()[-1] == "lx-amd64"
        for line in done.stdout.splitlines())


def require_sge() -> None:
    """Skip (developer machine) or fail (CI=true) when the local Grid Engine is not reachable."""
    if not _AVAILABLE:
        _AVAILABLE.append(sge_available())
    require_service(_AVAILABLE[0], "Grid Engine", HOW)


@pytest.fixture(autouse=True)
def _needs_sge() -> None:
    require_sge()


class TestSgeContract(ProviderContract):
    timeout = 120.0

    @pytest.fixture
    def provider(self):  # type: ignore[no-untyped-def]
        provider = SgeProvider(FAST)
        yield provider
        provider.close()


def test_failure_names_task_node_exit_and_stderr(tmp_path: Path) -> None:
    provider = SgeProvider(FAST)
    handles = provider.submit([contract_spec(tmp_path, 0), contract_spec(tmp_path, 1, "fail")])
    statuses = wait_terminal(provider, handles, 120)
    assert [s.state for s in statuses] == [RunState.SUCCEEDED, RunState.FAILED]
    number = handles[0].job_id.split(".")[0]
    assert [h.job_id for h in handles] == [f"{number}.1", f"{number}.2"]  # one array
    context = statuses[1].context
    assert context is not None and context.job_id == f"{number}.2"
    assert context.node and context.exit_code == 3
    assert "contract run failing" in context.stderr_tail
    assert f"job={number}.2" in context.one_line() and "exit=3" in context.one_line()


def test_a_new_process_finds_follows_and_cancels_the_jobs(tmp_path: Path) -> None:
    """What `hpcorch wait/resume` rely on: lookup + status from qstat and the map file; a
    task deleted while pending (throttle 1) ends CANCELLED too, with no accounting record."""
    first = SgeProvider(dataclasses.replace(FAST, array_throttle=1))
    specs = [contract_spec(tmp_path, i, "hang") for i in range(2)]
    handles = first.submit(specs)
    wait_state(first, handles[0], RunState.RUNNING, 120)
    fresh = SgeProvider(FAST)
    found = fresh.lookup([s.run_key for s in specs] + ["not-a-key"])
    assert found == handles
    assert [s.state for s in fresh.status(found)] == [RunState.RUNNING, RunState.SUBMITTED]
    fresh.cancel(found)
    statuses = wait_terminal(fresh, handles, 120)
    assert [s.state for s in statuses] == [RunState.CANCELLED] * 2
    assert statuses[0].context is not None and "qdel" in statuses[0].context.reason
    assert SgeProvider(FAST).lookup([s.run_key for s in specs]) == []  # only open jobs
    fresh.cancel([RunHandle("sge", "gone", "999999999.1")])  # unknown: not an error


def test_status_of_many_runs_is_few_scheduler_calls(tmp_path: Path) -> None:
    provider = SgeProvider(dataclasses.replace(FAST, pack=2))
    specs = [contract_spec(tmp_path, i) for i in range(4)]
    handles = provider.submit(specs)
    assert provider.calls == {"qsub": 1}
    statuses = wait_terminal(provider, handles, 120)
    assert [s.state for s in statuses] == [RunState.SUCCEEDED] * 4
    assert len({h.job_id for h in handles}) == 2  # 4 runs packed into 2 array tasks
    assert provider.calls.get("qacct", 0) == 0, provider.calls  # the files said it all


def test_a_job_in_error_state_fails_with_the_reason_and_is_deleted(tmp_path: Path) -> None:
    """A job that cannot start (here: its stdin file is missing) sits in Eqw for good."""
    provider = SgeProvider(dataclasses.replace(FAST, qsub_args=("-i", "/nonexistent/stdin")))
    [handle] = provider.submit([contract_spec(tmp_path, 0)])
    [status] = wait_terminal(provider, [handle], 120)
    assert status.state is RunState.FAILED
    assert status.context is not None
    assert "error state Eqw" in status.context.reason
    assert "/nonexistent/stdin" in status.context.reason  # qstat -j's error reason
    number = handle.job_id.split(".")[0]
    done = subprocess.run(["qstat", "-j", number], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode != 0  # deleted, not left waiting in the queue


def test_a_rescheduled_task_runs_again_and_succeeds(tmp_path: Path) -> None:
    """`qmod -rj` (what Grid Engine does when a host goes down): the task starts again."""
    provider = SgeProvider(FAST)
    marker = tmp_path / "starts"
    code = (f"import time; open({str(marker)!r}, 'a').write('x'); "
            "time.sleep(4 if len(open(%r).read()) == 1 else 0)" % str(marker))
    spec = dataclasses.replace(contract_spec(tmp_path, 0), command=(sys.executable, "-c", code))
    [handle] = provider.submit([spec])
    wait_state(provider, handle, RunState.RUNNING, 120)
    done = subprocess.run(["qmod", "-rj", handle.job_id], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0 and "not rerunable" not in done.stdout + done.stderr, done
    [status] = wait_terminal(provider, [handle], 120)
    assert status.state is RunState.SUCCEEDED
    assert marker.read_text() == "xx"  # started twice
    state = read_task_state(spec.run_dir)
    assert state is not None and state.restart == 1 and state.job_id == handle.job_id
