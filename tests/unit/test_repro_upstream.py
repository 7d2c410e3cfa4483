"""repro.upstream(): a pipeline run's inputs, read from its own spec and its upstream records.

Real record files (hpcorch.store.records.write_record) and a real spec file named by
HPCORCH_SPEC, as a job sees them; nothing of the module under test is replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcorch import repro
from hpcorch.jobenv import SPEC_ENV, spec_file
from hpcorch.repro.upstream import UpstreamNotReady, UpstreamRun, check_upstream
from hpcorch.spec import RunSpec, RunState
from hpcorch.store.records import RunRecord, write_record


def _record(run_dir: Path, key: str, state: RunState = RunState.SUCCEEDED, num: int = 0,
            overrides: tuple[str, ...] = ("shard=0",), reused_from: str = "") -> RunRecord:
    record = RunRecord(run_key=key, sweep_id="up", num=num, state=state, run_dir=str(run_dir),
                       overrides=overrides, seed=3, metrics={"points": 500.0},
                       config={"shard": 0, "data": {"n": 1000}}, reused_from=reused_from)
    write_record(record)
    return record


def _own_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              upstream: list[tuple[str, str, str]]) -> Path:
    """Write this run's spec with `upstream` and point HPCORCH_SPEC at it."""
    run_dir = tmp_path / "me"
    spec = RunSpec(run_key="me", sweep_id="down", num=0, overrides=("lr=0.1",), config={},
                   seed=1, run_dir=str(run_dir), command=("python", "train.py"),
                   stage="train", upstream=tuple(upstream))
    path = spec_file(run_dir)
    path.parent.mkdir(parents=True)
    path.write_text(spec.to_json())
    monkeypatch.setenv(SPEC_ENV, str(path))
    return path


def test_outside_a_pipeline_the_list_is_empty(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert repro.upstream() == [] and repro.upstream("prepare") == []
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "no-such" / "spec.json"))
    assert repro.upstream() == []
    _own_spec(tmp_path, monkeypatch, [])  # a planned job that is no pipeline stage
    assert repro.upstream() == []


def test_succeeded_runs_come_back_in_order_with_their_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, zero = tmp_path / "p1", tmp_path / "p0"
    _record(one, "k1", num=1, overrides=("++shard=1",))
    _record(zero, "k0", num=0)
    _own_spec(tmp_path, monkeypatch, [("prepare", "k1", str(one)), ("prepare", "k0", str(zero))])
    runs = repro.upstream("prepare")
    assert [r.run_key for r in runs] == ["k1", "k0"]  # the pipeline's order, not sorted
    first = runs[0]
    assert isinstance(first, UpstreamRun)
    assert (first.stage, first.num, first.dir) == ("prepare", 1, one)
    assert first.metrics == {"points": 500.0} and first.config["data"] == {"n": 1000}
    assert first.override("shard") == "1"  # the `++` of a pipeline's added key is not the key
    assert first.override("lr") is None and first.override("lr", "x") == "x"


def test_the_stage_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prep, train = tmp_path / "prep", tmp_path / "train"
    _record(prep, "kp")
    _record(train, "kt")
    _own_spec(tmp_path, monkeypatch, [("prepare", "kp", str(prep)), ("train", "kt", str(train))])
    assert [r.run_key for r in repro.upstream("prepare")] == ["kp"]
    assert [r.run_key for r in repro.upstream("train")] == ["kt"]
    assert [r.stage for r in repro.upstream()] == ["prepare", "train"]
    assert repro.upstream("evaluate") == []


def test_a_missing_record_means_not_finished(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "p0"
    _own_spec(tmp_path, monkeypatch, [("prepare", "k0", str(gone))])
    with pytest.raises(UpstreamNotReady, match=r"upstream prepare run in .*p0 has no record"):
        repro.upstream("prepare")
    assert repro.upstream("train") == []  # only the stage asked for is checked


def test_a_record_of_another_run_key_is_never_taken(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "p0"
    _record(run_dir, "other-config")
    _own_spec(tmp_path, monkeypatch, [("prepare", "k0", str(run_dir))])
    with pytest.raises(UpstreamNotReady, match="holds run other-config, not k0"):
        repro.upstream()


@pytest.mark.parametrize("state", [RunState.FAILED, RunState.CANCELLED, RunState.TIMEOUT])
def test_an_upstream_that_did_not_succeed_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: RunState) -> None:
    run_dir = tmp_path / "p0"
    _record(run_dir, "k0", state=state, num=4)
    _own_spec(tmp_path, monkeypatch, [("prepare", "k0", str(run_dir))])
    with pytest.raises(UpstreamNotReady, match=f"upstream prepare #4 is {state.value}, not "
                                               "SUCCEEDED"):
        repro.upstream("prepare")


def test_a_skipped_run_points_at_the_directory_that_holds_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original, reused = tmp_path / "first" / "0", tmp_path / "again" / "0"
    _record(original, "k0")
    (original / "shard.npz").write_bytes(b"data")
    _record(reused, "k0", state=RunState.SKIPPED, reused_from=str(original))
    _own_spec(tmp_path, monkeypatch, [("prepare", "k0", str(reused))])
    [run] = repro.upstream("prepare")
    assert run.dir == original and (run.dir / "shard.npz").read_bytes() == b"data"
    assert run.run_key == "k0"


def test_check_upstream_stops_at_the_first_bad_one(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    _record(good, "kg")
    _record(bad, "kb", state=RunState.FAILED, num=2)
    assert [r.run_key for r in check_upstream([("prepare", "kg", str(good))])] == ["kg"]
    with pytest.raises(UpstreamNotReady, match="#2 is FAILED"):
        check_upstream([("prepare", "kg", str(good)), ("prepare", "kb", str(bad))])
