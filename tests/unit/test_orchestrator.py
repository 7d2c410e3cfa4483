"""The orchestrator against the fake provider: plan, watch, records, interruption."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpcorch.orchestrate.sweep import Orchestrator, SweepInterrupted
from hpcorch.spec import RunState
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo
from hpcorch.store.records import RunRecord, read_record, write_record
from hpcorch.testing import FakeProvider, contract_spec


def _info(tmp_path: Path, specs: list) -> SweepInfo:  # type: ignore[type-arg]
    return SweepInfo(
        sweep_id="contract",
        sweep_dir=str(tmp_path / "sweep"),
        provider="fake",
        created=0.0,
        specs=tuple(specs),
    )


def _ok(spec) -> RunRecord:  # type: ignore[no-untyped-def]
    return RunRecord(
        run_key=spec.run_key,
        sweep_id=spec.sweep_id,
        num=spec.num,
        state=RunState.SUCCEEDED,
        run_dir=spec.run_dir,
        metrics={"m": 1.0},
    )


def test_runs_without_records_are_failed_with_a_reason(tmp_path: Path) -> None:
    specs = [contract_spec(tmp_path, 0), contract_spec(tmp_path, 1, "fail")]
    orch = Orchestrator(FakeProvider(), StoreIndex(tmp_path / "h"), progress="off")
    records = orch.run(_info(tmp_path, specs), specs)
    assert [r.state for r in records] == [RunState.FAILED, RunState.FAILED]
    assert "wrote no run record" in records[0].failure.reason  # type: ignore[union-attr]
    assert records[1].failure is not None and records[1].failure.exit_code == 3
    assert read_record(specs[1].run_dir) == records[1]  # written to disk, atomically


class _JobWritesRecord(FakeProvider):
    """A job that writes its record as soon as it is submitted."""

    def submit(self, runs):  # type: ignore[no-untyped-def]
        handles = super().submit(runs)
        for spec in runs:
            write_record(dataclasses.replace(_ok(spec), metrics={"m": 2.0}))
        return handles


def test_record_written_by_the_job_wins(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    provider = _JobWritesRecord()
    [record] = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off").run(
        _info(tmp_path, [spec]), [spec]
    )
    assert record.state is RunState.SUCCEEDED and record.metrics == {"m": 2.0}
    assert record.provider == "fake" and record.job_id == "fake-0"
    assert provider.calls["status"] == 0  # the record file answered; the engine was not asked


def test_succeeded_runs_are_skipped_unless_rerun(tmp_path: Path) -> None:
    index = StoreIndex(tmp_path / "h")
    first = contract_spec(tmp_path / "a", 0)
    write_record(_ok(first))
    index.put_records([_ok(first)])
    again = contract_spec(tmp_path / "b", 0)  # same run key, another sweep directory
    provider = FakeProvider()
    [record] = Orchestrator(provider, index, progress="off").run(_info(tmp_path, [again]), [again])
    assert record.state is RunState.SKIPPED and record.reused_from == first.run_dir
    assert provider.submitted == []
    provider = FakeProvider()
    Orchestrator(provider, index, rerun=True, progress="off").run(_info(tmp_path, [again]), [again])
    assert [s.run_key for s in provider.submitted] == [again.run_key]


def test_interrupt_cancels_and_records_open_runs(tmp_path: Path) -> None:
    specs = [contract_spec(tmp_path, i, "hang") for i in range(2)]
    provider = FakeProvider()
    calls = {"n": 0}

    def sleep(_: float) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("SIGTERM")

    index = StoreIndex(tmp_path / "h")
    with pytest.raises(SweepInterrupted, match="2 open run"):
        Orchestrator(provider, index, progress="off", sleep=sleep).run(
            _info(tmp_path, specs), specs
        )
    assert provider.calls["cancel"] == 1
    for spec in specs:
        record = read_record(spec.run_dir)
        assert record is not None and record.state is RunState.CANCELLED
        assert "interrupted" in record.failure.reason  # type: ignore[union-attr]
    assert [r.state for r in index.runs("contract")] == [RunState.CANCELLED] * 2


def test_a_finished_record_in_the_run_dir_is_not_run_again(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    write_record(_ok(spec))  # e.g. the orchestrator died before it indexed this run
    provider = FakeProvider()
    [record] = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off").run(
        _info(tmp_path, [spec]), [spec]
    )
    assert record.state is RunState.SUCCEEDED and provider.submitted == []


def test_a_failed_attempt_is_kept_and_run_again(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    failed = RunRecord(**{**_ok(spec).__dict__, "state": RunState.FAILED})
    write_record(failed)
    provider = _JobWritesRecord()
    [record] = Orchestrator(provider, StoreIndex(tmp_path / "h"), progress="off").run(
        _info(tmp_path, [spec]), [spec]
    )
    assert record.state is RunState.SUCCEEDED
    assert provider.submitted[0].attempt == 1
    kept = Path(spec.run_dir) / ".hpcorch" / "record.attempt-0.json"
    assert '"FAILED"' in kept.read_text()
