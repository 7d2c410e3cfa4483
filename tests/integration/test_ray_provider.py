"""The Ray provider against the real local Ray head: contract, cancel, failures, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpcorch.providers import create_provider
from hpcorch.providers.ray import RayProvider, execute
from hpcorch.spec import Resources, RunState
from hpcorch.testing import ProviderContract, contract_spec, wait_state, wait_terminal
from tests.integration.ray_support import ray_url, wait_until  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def make(url: str, **values: object) -> RayProvider:
    provider = create_provider({"name": "ray", "address": url, **values})
    assert isinstance(provider, RayProvider)
    return provider


class TestRaySweepContract(ProviderContract):
    """mode=sweep: one Ray job per batch, a named task per run."""

    @pytest.fixture
    def provider(self, ray_url: str):  # type: ignore[no-untyped-def]  # noqa: F811
        provider = make(ray_url)
        yield provider
        provider.close()


class TestRayJobContract(ProviderContract):
    """mode=job: a Ray job per run."""

    @pytest.fixture
    def provider(self, ray_url: str):  # type: ignore[no-untyped-def]  # noqa: F811
        provider = make(ray_url, mode="job")
        yield provider
        provider.close()


def test_failed_run_names_job_node_exit_and_log_tail(ray_url: str, tmp_path: Path) -> None:  # noqa: F811
    provider = make(ray_url)
    [handle] = provider.submit([contract_spec(tmp_path, 0, "fail")])
    [status] = wait_terminal(provider, [handle])
    ctx = status.context
    assert status.state is RunState.FAILED and ctx is not None
    assert ctx.job_id == handle.job_id and handle.job_id.startswith("hpcorch-contract-")
    assert ctx.node and ctx.exit_code == 3 and "contract run failing" in ctx.stderr_tail
    assert f"job={handle.job_id}" in ctx.one_line()


def test_cancel_one_run_of_a_sweep_job_keeps_the_others(ray_url: str, tmp_path: Path) -> None:  # noqa: F811
    provider = make(ray_url)
    specs = [contract_spec(tmp_path, 0, "hang"), contract_spec(tmp_path, 1, "hang")]
    specs[1] = dataclasses.replace(specs[1], run_key="contract0001hang-b")
    handles = provider.submit(specs)
    try:
        for handle in handles:
            wait_state(provider, handle, RunState.RUNNING)
        provider.cancel([handles[0]])
        wait_until(lambda: provider.status([handles[0]])[0].state is RunState.CANCELLED,
                   what="the cancelled run ends")
        assert provider.status([handles[1]])[0].state is RunState.RUNNING
        provider.cancel([handles[1]])  # the last open run: the whole job is stopped
        [last] = wait_terminal(provider, [handles[1]])
        assert last.state is RunState.CANCELLED
    finally:
        provider.cancel(handles)


def test_resubmission_is_idempotent_and_lookup_finds_open_runs(ray_url: str,  # noqa: F811
                                                               tmp_path: Path) -> None:
    provider = make(ray_url)
    spec = contract_spec(tmp_path, 0, "hang")
    [first] = provider.submit([spec])
    try:
        [again] = provider.submit([spec])
        assert again == first  # still running: the same job, not a second one
        fresh = make(ray_url)  # a new orchestrator after a crash
        assert fresh.lookup([spec.run_key]) == [first]
        wait_state(fresh, first, RunState.RUNNING)
    finally:
        provider.cancel([first])
    wait_terminal(provider, [first])
    [third] = provider.submit([spec])  # ended: a new attempt gets a new id
    try:
        assert third.job_id != first.job_id and "-r" in third.job_id
    finally:
        provider.cancel([third])


@pytest.mark.parametrize("mode", ["sweep", "job"])
def test_unsatisfiable_resources_fail_at_once(ray_url: str, tmp_path: Path, mode: str) -> None:  # noqa: F811
    provider = make(ray_url, mode=mode)
    spec = dataclasses.replace(contract_spec(tmp_path, 0), resources=Resources(gpus=64))
    [handle] = provider.submit([spec])
    [status] = provider.status([handle])
    assert status.state is RunState.FAILED and status.context is not None
    assert "64 GPU" in status.context.reason and "infeasible" in status.context.reason


def test_sweep_driver_refuses_infeasible_runs_itself(ray_url: str, tmp_path: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the cluster shrinks after submission, the driver never leaves a run pending."""
    from hpcorch.providers.ray import naming

    spec = dataclasses.replace(contract_spec(tmp_path, 0), resources=Resources(cpus=4096))
    provider = make(ray_url)
    # Bypass the submit-time check to reach the driver's own.
    from hpcorch.providers.ray import cluster

    monkeypatch.setattr(cluster, "node_resources", lambda *a, **k: [{"CPU": 1e9}])
    [handle] = provider.submit([spec])
    [status] = wait_terminal(provider, [handle])
    assert status.state is RunState.FAILED and status.context is not None
    assert "4096 CPU" in status.context.reason
    outcome = execute.read_outcome(spec.run_dir)
    assert outcome is not None and outcome["submission_id"] == naming.split_job_id(handle.job_id)[0]
