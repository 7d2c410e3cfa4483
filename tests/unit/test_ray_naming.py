"""Ray provider, pure parts: submission ids, metadata, resources, state mapping, settings."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers.ray import naming
from hpcorch.spec import Resources, RunHandle, RunSpec, RunState


def spec(num: int = 0, key: str = "k" * 16, **res: object) -> RunSpec:
    return RunSpec(run_key=key, sweep_id="sw1", num=num, overrides=("lr=0.1", f"n={num}"),
                   config={}, seed=7, run_dir=f"/tmp/sweep/{num}",
                   command=("/venv/bin/python", "/app/train.py", "lr=0.1"),
                   resources=Resources(**res), workdir="/app")  # type: ignore[arg-type]


def test_import_hpcorch_ray_package_does_not_import_ray() -> None:
    import subprocess

    pytest.importorskip("ray")

    code = ("import sys, hpcorch, hpcorch.providers.ray; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_submission_ids_derive_from_run_keys() -> None:
    a, b = spec(0, "a" * 16), spec(1, "b" * 16)
    assert naming.batch_submission_id([a, b]) == naming.batch_submission_id([b, a])
    assert naming.batch_submission_id([a, b]) != naming.batch_submission_id([a])
    assert naming.batch_submission_id([a]).startswith("hpcorch-sw1-")
    assert naming.run_submission_id(a) == "hpcorch-" + "a" * 16


def test_attempts_number_after_earlier_ends() -> None:
    base = "hpcorch-x"
    assert naming.next_submission_id(base, []) == base
    assert naming.next_submission_id(base, [base, "hpcorch-other"]) == "hpcorch-x-r1"
    assert naming.next_submission_id(base, [base, "hpcorch-x-r1", "hpcorch-x-r3"]) == "hpcorch-x-r4"
    assert naming.attempts_of(base, ["hpcorch-x-r2", base, "hpcorch-xy", "hpcorch-x-r1"]) == [
        base, "hpcorch-x-r1", "hpcorch-x-r2"]


def test_job_ids_round_trip() -> None:
    assert naming.split_job_id(naming.task_job_id("hpcorch-a-b", 12)) == ("hpcorch-a-b", 12)
    assert naming.split_job_id("hpcorch-key") == ("hpcorch-key", None)
    assert naming.split_job_id("999999999") == ("999999999", None)


def test_metadata_carries_sweep_runs_and_overrides() -> None:
    specs = [spec(0, "a" * 16), spec(1, "b" * 16)]
    meta = naming.sweep_metadata(specs, "/tmp/batch.json", {"team": "vision", "n": 3})
    assert meta["hpcorch"] == "sweep" and meta["hpcorch_sweep_id"] == "sw1"
    assert meta["team"] == "vision" and meta["n"] == "3"
    assert json.loads(meta["hpcorch_runs"]) == [
        {"num": 0, "run_key": "a" * 16, "overrides": "lr=0.1 n=0"},
        {"num": 1, "run_key": "b" * 16, "overrides": "lr=0.1 n=1"}]
    one = naming.run_metadata(specs[1], {})
    assert one["hpcorch_run_num"] == "1" and one["hpcorch_run_key"] == "b" * 16
    assert one["hpcorch_overrides"] == "lr=0.1 n=1" and one["hpcorch_run_dir"] == "/tmp/sweep/1"
    assert all(isinstance(v, str) for v in {**meta, **one}.values())


def test_entrypoint_is_quoted_for_the_shell_ray_uses() -> None:
    text = naming.entrypoint("/opt/my python/bin/python", "batch", "/tmp/a b;rm -rf x.json")
    assert shlex.split(text) == ["/opt/my python/bin/python", "-m", "hpcorch.providers.ray.driver",
                                 "batch", "/tmp/a b;rm -rf x.json"]


def test_task_options_from_resources() -> None:
    opts = naming.task_options(spec(3, cpus=2, gpus=1, mem_gb=1.5))
    assert opts["name"] == "run-3-" + "k" * 12
    assert (opts["num_cpus"], opts["num_gpus"], opts["memory"]) == (2, 1, int(1.5 * 2**30))
    assert opts["max_retries"] == 0
    assert "memory" not in naming.task_options(spec())


def test_infeasible_reason_names_need_and_largest_node() -> None:
    nodes = [{"CPU": 2.0, "memory": 8.0 * 2**30}, {"CPU": 4.0, "GPU": 1.0}]
    assert naming.infeasible_reason(spec(cpus=4, gpus=1), nodes) == ""
    assert naming.infeasible_reason(spec(cpus=2, mem_gb=4), nodes) == ""
    reason = naming.infeasible_reason(spec(gpus=64), nodes)
    assert "64 GPU" in reason and "largest node has" in reason and "1 GPU" in reason
    assert "infeasible" in naming.infeasible_reason(spec(cpus=1), [])


HANDLE = RunHandle("ray", "k", "hpcorch-s-1#4")


@pytest.mark.parametrize(("job_status", "state"), [
    ("PENDING", RunState.SUBMITTED), ("RUNNING", RunState.SUBMITTED),
    ("STOPPED", RunState.CANCELLED), ("SUCCEEDED", RunState.FAILED), ("FAILED", RunState.FAILED)])
def test_sweep_run_without_outcome_follows_its_job(job_status: str, state: RunState) -> None:
    status = naming.task_run_status(HANDLE, {"status": job_status, "message": "m1\nm2"}, None, "")
    assert status.state is state
    if state is RunState.FAILED:
        assert status.context is not None
        assert "without running this run: m1" in status.context.reason


def test_sweep_run_outcome_wins_and_foreign_outcomes_are_ignored() -> None:
    job = {"status": "RUNNING"}
    mine = {"submission_id": "hpcorch-s-1", "state": "FAILED", "exit_code": 3, "node": "n7"}
    failed = naming.task_run_status(HANDLE, job, mine, "boom")
    assert failed.state is RunState.FAILED and failed.context is not None
    assert (failed.context.exit_code, failed.context.node, failed.context.stderr_tail,
            failed.context.job_id) == (3, "n7", "boom", HANDLE.job_id)
    other = {**mine, "submission_id": "hpcorch-s-0"}  # an earlier attempt's outcome
    assert naming.task_run_status(HANDLE, job, other, "").state is RunState.SUBMITTED
    ok = {**mine, "state": "SUCCEEDED"}
    done = naming.task_run_status(HANDLE, {"status": "SUCCEEDED"}, ok, "")
    assert done.state is RunState.SUCCEEDED
    assert naming.task_run_status(HANDLE, None, None, "").state is RunState.UNKNOWN


def test_running_run_of_an_ended_job() -> None:
    running = {"submission_id": "hpcorch-s-1", "state": "RUNNING", "node": "n1"}
    assert naming.task_run_status(HANDLE, {"status": "STOPPED"}, running, "").state \
        is RunState.CANCELLED
    lost = naming.task_run_status(HANDLE, {"status": "FAILED"}, running, "")
    assert lost.state is RunState.FAILED and lost.context is not None
    assert "while this run was running" in lost.context.reason


def test_one_run_job_mapping() -> None:
    handle = RunHandle("ray", "k", "hpcorch-k")
    pending = naming.job_run_status(handle, {"status": "PENDING"}, None, "")
    assert pending.state is RunState.SUBMITTED
    assert naming.job_run_status(handle, {"status": "RUNNING"}, None, "").state is RunState.RUNNING
    assert naming.job_run_status(handle, {"status": "SUCCEEDED"}, None, "").state \
        is RunState.SUCCEEDED
    failed = naming.job_run_status(
        handle, {"status": "FAILED", "driver_exit_code": 3, "driver_node_id": "abc",
                 "message": "Job entrypoint command failed with exit code 3, last logs:\n..."},
        None, "tail")
    assert failed.context is not None
    assert (failed.context.exit_code, failed.context.node) == (3, "abc")
    assert failed.context.reason == "Job entrypoint command failed with exit code 3, last logs:"
    assert naming.job_run_status(handle, None, None, "").state is RunState.UNKNOWN


# -- settings (need Ray's runtime_env fields) -----------------------------------------
def parse(**values: object):  # type: ignore[no-untyped-def]
    pytest.importorskip("ray")
    from hpcorch.providers import create_provider

    return create_provider({"name": "ray", **values})


def test_settings_defaults_and_registry() -> None:
    provider = parse()
    assert provider.name == "ray" and provider.settings.address is None
    assert provider.settings.mode == "sweep" and provider.poll_interval == 0.5


@pytest.mark.parametrize(("values", "key"), [
    ({"runtime_env": {"pipp": ["x"]}}, "provider.runtime_env.pipp"),
    ({"runtime_env": {"env_vars": {"A": 1}}}, "provider.runtime_env.env_vars.A"),
    ({"runtime_env": {"env_vars": {"PYTHONHASHSEED": "0"}}},
     "provider.runtime_env.env_vars.PYTHONHASHSEED"),
    ({"mode": "task"}, "provider.mode"),
    ({"address": "ftp://x"}, "provider.address"),
    ({"poll_interval": 2.0, "max_poll_interval": 1.0}, "provider.max_poll_interval"),
    ({"adress": "auto"}, "provider.adress"),
])
def test_settings_errors_name_key_value_and_allowed(values: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(**values)
    assert err.value.key == key
    assert err.value.allowed


def test_runtime_env_passes_through() -> None:
    provider = parse(runtime_env={"env_vars": {"A": "1"}, "excludes": ["data/"]})
    assert provider.settings.runtime_env["env_vars"] == {"A": "1"}


def test_unreachable_address_fails_fast_with_a_hint(tmp_path: Path) -> None:
    from hpcorch.errors import ProviderUnavailable

    provider = parse(address="http://127.0.0.1:9", connect_timeout=5.0)
    with pytest.raises(ProviderUnavailable) as err:
        provider.check()
    text = str(err.value)
    assert "http://127.0.0.1:9" in text and "scripts/ray-up.sh" in text
    assert "ray start --head" in text


def test_multi_rank_runs_are_refused(tmp_path: Path) -> None:
    provider = parse(address="http://127.0.0.1:9")
    with pytest.raises(ConfigError) as err:
        provider.render([spec(nodes=2, tasks=2)])
    assert err.value.key == "resources.tasks"


def test_render_names_every_run_and_its_task() -> None:
    provider = parse(address="http://127.0.0.1:8265")
    text = provider.render([spec(0, "a" * 16), spec(1, "b" * 16, gpus=1)])
    assert "run-0-aaaaaaaaaaaa" in text and "run-1-bbbbbbbbbbbb" in text
    assert '"num_gpus": 1' in text and "hpcorch.providers.ray.driver batch" in text
    jobs = parse(address="auto", mode="job").render([spec(0, "a" * 16, cpus=2)])
    assert "hpcorch-" + "a" * 16 in jobs and '"entrypoint_num_cpus": 2' in jobs
