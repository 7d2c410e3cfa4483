"""The retry policy and the submission queue, against the fake provider: escalation by
failure class, budgets, limits, batching by shape, backoff, priority and max_parallel."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError, TransientSubmitError
from hpcorch.orchestrate.retry import backoff_delay, classify, decide, policy_dict
from hpcorch.orchestrate.sweep import Orchestrator
from hpcorch.settings import RetrySettings
from hpcorch.spec import (
    FailureClass,
    FailureContext,
    ResourceLimits,
    Resources,
    RunHandle,
    RunSpec,
    RunState,
    RunStatus,
)
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo, ledger_path, read_events
from hpcorch.store.records import ErrorInfo, RunRecord, meta_dir, read_json, read_record
from hpcorch.testing import FakeProvider, contract_spec

DEFAULT = policy_dict(RetrySettings())


def _spec(tmp_path: Path, num: int = 0, *, retry: dict | None = None,  # type: ignore[type-arg]
          **resources: object) -> RunSpec:
    spec = contract_spec(tmp_path, num)
    return dataclasses.replace(spec, resources=Resources(**resources),  # type: ignore[arg-type]
                               retry=DEFAULT if retry is None else retry)


def _failed(spec: RunSpec, kind: FailureClass | None, *, peak: float | None = None,
            error: ErrorInfo | None = None, state: RunState = RunState.FAILED) -> RunRecord:
    return RunRecord(run_key=spec.run_key, sweep_id=spec.sweep_id, num=spec.num, state=state,
                     run_dir=spec.run_dir, error=error, attempt=spec.attempt,
                     retry=spec.retry, resources=dataclasses.asdict(spec.resources),
                     failure=FailureContext("fake", failure_class=kind, peak_mem_gb=peak))


# -- the policy -------------------------------------------------------------------
@pytest.mark.parametrize(("mem", "peak", "limit", "expected"), [
    (0.25, None, None, 0.5),      # 2x the request
    (0.25, 0.6, None, 0.75),      # 1.25x the measured peak is more
    (0.25, 0.6, 0.3, 0.3),        # clamped to what the partition allows
    (None, 0.5, None, 1.0),       # no request: from the peak
    (0.25, 0.61, None, 0.7626953125),  # rounded up to whole MiB (1.25 x 0.61 GiB)
])
def test_memory_kill_raises_only_memory(tmp_path: Path, mem: float | None, peak: float | None,
                                        limit: float | None, expected: float) -> None:
    spec = _spec(tmp_path, mem_gb=mem, time_min=7, cpus=2)
    limits = ResourceLimits("partition debug", max_mem_gb=limit) if limit else None
    decision = decide(spec, _failed(spec, FailureClass.OOM, peak=peak), limits)
    assert decision.retry is not None, decision
    assert decision.retry.resources == dataclasses.replace(spec.resources, mem_gb=expected)
    assert decision.retry.attempt == 1
    assert decision.retry.retry["retried_for"] == "OOM"
    assert decision.retry.retry["used"] == {"memory": 1}


def test_memory_kill_at_the_limit_or_out_of_budget_is_not_retried(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mem_gb=4.0)
    at_limit = decide(spec, _failed(spec, FailureClass.OOM),
                      ResourceLimits("partition debug", max_mem_gb=4.0))
    assert at_limit.retry is None and "the most partition debug allows" in at_limit.why
    used = dataclasses.replace(spec, retry={**DEFAULT, "used": {"memory": 1}})
    spent = decide(used, _failed(used, FailureClass.OOM), None)
    assert spent.retry is None and "hpcorch.retry.memory=1, used 1" in spent.why
    unknown = _spec(tmp_path, mem_gb=None)
    assert decide(unknown, _failed(unknown, FailureClass.OOM), None).retry is None


def test_time_limit_raises_only_time_within_the_partition(tmp_path: Path) -> None:
    spec = _spec(tmp_path, time_min=2, mem_gb=1.0)
    decision = decide(spec, _failed(spec, FailureClass.TIMEOUT, state=RunState.TIMEOUT), None)
    assert decision.retry is not None
    assert decision.retry.resources == dataclasses.replace(spec.resources, time_min=4)
    clamped = decide(spec, _failed(spec, FailureClass.TIMEOUT),
                     ResourceLimits("partition debug", max_time_min=3))
    assert clamped.retry is not None and clamped.retry.resources.time_min == 3


def test_preemption_has_its_own_budget_and_keeps_the_resources(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mem_gb=1.0, retry={**DEFAULT, "used": {"memory": 1}})
    decision = decide(spec, _failed(spec, FailureClass.NODE_FAIL), None)
    assert decision.retry is not None and decision.retry.resources == spec.resources
    assert decision.retry.retry["used"] == {"memory": 1, "preempted": 1}


def test_app_errors_are_retried_only_when_asked(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    error = ErrorInfo("ValueError", "bad lr")
    assert classify(_failed(spec, None, error=error)) is FailureClass.APP_ERROR
    assert decide(spec, _failed(spec, None, error=error), None).retry is None
    asked = dataclasses.replace(spec, retry=policy_dict(RetrySettings(app_error=2)))
    assert decide(asked, _failed(asked, None, error=error), None).retry is not None
    assert classify(_failed(spec, None, error=ErrorInfo("MemoryError", ""))) is FailureClass.OOM
    assert decide(spec, _failed(spec, FailureClass.CANCELLED), None).retry is None


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetrySettings(backoff_s=1.0, backoff_max_s=5.0)
    rng = random.Random(7)
    for tries, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = [backoff_delay(tries, policy, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2  # the whole range


def test_retry_settings_are_validated() -> None:
    from hpcorch.settings import HpcorchSettings, parse_settings

    with pytest.raises(ConfigError, match=r"hpcorch.retry.memory_factor=1.0: must be > 1"):
        parse_settings(HpcorchSettings, {"retry": {"memory_factor": 1.0}}, "hpcorch")
    with pytest.raises(ConfigError, match=r"hpcorch.max_parallel=0"):
        parse_settings(HpcorchSettings, {"max_parallel": 0}, "hpcorch")


# -- the orchestrator ---------------------------------------------------------------
class _MemoryHungry(FakeProvider):
    """Runs need 0.4 GiB: one asked less fails OOM (peak 0.3 GiB, as sacct would say)."""

    def __init__(self, limits: ResourceLimits | None = None) -> None:
        super().__init__()
        self.batches: list[list[RunSpec]] = []
        self._limits = limits

    def limits(self, resources: Resources) -> ResourceLimits | None:
        return self._limits

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        self.batches.append(list(runs))
        return super().submit(runs)

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        out = []
        for st in super().status(handles):
            spec = self._specs[st.handle.job_id]
            if st.state is RunState.SUCCEEDED and (spec.resources.mem_gb or 0) < 0.4:
                self._state[st.handle.job_id] = RunState.FAILED
                st = RunStatus(st.handle, RunState.FAILED, FailureContext(
                    self.name, job_id=st.handle.job_id, reason="killed for memory",
                    failure_class=FailureClass.OOM, peak_mem_gb=0.3))
            out.append(st)
        return out


def _info(tmp_path: Path, specs: Sequence[RunSpec], **kw: object) -> SweepInfo:
    return SweepInfo(sweep_id="contract", sweep_dir=str(tmp_path / "sweep"), provider="fake",
                     created=0.0, specs=tuple(specs), **kw)  # type: ignore[arg-type]


def test_a_memory_kill_is_retried_with_more_memory_keeping_both_attempts(
        tmp_path: Path) -> None:
    specs = [_spec(tmp_path, n, mem_gb=m) for n, m in enumerate((0.25, 0.25, 1.0, 0.125))]
    provider = _MemoryHungry()
    orch = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off")
    records = orch.run(_info(tmp_path, specs), specs)
    # Attempt 2 of 0.125 GiB asks 0.375 (1.25 x the 0.3 peak) and fails again: budget spent.
    assert [r.state for r in records] == [RunState.FAILED] * 4  # fake jobs write no record
    assert [len(b) for b in provider.batches] == [4, 3]  # the retries in one batch
    retried = provider.batches[1]
    assert sorted((s.num, s.resources.mem_gb, s.attempt) for s in retried) == [
        (0, 0.5, 1), (1, 0.5, 1), (3, 0.375, 1)]
    # The first attempt's record is kept beside the second's.
    first = read_json(meta_dir(specs[0].run_dir) / "record.attempt-0.json")
    assert first["attempt"] == 0 and first["resources"]["mem_gb"] == 0.25
    assert first["failure"]["failure_class"] == "OOM"
    last = read_record(specs[0].run_dir)
    assert last is not None and last.attempt == 1 and last.resources["mem_gb"] == 0.5
    assert last.retry["retried_for"] == "OOM"
    events = [e for e in read_events(tmp_path / "sweep") if e["event"] == "retry"]
    assert sorted(e["num"] for e in events) == [0, 1, 3]


def test_retries_are_batched_by_resource_shape_and_clamped(tmp_path: Path) -> None:
    specs = [_spec(tmp_path, n, mem_gb=0.25 if n % 2 else 0.3) for n in range(6)]
    provider = _MemoryHungry(ResourceLimits("partition debug", max_mem_gb=0.45))
    Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off").run(
        _info(tmp_path, specs), specs)
    assert [len(b) for b in provider.batches] == [6, 6]
    assert {s.resources.mem_gb for s in provider.batches[1]} == {0.45}  # 0.5 / 0.6 clamped


def test_a_run_that_can_never_fit_is_refused_before_any_submission(tmp_path: Path) -> None:
    specs = [_spec(tmp_path, 0, mem_gb=64.0)]
    provider = _MemoryHungry(ResourceLimits("partition debug", max_mem_gb=23.5))
    orch = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off")
    with pytest.raises(ConfigError, match=r"resources.mem_gb=64.0: partition debug allows "
                                          r"at most 23.5 GiB per node"):
        orch.run(_info(tmp_path, specs), specs)
    assert provider.batches == [] and not ledger_path(tmp_path / "sweep").exists()


class _Flaky(FakeProvider):
    """Refuses the first `refusals` submissions transiently (as a timed-out sbatch)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.tries = 0

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        self.tries += 1
        if self.tries <= self.refusals:
            raise TransientSubmitError("fake", "submitting failed", argv=["sbatch"],
                                       stderr_tail="Socket timed out on send/recv operation")
        return super().submit(runs)


def test_transient_refusals_are_tried_again_with_bounded_delays(tmp_path: Path) -> None:
    policy = policy_dict(RetrySettings(backoff_s=0.05, backoff_max_s=0.08))
    specs = [dataclasses.replace(contract_spec(tmp_path, n), retry=policy) for n in range(3)]
    provider = _Flaky(refusals=2)
    records = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off").run(
        _info(tmp_path, specs), specs)
    assert provider.tries == 3 and len(provider.submitted) == 3
    assert all(r.failure and "wrote no run record" in r.failure.reason for r in records)
    delays = [e for e in read_events(tmp_path / "sweep") if e["event"] == "submit_retry"]
    assert len(delays) == 2
    assert [run["try"] for run in delays[1]["runs"]] == [3, 3, 3]
    bounds = (0.05, 0.08)
    for event, cap in zip(delays, bounds, strict=True):
        assert "Socket timed out" in event["reason"]
        assert all(0 <= run["delay_s"] <= cap for run in event["runs"])


def test_refused_more_often_than_allowed_fails_saying_so(tmp_path: Path) -> None:
    policy = policy_dict(RetrySettings(submit=1, backoff_s=0.01, backoff_max_s=0.01))
    specs = [dataclasses.replace(contract_spec(tmp_path, 0), retry=policy)]
    [record] = Orchestrator(_Flaky(refusals=5), StoreIndex(tmp_path / "h"),
                            progress="off").run(_info(tmp_path, specs), specs)
    assert record.state is RunState.FAILED and record.failure is not None
    assert record.failure.failure_class is FailureClass.SUBMIT_TRANSIENT
    assert "refused 2 times (hpcorch.retry.submit=1)" in record.failure.reason


class _Counting(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.most_open = 0

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        out = super().status(handles)
        self.most_open = max(self.most_open, sum(not s.state.terminal for s in out))
        return out


def test_priority_orders_submission_and_max_parallel_caps_runs_in_flight(
        tmp_path: Path) -> None:
    priorities = [3, 1, 5, 0, 4, 2]
    specs = [dataclasses.replace(contract_spec(tmp_path, n), priority=p, retry=DEFAULT)
             for n, p in enumerate(priorities)]
    provider = _Counting()
    Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off", max_parallel=2).run(
        _info(tmp_path, specs), specs)
    assert [s.priority for s in provider.submitted] == sorted(priorities, reverse=True)
    assert provider.most_open == 2 and provider.calls["submit"] >= 3
