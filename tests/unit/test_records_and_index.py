"""Run records are written atomically; the SQLite index is rebuildable from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpcorch.errors import StoreError
from hpcorch.spec import FailureContext, RunSpec, RunState
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo, read_ledger, write_ledger
from hpcorch.store.records import (
    RunRecord,
    atomic_write_text,
    metrics_from,
    read_record,
    record_path,
    write_record,
)


def _record(
    tmp_path: Path, num: int, state: RunState = RunState.SUCCEEDED, key: str = ""
) -> RunRecord:
    return RunRecord(
        run_key=key or f"key{num}",
        sweep_id="s1",
        num=num,
        state=state,
        run_dir=str(tmp_path / "sweep" / str(num)),
        overrides=(f"x={num}",),
        metrics={"loss": 1.0 / (num + 1)},
        started=1.0,
        ended=3.5,
    )


def test_record_round_trip(tmp_path: Path) -> None:
    rec = _record(tmp_path, 0)
    rec = RunRecord(**{**rec.__dict__, "failure": FailureContext("local", job_id="7", exit_code=2)})
    write_record(rec)
    back = read_record(rec.run_dir)
    assert back == rec
    assert back is not None and back.duration_s == 2.5
    assert oct(os.stat(record_path(rec.run_dir)).st_mode & 0o777) != oct(0o600)


def test_atomic_write_keeps_old_content_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    path = record_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(StoreError, match=str(path)):
        read_record(tmp_path)


def test_missing_record_is_none(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"a": 1, "b": 2.5, "c": "text", "d": True}, {"a": 1.0, "b": 2.5}),
        (0.5, {"value": 0.5}),
        (None, {}),
        ("str", {}),
    ],
)
def test_metrics_from_return_values(value: object, expected: dict) -> None:
    assert metrics_from(value) == expected


def test_metrics_from_numpy_scalars() -> None:
    import numpy as np

    assert metrics_from({"acc": np.float64(0.25), "n": np.int64(3)}) == {"acc": 0.25, "n": 3.0}


def _sweep(tmp_path: Path, n: int) -> SweepInfo:
    specs = tuple(
        RunSpec(
            run_key=f"key{i}",
            sweep_id="s1",
            num=i,
            overrides=(f"x={i}",),
            config={"x": i},
            seed=i,
            run_dir=str(tmp_path / "sweep" / str(i)),
            command=("python", "app.py"),
        )
        for i in range(n)
    )
    return SweepInfo(
        sweep_id="s1", sweep_dir=str(tmp_path / "sweep"), provider="local", created=1.0, specs=specs
    )


def test_index_tracks_states_and_successes(tmp_path: Path) -> None:
    index = StoreIndex(tmp_path / "home")
    info = _sweep(tmp_path, 3)
    index.put_sweep(info)
    assert [r.state for r in index.runs("s1")] == [RunState.PENDING] * 3
    index.set_states([(info.specs[0], RunState.RUNNING, "j0")])
    index.put_records([_record(tmp_path, 1), _record(tmp_path, 2, RunState.FAILED)])
    rows = index.runs("s1")
    assert [r.state for r in rows] == [RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED]
    assert rows[0].job_id == "j0"
    assert index.succeeded(["key0", "key1", "key2"]) == {"key1": str(tmp_path / "sweep" / "1")}
    assert index.sweep("s")["sweep_id"] == "s1"
    assert index.find_run("key1").num == 1
    assert index.find_run("s1/2").state is RunState.FAILED
    with pytest.raises(StoreError, match="no sweep"):
        index.sweep("zzz")


def test_index_rebuilds_from_files(tmp_path: Path) -> None:
    info = _sweep(tmp_path, 3)
    write_ledger(info)
    for num in (0, 2):
        write_record(_record(tmp_path, num))
    index = StoreIndex(tmp_path / "home")
    index.put_sweep(info)
    before = index.runs("s1")
    index.path.write_bytes(b"garbage, not a database")  # even a destroyed index is rebuilt
    assert index.rebuild([tmp_path]) == (1, 3)
    after = index.runs("s1")
    assert [r.state for r in after] == [RunState.SUCCEEDED, RunState.PENDING, RunState.SUCCEEDED]
    assert [r.run_key for r in after] == [r.run_key for r in before]
    assert read_ledger(info.sweep_dir) == info


def test_status_json_shape(tmp_path: Path) -> None:
    index = StoreIndex(tmp_path / "home")
    index.put_sweep(_sweep(tmp_path, 1))
    data = index.runs("s1")[0].to_dict()
    assert json.loads(json.dumps(data))["state"] == "PENDING"
