"""hpcorch.checkpoint: the documented hook for saving on the time-limit signal and resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcorch import checkpoint
from hpcorch.jobenv import RESTART_ENV
from hpcorch.spec import RunSpec


@pytest.fixture
def in_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / ".hpcorch").mkdir(parents=True)
    spec = RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir=str(run_dir), command=("python",))
    (run_dir / ".hpcorch" / "spec.json").write_text(spec.to_json())
    monkeypatch.setenv("HPCORCH_SPEC", str(run_dir / ".hpcorch" / "spec.json"))
    monkeypatch.chdir(tmp_path)
    return run_dir


def test_save_load_in_the_run_directory(in_run: Path) -> None:
    assert checkpoint.load(default={"epoch": 0}) == {"epoch": 0}
    assert not checkpoint.exists()
    path = checkpoint.save({"epoch": 3})
    assert path == in_run / "checkpoints" / "last.pkl"
    assert checkpoint.load() == {"epoch": 3} and checkpoint.exists()
    assert checkpoint.path("model.pt") == in_run / "checkpoints" / "model.pt"
    assert not list((in_run / "checkpoints").glob(".*.tmp"))
    with pytest.raises(ValueError):
        checkpoint.path("../escape")


def test_restarts_follow_the_job_contract_not_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESTART_ENV, raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "5")  # the array task's business, not the run's
    assert checkpoint.restarts() == 0
    monkeypatch.setenv(RESTART_ENV, "2")
    assert checkpoint.restarts() == 2
    monkeypatch.setenv(RESTART_ENV, "garbage")
    assert checkpoint.restarts() == 0


APP = """
import os, signal, sys, time
from hpcorch import checkpoint
state = checkpoint.load(default={"step": 0})
checkpoint.on_signal(lambda: checkpoint.save(state))
open("ready", "w").close()
while state["step"] < 10**9:
    state["step"] += 1
    time.sleep(0.001)
"""


def test_on_signal_saves_then_stops_for_resume(in_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HPCORCH_SPEC": str(in_run / ".hpcorch" / "spec.json")}
    proc = subprocess.Popen([sys.executable, "-c", APP], cwd=tmp_path, env=env)
    try:
        for _ in range(600):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == checkpoint.EXIT_RESUME
    finally:
        proc.kill()
    saved = checkpoint.load()
    assert saved["step"] > 0


def test_usage_notes_saves_and_signal_handling_for_the_array_task(in_run: Path) -> None:
    assert checkpoint.usage(in_run) == checkpoint.Usage()
    checkpoint.save({"epoch": 1})
    assert checkpoint.usage(in_run) == checkpoint.Usage(saved=True)
    checkpoint.path("model.pt").write_bytes(b"w")  # a framework's own file counts too
    (in_run / "checkpoints" / "last.pkl").unlink()
    (in_run / ".hpcorch" / checkpoint.USAGE_FILE).unlink()
    assert checkpoint.usage(in_run).saved


def test_usage_of_a_run_that_catches_the_signal(tmp_path: Path, in_run: Path) -> None:
    code = "from hpcorch import checkpoint; checkpoint.requested()"
    env = {**os.environ, "HPCORCH_SPEC": str(in_run / ".hpcorch" / "spec.json")}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, timeout=60)
    assert checkpoint.usage(in_run) == checkpoint.Usage(handles_signals=True)
    assert checkpoint.usage(in_run).resumable


def test_usage_is_noted_only_inside_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCORCH_SPEC", raising=False)
    monkeypatch.chdir(tmp_path)
    checkpoint.save({"x": 1})  # outside any run: in ./checkpoints, and no .hpcorch made
    assert (tmp_path / "checkpoints" / "last.pkl").exists()
    assert not (tmp_path / ".hpcorch").exists()
