"""Retries on provider=local (memory enforced as RLIMIT_DATA): a run over its memory
fails with MemoryError on attempt 1 and succeeds on attempt 2 with more memory; warm
(forked) and cold (fresh interpreter) runs alike. No retry setting given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.slurm_support import run_app
from tests.integration.test_slurm_retry import NEED_APP, attempts

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("warm", ["true", "false"])
def test_memory_error_is_retried_with_more_memory(app_dir: Path, warm: str) -> None:
    (app_dir / "need.py").write_text(NEED_APP)
    config = app_dir / "conf" / "config.yaml"
    config.write_text(config.read_text() + "mode: none\nmb: 0\nsecs: 0\n")
    done = run_app(app_dir, "mode=mem,none", "mb=300", "resources.mem_gb=0.25",
                   f"provider.warm={warm}", "hydra.sweep.dir=out", "hpcorch.progress=off",
                   script="need.py", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = attempts(app_dir / "out" / "0")
    assert first["state"] == "FAILED" and first["error"]["type"] == "MemoryError", first
    assert first["failure"]["failure_class"] == "OOM" and first["resources"]["mem_gb"] == 0.25
    assert second["state"] == "SUCCEEDED" and second["attempt"] == 1
    assert second["resources"]["mem_gb"] >= 0.5 and second["retry"]["retried_for"] == "OOM"
    [plain] = attempts(app_dir / "out" / "1")  # 0 MB: never over, one attempt
    assert plain["state"] == "SUCCEEDED" and plain["attempt"] == 0
    events = [json.loads(line) for line in
              (app_dir / "out/.hpcorch/events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["num"]) for e in events if e["event"] == "retry"] == [("retry", 0)]
