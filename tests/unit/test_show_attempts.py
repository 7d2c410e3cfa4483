"""`hpcorch show RUN`: every attempt of a run, oldest first, from hand-written record files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpcorch.cli import inspect_cmds
from hpcorch.spec import RunState
from hpcorch.store.records import meta_dir


def _record(run_dir: Path, attempt: int, state: RunState, **extra: Any) -> dict[str, Any]:
    return {"run_key": "abc123", "sweep_id": "sw", "num": 0, "state": state.value,
            "run_dir": str(run_dir), "attempt": attempt, **extra}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _oom(job: str, mem: float) -> dict[str, Any]:
    return {"job_id": job, "resources": {"cpus": 1, "mem_gb": mem, "time_min": 60},
            "failure": {"provider": "slurm", "job_id": job, "node": "c1", "signal": 9,
                        "reason": "killed for memory", "failure_class": "OOM",
                        "peak_mem_gb": mem}}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run that was killed for memory twice (attempt files 0 and 10: numeric order),
    then succeeded with four times the memory."""
    run_dir = tmp_path / "sweep" / "0"
    meta = meta_dir(run_dir)
    _write(meta / "record.attempt-0.json", _record(run_dir, 0, RunState.FAILED, **_oom("7", 1)))
    _write(meta / "record.attempt-10.json", _record(
        run_dir, 1, RunState.FAILED, retry={"memory": 2, "retried_for": "OOM"}, **_oom("8", 2)))
    _write(meta / "record.attempt-x.json", {"not": "an attempt"})  # ignored: not N
    _write(meta / "record.json", _record(
        run_dir, 2, RunState.SUCCEEDED, job_id="9", retry={"retried_for": "OOM"},
        resources={"cpus": 1, "mem_gb": 4, "time_min": 60}))
    return run_dir


def _show(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> int:
    row = SimpleNamespace(run_dir=str(run_dir), run_key="abc123", to_dict=lambda: {})
    monkeypatch.setattr(inspect_cmds, "open_index",
                        lambda args: SimpleNamespace(find_run=lambda ref: row))
    return inspect_cmds.cmd_show(argparse.Namespace(run="abc123", home=None))


def test_attempt_records_oldest_first(run_dir: Path) -> None:
    earlier = inspect_cmds.attempt_records(run_dir)
    assert [(r.attempt, r.job_id) for r in earlier] == [(0, "7"), (1, "8")]
    assert inspect_cmds.attempt_records(run_dir.parent / "missing") == []


def test_attempt_line_names_state_class_resources_job_and_reason(run_dir: Path) -> None:
    first, second = inspect_cmds.attempt_records(run_dir)
    line = inspect_cmds.attempt_line(second)
    assert line.startswith("attempt 1  FAILED  OOM  cpus=1 mem_gb=2 time_min=60  job=8  ")
    assert line.endswith("retried after OOM; [slurm job=8 node=c1] signal=9: killed for memory")
    assert "retried after" not in inspect_cmds.attempt_line(first)


def test_show_lists_every_attempt_on_stderr_and_keeps_stdout_json(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _show(monkeypatch, run_dir) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["attempt"] == 2
    lines = err.splitlines()
    assert lines[0] == "3 attempts of run abc123:"
    assert [line.split()[:4] for line in lines[1:]] == [
        ["attempt", "0", "FAILED", "OOM"], ["attempt", "1", "FAILED", "OOM"],
        ["attempt", "2", "SUCCEEDED", "-"]]
    assert "mem_gb=4" in lines[3] and "job=9" in lines[3] and "retried after OOM" in lines[3]


def test_show_of_a_retry_still_running(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (meta_dir(run_dir) / "record.json").unlink()
    assert _show(monkeypatch, run_dir) == 0
    out, err = capsys.readouterr()
    assert "no record yet" in json.loads(out)["note"]
    assert err.splitlines()[-1].strip() == "attempt 2: not finished yet"


def test_show_of_one_attempt_prints_only_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "one"
    _write(meta_dir(run_dir) / "record.json", _record(run_dir, 0, RunState.FAILED,
                                                      error={"type": "ValueError",
                                                             "message": "no"}))
    assert _show(monkeypatch, run_dir) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["type"] == "ValueError" and err == ""


def test_an_unreadable_attempt_is_skipped_with_a_warning(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (meta_dir(run_dir) / "record.attempt-3.json").write_text("{torn")
    assert len(inspect_cmds.attempt_records(run_dir)) == 2
    assert "record.attempt-3.json" in capsys.readouterr().err
