"""What a Ray task does with a run, without Ray: warm (fork) and cold starts, outcome files.

The warm start must leave the same record as the portable command: same run
key, metrics and seed (the example app, run both ways from the same spec).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from hpcorch.providers.ray import execute
from hpcorch.spec import RunSpec
from hpcorch.store.records import atomic_write_json, read_record, spec_path
from hpcorch.testing import contract_spec


def example_spec(app_dir: Path, run_dir: Path, lr: str = "0.1") -> RunSpec:
    overrides = (f"lr={lr}", "epochs=3")
    spec = RunSpec(run_key="", sweep_id="unit", num=0, overrides=overrides, config={},
                   seed=0, run_dir=str(run_dir),
                   command=(sys.executable, str(app_dir / "train.py"), *overrides,
                            f"hydra.run.dir={run_dir}"),
                   workdir=str(app_dir))
    atomic_write_json(spec_path(run_dir), spec.to_dict())
    return spec


def test_warm_and_cold_leave_the_same_record(app_dir: Path, tmp_path: Path) -> None:
    cold = example_spec(app_dir, tmp_path / "cold")
    warm = example_spec(app_dir, tmp_path / "warm")
    out_cold = execute.run_spec(cold, "sub-1", warm=False, echo=False)
    out_warm = execute.run_spec(warm, "sub-1", warm=True, echo=False)
    assert out_cold["state"] == out_warm["state"] == "SUCCEEDED"
    rec_cold, rec_warm = read_record(cold.run_dir), read_record(warm.run_dir)
    assert rec_cold is not None and rec_warm is not None
    assert rec_cold.run_key == rec_warm.run_key
    assert rec_cold.metrics == rec_warm.metrics and rec_cold.metrics
    assert rec_cold.seed == rec_warm.seed
    outcome = execute.read_outcome(warm.run_dir)
    assert outcome is not None and outcome["submission_id"] == "sub-1"
    assert outcome["exit_code"] == 0 and outcome["node"]


def test_failure_keeps_exit_code_and_stderr(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0, "fail")
    out = execute.run_spec(spec, "sub-2", warm=True, echo=False)
    assert out["state"] == "FAILED" and out["exit_code"] == 3
    stderr = (Path(spec.run_dir) / ".hpcorch" / "stderr.log").read_text()
    assert "contract run failing" in stderr
    assert json.loads(execute.outcome_path(spec.run_dir).read_text())["state"] == "FAILED"


def test_warm_exit_status_and_exceptions(tmp_path: Path) -> None:
    script = tmp_path / "exits.py"
    script.write_text("import sys\nif sys.argv[1] == 'raise':\n    raise ValueError('bad')\n"
                      "sys.exit(int(sys.argv[1]))\n")
    for arg, code in (("0", 0), ("5", 5), ("raise", 1)):
        base = contract_spec(tmp_path, int(code))
        spec = dataclasses.replace(base, command=(sys.executable, str(script), arg))
        assert execute.run_spec(spec, "s", warm=True, echo=False)["exit_code"] == code
    assert "ValueError: bad" in (Path(spec.run_dir) / ".hpcorch" / "stderr.log").read_text()


def test_interrupt_stops_the_run_and_records_cancelled(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = contract_spec(tmp_path, 0, "hang")
    result: dict[str, object] = {}
    proc_started = threading.Event()
    original = execute.RunProcess.__init__

    def start(self: execute.RunProcess, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        result["pid"] = self.pid
        proc_started.set()

    def interrupt_when_started() -> None:
        assert proc_started.wait(60)
        import _thread

        _thread.interrupt_main()

    monkeypatch.setattr(execute.RunProcess, "__init__", start)
    # interrupt_main() does nothing while SIGINT is ignored (a test run started in the
    # background by a non-interactive shell inherits SIG_IGN): Ray's workers handle it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt_when_started)
    timer.start()
    try:
        outcome = execute.run_spec(spec, "s", warm=False, echo=False)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert outcome["state"] == "CANCELLED"
    with pytest.raises(ProcessLookupError):
        os.kill(int(result["pid"]), 0)  # type: ignore[call-overload]
