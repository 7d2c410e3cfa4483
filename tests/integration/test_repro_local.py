"""Reproducibility on the real local provider: the example app run as real processes.

Each test runs real sweeps of a copy of the example train.py (warm: forked
runs; cold: `provider.warm=false`, a fresh `python train.py ...` per run) and
the real `hpcorch` CLI on them. Drift is produced by changing the copy the way
a person would: the config's learning rate, the split's salt in the code, a
metric dropped from the return value, and a library version (a real, tiny
distribution `fakekernel` on PYTHONPATH, whose 2.0 changes a numeric result,
exactly what a changed dependency does; its version reaches the fingerprint
through importlib.metadata like any installed package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.store.records import read_record

pytestmark = pytest.mark.integration

EXAMPLE_SPLIT_HASH = "33a8d3dcd60f4bff"  # see tests/unit/test_repro_splits.py


def sweep(app: Path, out: Path, *overrides: str, rerun: bool = True,
          env: dict[str, str] | None = None) -> Path:
    """Run a multirun sweep of the app into `out`; fail the test if it does not succeed."""
    argv = [sys.executable, str(app / "train.py"), "-m", *overrides, "hpcorch.progress=off",
            f"hydra.sweep.dir={out}"]
    if rerun:
        argv.append("hpcorch.rerun=true")
    # The sweeping process starts without PYTHONHASHSEED, as from a plain shell.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    done = subprocess.run(argv, cwd=app, env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def hpcorch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcorch", *args], capture_output=True,
                          text=True, timeout=600, check=False)


def edit(path: Path, old: str, new: str) -> None:
    """Change the app copy; the text must be there exactly once (else the test is stale)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path} no longer contains {old!r} exactly once"
    path.write_text(text.replace(old, new))


def metrics_by_key(sweep_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        record = read_record(run_dir)
        assert record is not None and record.state.value == "SUCCEEDED", run_dir
        assert not record.reused_from
        out[record.run_key] = record.metrics
    return out


def test_warm_and_cold_runs_give_identical_metrics_and_compare_passes(
        app_dir: Path, tmp_path: Path) -> None:
    overrides = ("lr=0.1,0.05", "seed=1,2")
    warm = sweep(app_dir, tmp_path / "warm", *overrides)
    cold = sweep(app_dir, tmp_path / "cold", *overrides, "provider.warm=false")
    a, b = metrics_by_key(warm), metrics_by_key(cold)
    assert len(a) == 4 and a == b  # same run keys, bit-identical metrics
    done = hpcorch("compare", str(warm), str(cold), "--json", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["ok"] and len(report["checks"]) == 4 * 5
    assert all(c["tolerance"] == "exact" and c["delta"] == 0 for c in report["checks"])
    for run_dir in (warm / "0", cold / "0"):
        record = read_record(run_dir)
        assert record is not None
        splits = record.fingerprint["repro"]["splits"]
        assert [s["membership_hash"] for s in splits] == [EXAMPLE_SPLIT_HASH]
        assert record.seeded[:3] == ("random", "PYTHONHASHSEED(env)", "numpy")
    # The cold runs started with the seed as PYTHONHASHSEED; the warm ones could not.
    assert any("hash_seed_fixed: False -> True" in line for line in done.stdout.splitlines())


def test_verify_reruns_a_sample_cold_and_finds_identical_metrics(
        app_dir: Path, tmp_path: Path) -> None:
    warm = sweep(app_dir, tmp_path / "warm", "lr=0.1,0.05", "seed=1")
    done = hpcorch("verify", str(warm), "--sample", "1", "--out", str(tmp_path / "again"),
                   "--junit", str(tmp_path / "v.xml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: all 5 check(s) passed" in done.stdout
    assert len([p for p in (tmp_path / "again").iterdir() if p.name.isdigit()]) == 1


def test_verify_reports_nondeterminism(app_dir: Path, tmp_path: Path) -> None:
    edit(app_dir / "train.py", "    return train(cfg)\n",
         "    import os\n\n"
         "    return {**train(cfg), 'jitter': float(int.from_bytes(os.urandom(4), 'big'))}\n")
    warm = sweep(app_dir, tmp_path / "warm", "seed=1")
    done = hpcorch("verify", str(warm))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NONDETERMINISTIC" in done.stdout and "jitter =" in done.stdout
    assert "train_loss" in done.stdout and "PASS" in done.stdout


def test_a_changed_learning_rate_is_detected_with_the_config_change_shown(
        app_dir: Path, tmp_path: Path) -> None:
    base = sweep(app_dir, tmp_path / "base", "seed=1,2")
    assert hpcorch("baseline", "save", str(base), "-o", str(tmp_path / "b.yaml"),
                   "--tolerance", "default={rel: 0.001}").returncode == 0
    edit(app_dir / "conf" / "config.yaml", "lr: 0.1", "lr: 0.03")
    new = sweep(app_dir, tmp_path / "new", "seed=1,2")
    done = hpcorch("baseline", "check", str(new), "--against", str(tmp_path / "b.yaml"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DRIFT" in done.stdout and "train_loss =" in done.stdout
    assert "config differences (reference -> observed):" in done.stdout
    assert "(no overrides): lr: 0.1 -> 0.03" in done.stdout


def _fake_distribution(root: Path, version: str, scale: str) -> Path:
    site = root / f"site-{version}"
    (site / "fakekernel").mkdir(parents=True)
    (site / "fakekernel" / "__init__.py").write_text(f"SCALE = {scale}\n")
    dist = site / f"fakekernel-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakekernel\nVersion: {version}\n")
    return site


def test_a_changed_library_version_is_detected_with_the_package_change_shown(
        app_dir: Path, tmp_path: Path) -> None:
    edit(app_dir / "train.py", "    return train(cfg)\n",
         "    import fakekernel  # a dependency whose 2.0 computes the loss differently\n\n"
         "    return {k: v * fakekernel.SCALE if k.endswith('loss') else v\n"
         "            for k, v in train(cfg).items()}\n")
    v1 = _fake_distribution(tmp_path, "1.0", "1.0")
    v2 = _fake_distribution(tmp_path, "2.0", "1.05")
    base = sweep(app_dir, tmp_path / "base", "seed=1,2", env={"PYTHONPATH": str(v1)})
    assert hpcorch("baseline", "save", str(base), "-o", str(tmp_path / "b.yaml"),
                   "--tolerance", "default={rel: 0.01}").returncode == 0
    # Without rerun the same run keys reuse the 1.0 results: that must not pass silently.
    reused = sweep(app_dir, tmp_path / "reused", "seed=1,2", rerun=False,
                   env={"PYTHONPATH": str(v2)})
    done = hpcorch("baseline", "check", str(reused), "--against", str(tmp_path / "b.yaml"))
    assert done.returncode == 1 and "REUSED" in done.stdout, done.stdout + done.stderr
    new = sweep(app_dir, tmp_path / "new", "seed=1,2", env={"PYTHONPATH": str(v2)})
    done = hpcorch("baseline", "check", str(new), "--against", str(tmp_path / "b.yaml"),
                   "--json", str(tmp_path / "r.json"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "packages.fakekernel: 1.0 -> 2.0" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    drifted = {c["metric"] for c in report["checks"] if c["verdict"] == "DRIFT"}
    assert drifted == {"train_loss", "val_loss"}
    assert {"key": "packages.fakekernel", "kind": "changed", "before": "1.0",
            "after": "2.0"} in report["environment_diff"]


def test_a_changed_split_is_detected_with_the_membership_change_shown(
        app_dir: Path, tmp_path: Path) -> None:
    base = sweep(app_dir, tmp_path / "base", "seed=1")
    assert hpcorch("baseline", "save", str(base), "-o", str(tmp_path / "b.yaml"),
                   "--tolerance", "default={rel: 0.5}").returncode == 0  # metrics may move
    edit(app_dir / "train.py", 'salt="two_moons"', 'salt="two_moons_v2"')
    new = sweep(app_dir, tmp_path / "new", "seed=1")
    done = hpcorch("baseline", "check", str(new), "--against", str(tmp_path / "b.yaml"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SPLIT CHANGED" in done.stdout
    assert ("split:two_moons: salt 'two_moons' -> 'two_moons_v2'; membership "
            f"{EXAMPLE_SPLIT_HASH} -> ") in done.stdout
    assert "counts test 153 -> " in done.stdout


def test_a_missing_metric_fails(app_dir: Path, tmp_path: Path) -> None:
    base = sweep(app_dir, tmp_path / "base", "seed=1")
    assert hpcorch("baseline", "save", str(base), "-o", str(tmp_path / "b.yaml")).returncode == 0
    edit(app_dir / "train.py", '"val_loss": val_loss,\n', "")
    new = sweep(app_dir, tmp_path / "new", "seed=1")
    done = hpcorch("baseline", "check", str(new), "--against", str(tmp_path / "b.yaml"),
                   "--junit", str(tmp_path / "r.xml"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISSING METRIC" in done.stdout
    assert "metric 'val_loss' is in the reference but missing from #0 seed=1" in done.stdout
    assert 'type="MISSING METRIC"' in (tmp_path / "r.xml").read_text()


def test_diff_shows_what_differs_between_two_runs(app_dir: Path, tmp_path: Path) -> None:
    warm = sweep(app_dir, tmp_path / "warm", "lr=0.1,0.05", "seed=1")
    done = hpcorch("diff", str(warm / "0"), str(warm / "1"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "config (experiment):\n  lr: 0.1 -> 0.05" in done.stdout
    assert "metrics:" in done.stdout
    same = hpcorch("diff", str(warm / "0"), str(warm / "0"))
    assert same.returncode == 0 and "no differences" in same.stdout


def test_strict_mode_pins_threads_records_what_it_pinned_and_keeps_results(
        app_dir: Path, tmp_path: Path) -> None:
    plain = sweep(app_dir, tmp_path / "plain", "seed=1")
    strict = sweep(app_dir, tmp_path / "strict", "seed=1", "hpcorch.repro.strict=true",
                   "provider.warm=false")
    record = read_record(strict / "0")
    assert record is not None
    assert record.seeded[:2] == ("threads=1", "strict")
    facts = record.fingerprint["repro"]
    assert facts["strict"] is True and facts["threads"] == 1
    assert facts["pinned"]["env"]["OMP_NUM_THREADS"] == "1"
    assert facts["pinned"]["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    ledger = json.loads((strict / ".hpcorch" / "sweep.json").read_text())
    assert ["OPENBLAS_NUM_THREADS", "1"] in ledger["specs"][0]["env"]  # set before start-up
    done = hpcorch("compare", str(plain), str(strict))  # strict is not part of the run key
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_bad_repro_setting_stops_the_sweep_before_anything_runs(
        app_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(app_dir / "train.py"), "-m", "seed=1",
                           "hpcorch.repro.threads=0", f"hydra.sweep.dir={tmp_path / 's'}"],
                          cwd=app_dir, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "hpcorch.repro.threads=0: must be a positive integer, or null" in done.stderr
    assert not (tmp_path / "s" / "0").exists()
