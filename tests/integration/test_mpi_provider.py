"""provider=mpi against the real Open MPI: the conformance suite, placement and queueing."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hpcorch.providers.mpi import MpiProvider, MpiSettings
from hpcorch.spec import Resources, RunState
from hpcorch.testing import ProviderContract, contract_spec, wait_state, wait_terminal
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.mpi]


@pytest.fixture(autouse=True)
def _needs_mpirun() -> None:
    require_service(shutil.which("mpirun") is not None, "Open MPI (mpirun)",
                    "run scripts/mpi-up.sh")


class TestMpiContract(ProviderContract):
    timeout = 120.0

    @pytest.fixture
    def provider(self):  # type: ignore[no-untyped-def]
        provider = MpiProvider(MpiSettings(hosts=("localhost:2",)))
        yield provider
        provider.close()


def test_runs_share_slots_and_queue_in_order(tmp_path: Path) -> None:
    """Two 2-rank runs fit on localhost:4 at once; the third waits for a free pair of slots."""
    provider = MpiProvider(MpiSettings(hosts=("localhost:4",)))
    two = Resources(tasks=2)
    specs = [dataclasses.replace(contract_spec(tmp_path, i, "hang"), resources=two)
             for i in range(3)]
    try:
        handles = provider.submit(specs)
        for handle in handles[:2]:
            wait_state(provider, handle, RunState.RUNNING)
        assert provider.status(handles)[2].state is RunState.SUBMITTED
        provider.cancel(handles[:1])
        wait_state(provider, handles[2], RunState.RUNNING)  # took the freed slots
        assert provider.status(handles)[1].state is RunState.RUNNING
    finally:
        provider.close()
    statuses = wait_terminal(provider, handles)
    assert [s.state for s in statuses] == [RunState.CANCELLED] * 3


def test_multi_rank_failure_names_the_rank(tmp_path: Path) -> None:
    """A rank that exits non-zero fails the run; the context names it and keeps its stderr."""
    provider = MpiProvider(MpiSettings(hosts=("localhost:2",)))
    spec = contract_spec(tmp_path, 0)
    script = ("import os, sys\nr = int(os.environ['OMPI_COMM_WORLD_RANK'])\n"
              "print(f'rank {r} says bye', file=sys.stderr)\nsys.exit(7 if r == 1 else 0)\n")
    spec = dataclasses.replace(spec, resources=Resources(tasks=2),
                               command=(spec.command[0], "-c", script))
    try:
        [status] = wait_terminal(provider, provider.submit([spec]))
    finally:
        provider.close()
    assert status.state is RunState.FAILED
    context = status.context
    assert context is not None and context.exit_code == 7
    assert context.reason.startswith("rank 1 of 2 on localhost exited 7")
    assert "rank 1 says bye" in context.stderr_tail
    assert "rank 0 says bye" not in context.stderr_tail
