"""The committed baseline of the example train.py, checked by scripts/drift-check.sh for real.

When train.py or conf/ change what the example computes, these tests fail on
purpose: review the change, then refresh the baseline with
`scripts/drift-check.sh -u` (tolerances kept) and commit the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.repro.baselines import load_baseline
from hpcorch.repro.tolerances import ToleranceMode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "baselines" / "example.yaml"
SCRIPT = ROOT / "scripts" / "drift-check.sh"
EXAMPLE_SPLIT_HASH = "33a8d3dcd60f4bff"  # see tests/unit/test_repro_splits.py


def drift_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, "PYTHON": sys.executable})


def test_the_committed_baseline_is_well_formed() -> None:
    baseline = load_baseline(BASELINE)
    assert set(baseline.entries) == {"lr=0.1", "lr=0.05"}
    for entry in baseline.entries.values():
        assert entry.seeds == (1, 2, 3)
        assert {"test_acc", "val_acc", "train_loss", "val_loss"} <= set(entry.metrics)
        assert all(stats.n == 3 for stats in entry.metrics.values())
        assert [s["membership_hash"] for s in entry.splits] == [EXAMPLE_SPLIT_HASH]
    assert baseline.tolerances.for_metric("test_acc").mode is ToleranceMode.BOUNDS
    assert baseline.tolerances.for_metric("test_acc").upper is None  # one-sided on purpose
    assert baseline.tolerances.for_metric("train_loss").k == 3.0
    assert baseline.source["overrides"] == ["lr=0.1,0.05", "seed=1,2,3"]


def test_the_example_matches_its_committed_baseline(app_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = drift_check("-a", str(app_dir / "train.py"), "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "drift.json").read_text())
    assert report["ok"] and len(report["checks"]) == 2 * 5
    assert (out / "drift.xml").read_text().count("<testcase") == 10
    runs = [p for p in (out / "sweep").iterdir() if p.name.isdigit()]
    assert len(runs) == 6


def test_drift_check_exits_1_and_explains_when_the_example_changes(
        app_dir: Path, tmp_path: Path) -> None:
    config = app_dir / "conf" / "config.yaml"
    assert config.read_text().count("epochs: 20") == 1
    config.write_text(config.read_text().replace("epochs: 20", "epochs: 3"))
    out = tmp_path / "out"
    done = drift_check("-a", str(app_dir / "train.py"), "-o", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DRIFT" in done.stdout and "epochs: 20 -> 3" in done.stdout
    report = json.loads((out / "drift.json").read_text())
    assert not report["ok"]
    assert report["config_diff"]["lr=0.1"] == [
        {"key": "epochs", "kind": "changed", "before": 20, "after": 3}]


def test_drift_check_exits_2_naming_the_line_of_a_corrupt_baseline(
        app_dir: Path, tmp_path: Path) -> None:
    lines = BASELINE.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if "test_acc: {mean:" in line)
    lines[number] = lines[number].replace("mean:", "mean: [")
    corrupt = tmp_path / "corrupt.yaml"
    corrupt.write_text("\n".join(lines) + "\n")
    done = drift_check("-b", str(corrupt), "-a", str(app_dir / "train.py"),
                       "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{corrupt}:{number + 1}: not valid YAML" in done.stderr


def test_drift_check_exits_3_when_the_sweep_itself_fails(app_dir: Path, tmp_path: Path) -> None:
    train = app_dir / "train.py"
    train.write_text(train.read_text().replace("    return train(cfg)\n",
                                               "    raise RuntimeError('broken on purpose')\n"))
    done = drift_check("-a", str(train), "-o", str(tmp_path / "out"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "RUN FAILED" in done.stdout
    assert (tmp_path / "out" / "drift.json").exists()
