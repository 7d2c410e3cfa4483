"""provider=slurm against the real local Slurm: the conformance suite and its Slurm specifics."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from hpcorch.providers.slurm import SlurmProvider, SlurmSettings
from hpcorch.spec import RunHandle, RunState
from hpcorch.testing import ProviderContract, contract_spec, wait_state, wait_terminal
from tests.integration.slurm_support import require_slurm

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FAST = SlurmSettings(query_interval=1.0, max_query_interval=5.0, max_requeues=0)


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


class TestSlurmContract(ProviderContract):
    timeout = 180.0

    @pytest.fixture
    def provider(self):  # type: ignore[no-untyped-def]
        provider = SlurmProvider(FAST)
        yield provider
        provider.close()


def test_failure_names_array_task_node_exit_and_stderr(tmp_path: Path) -> None:
    provider = SlurmProvider(FAST)
    handles = provider.submit([contract_spec(tmp_path, 0), contract_spec(tmp_path, 1, "fail")])
    statuses = wait_terminal(provider, handles, 180)
    assert [s.state for s in statuses] == [RunState.SUCCEEDED, RunState.FAILED]
    context = statuses[1].context
    assert context is not None
    array_id = handles[0].job_id.split("_")[0]
    assert context.job_id == f"{array_id}_1" and handles[1].job_id == context.job_id
    assert context.node and context.exit_code == 3
    assert "contract run failing" in context.stderr_tail
    line = context.one_line()
    assert f"job={array_id}_1" in line and f"node={context.node}" in line and "exit=3" in line


def test_cancelled_while_pending_and_scancel_of_gone_jobs(tmp_path: Path) -> None:
    """A throttled array: the pending tail is cancelled too, and cancelling again is fine."""
    provider = SlurmProvider(dataclasses.replace(FAST, array_throttle=1))
    handles = provider.submit([contract_spec(tmp_path, i, "hang") for i in range(3)])
    wait_state(provider, handles[0], RunState.RUNNING, 120)
    assert provider.status(handles[2:])[0].state is RunState.SUBMITTED
    provider.cancel(handles)
    statuses = wait_terminal(provider, handles, 120)
    assert [s.state for s in statuses] == [RunState.CANCELLED] * 3
    provider.cancel(handles)
    provider.cancel([RunHandle("slurm", "gone", "999999999")])


def test_a_new_process_finds_and_follows_the_jobs(tmp_path: Path) -> None:
    """What `hpcorch wait/resume` rely on: lookup + status from Slurm's metadata and the map."""
    first = SlurmProvider(FAST)
    specs = [contract_spec(tmp_path, i, "hang") for i in range(2)]
    handles = first.submit(specs)
    try:
        for handle in handles:  # array tasks need not start in index order
            wait_state(first, handle, RunState.RUNNING, 120)
        fresh = SlurmProvider(FAST)
        found = fresh.lookup([s.run_key for s in specs] + ["not-a-key"])
        assert found == handles
        assert [s.state for s in fresh.status(found)] == [RunState.RUNNING] * 2
    finally:
        first.cancel(handles)
    again = SlurmProvider(FAST)
    statuses = wait_terminal(again, handles, 120)
    assert [s.state for s in statuses] == [RunState.CANCELLED] * 2
    assert all(s.context and s.context.node for s in statuses)
    assert SlurmProvider(FAST).lookup([s.run_key for s in specs]) == []  # only open jobs


def test_status_of_many_runs_is_one_scheduler_call(tmp_path: Path) -> None:
    provider = SlurmProvider(dataclasses.replace(FAST, pack=4))
    specs = [contract_spec(tmp_path, i) for i in range(8)]
    handles = provider.submit(specs)
    assert provider.calls == {"scontrol": 1, "sbatch": 1}
    wait_terminal(provider, handles, 180)
    queries = provider.calls.get("sacct", 0) + provider.calls.get("squeue", 0)
    assert queries <= 3, provider.calls  # the task-state files answer first
    assert len({h.job_id for h in handles}) == 2  # 8 runs packed into 2 array tasks
    array = handles[0].job_id.split("_")[0]
    tasks = subprocess.run(["squeue", "-h", "-t", "all", "-r", "-j", array, "-o", "%i"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sorted(tasks) == sorted({h.job_id for h in handles})
