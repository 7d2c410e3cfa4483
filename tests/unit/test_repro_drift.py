"""Drift checks on sweeps written to disk: every failure kind, readable, and the CLI's exit codes.

The sweeps are written as hpcorch writes them (ledger + run records); "a changed
library version" is simulated by copying a sweep and editing its records'
fingerprint and metrics, which is exactly what a run under another numpy
would have recorded (the integration tests do it for real with a fake
distribution on the path).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from hpcorch.cli import main
from hpcorch.repro.baselines import build_baseline, save_baseline
from hpcorch.repro.drift import Verdict, check_baseline, compare_sweeps
from hpcorch.repro.reports import explanation, junit_xml
from hpcorch.repro.results import group_key, load_directory
from hpcorch.testing.synthetic import FP, SPLIT, make_sweep, standard_runs
from hpcorch.repro.tolerances import parse_table
from hpcorch.repro.verify import choose, with_run_dir
from hpcorch.spec import RunState
from hpcorch.store.records import read_record, write_record

TOL = parse_table({"default": {"rel": 0.01}})


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "ref", standard_runs())


def baseline_of(sweep_dir: Path, tmp_path: Path) -> Path:
    baseline = build_baseline(load_directory(sweep_dir), "t", TOL)
    return save_baseline(baseline, tmp_path / "t.yaml")


def check(sweep_dir: Path, baseline: Path, *extra: str) -> int:
    return main(["baseline", "check", str(sweep_dir), "--against", str(baseline), *extra])


def verdicts(report: Any) -> dict[tuple[str, str], Verdict]:
    return {(c.run, c.metric): c.verdict for c in report.checks}


def test_group_key_excludes_seed_and_where_keys_and_sorts() -> None:
    assert group_key(["seed=3", "lr=0.1", "provider=slurm", "epochs=5"]) == "epochs=5 lr=0.1"
    assert group_key(["seed=3", "hpcorch.rerun=true"]) == "(no overrides)"
    assert group_key(["+data.seed=3", "~extra"]) == "data.seed=3 ~extra"  # only top-level seed


def test_the_same_sweep_passes_with_exit_0_and_writes_json_and_junit(
        reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    assert check(reference, baseline, "--json", str(out_json), "--junit", str(out_xml)) == 0
    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["failures"] == 0 and len(data["checks"]) == 4
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "0"


def test_a_changed_learning_rate_is_drift_explained_by_the_config(
        reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    for run in runs[:2]:  # the default lr moved: same overrides, other config and results
        run["metrics"] = {"acc": run["metrics"]["acc"] - 0.1, "loss": run["metrics"]["loss"]}
    changed = make_sweep(tmp_path / "new", runs)
    for num in (0, 1):  # as if conf/config.yaml said lr: 0.05 for these runs
        record = read_record(changed / str(num))
        assert record is not None
        write_record(dataclasses.replace(record, config={**record.config, "lr": 0.05}))
    report = check_baseline(_load(baseline), load_directory(changed), TOL)
    assert verdicts(report)[("lr=0.1", "acc")] is Verdict.DRIFT
    assert verdicts(report)[("lr=0.1", "loss")] is Verdict.PASS
    text = "\n".join(explanation(report))
    assert "acc = 0.65 is below the lower bound 0.7425 (reference 0.75" in text
    assert "config differences (reference -> observed):\n  lr=0.1: lr: 0.1 -> 0.05" in text
    assert check(changed, baseline) == 1


def test_a_changed_library_version_is_drift_explained_by_the_environment(
        reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = baseline_of(reference, tmp_path)
    moved = tmp_path / "copied-sweep"
    shutil.copytree(reference, moved)  # a copy elsewhere: run directories are found relative
    for num in range(4):
        record = read_record(moved / str(num))
        assert record is not None
        fp = copy.deepcopy(record.fingerprint)
        fp["packages"]["numpy"] = "2.5.0"
        fp["packages"]["newdep"] = "1.0"
        metrics = {**record.metrics, "loss": record.metrics["loss"] * 1.5}
        write_record(dataclasses.replace(record, fingerprint=fp, metrics=metrics,
                                         run_dir=str(moved / str(num))))
    capsys.readouterr()
    assert check(moved, baseline) == 1
    out = capsys.readouterr().out
    assert "DRIFT" in out and "loss = 0.5625 is above the upper bound" in out
    assert "environment differences (reference -> observed):" in out
    assert "packages.numpy: 2.4.6 -> 2.5.0" in out and "packages.newdep: added 1.0" in out


def test_a_changed_split_is_its_own_failure(reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    fp = copy.deepcopy(FP)
    fp["repro"]["splits"] = [{**SPLIT, "counts": {"train": 690, "val": 160, "test": 150},
                              "membership_hash": "0123456789abcdef"}]
    runs = standard_runs()
    for run in runs:
        run["fingerprint"] = fp
    changed = make_sweep(tmp_path / "new", runs)
    report = check_baseline(_load(baseline), load_directory(changed), TOL)
    split_checks = [c for c in report.checks if c.verdict is Verdict.SPLIT_CHANGED]
    assert [c.metric for c in split_checks] == ["split:two_moons", "split:two_moons"]
    assert split_checks[0].message == ("membership 33a8d3dcd60f4bff -> 0123456789abcdef; items "
                                       "1000 -> 1000; counts test 153 -> 150, train 698 -> 690, "
                                       "val 149 -> 160")
    assert not report.ok


def _load(path: Path) -> Any:
    from hpcorch.repro.baselines import load_baseline

    return load_baseline(path)


def test_missing_and_new_metrics_fail_with_their_own_messages(
        reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    for run in runs:
        run["metrics"] = {"acc": run["metrics"]["acc"], "f1": 0.5}  # loss gone, f1 new
    report = check_baseline(_load(baseline), load_directory(make_sweep(tmp_path / "n", runs)),
                            TOL)
    got = verdicts(report)
    assert got[("lr=0.1", "loss")] is Verdict.MISSING_METRIC
    assert got[("lr=0.1", "f1")] is Verdict.NEW_METRIC
    assert got[("lr=0.1", "acc")] is Verdict.PASS
    messages = {c.metric: c.message for c in report.checks if c.run == "lr=0.1"}
    assert messages["loss"] == ("metric 'loss' is in the reference but missing from "
                                "#0 lr=0.1 seed=1 hpcorch.progress=off, "
                                "#1 lr=0.1 seed=2 hpcorch.progress=off")


def test_a_metric_missing_from_one_seed_only_still_fails(reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    runs[3]["metrics"] = {"acc": 0.5}
    report = check_baseline(_load(baseline), load_directory(make_sweep(tmp_path / "n", runs)),
                            TOL)
    assert verdicts(report)[("lr=0.05", "loss")] is Verdict.MISSING_METRIC


def test_missing_unexpected_failed_and_unrecorded_runs(reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()[:2] + [
        {"lr": 0.2, "seed": 1, "metrics": {"acc": 0.9, "loss": 0.1}},
        {"lr": 0.1, "seed": 3, "metrics": {}, "state": RunState.FAILED},
        {"lr": 0.1, "seed": 4, "metrics": {}, "no_record": True},
    ]
    report = check_baseline(_load(baseline), load_directory(make_sweep(tmp_path / "n", runs)),
                            TOL)
    kinds = [(c.run, c.verdict) for c in report.checks if c.metric == "-"]
    assert ("lr=0.05", Verdict.MISSING_RUN) in kinds
    assert ("lr=0.2", Verdict.UNEXPECTED_RUN) in kinds
    failed = [c.message for c in report.checks if c.verdict is Verdict.RUN_FAILED]
    assert len(failed) == 2
    assert "#3 lr=0.1 seed=3 hpcorch.progress=off FAILED" in failed[0]
    assert "UNKNOWN: no run record" in failed[1]


def test_a_reused_result_is_not_a_silent_pass(reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    for run in runs:
        run["reused_from"] = "/elsewhere/0"
    reused = make_sweep(tmp_path / "n", runs)
    report = check_baseline(_load(baseline), load_directory(reused), TOL)
    assert {c.verdict for c in report.checks} == {Verdict.REUSED}
    assert "hpcorch.rerun=true" in report.checks[0].message
    assert check(reused, baseline, "--allow-reused") == 0


def test_tolerance_flags_override_the_file(reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    runs[0]["metrics"] = {"acc": 0.875 + 0.05, "loss": 0.25}
    changed = make_sweep(tmp_path / "n", runs)
    assert check(changed, baseline) == 1
    assert check(changed, baseline, "--tolerance", "acc={abs: 0.03}") == 0  # mean moved 0.025
    assert check(changed, baseline, "--tolerance", "acc={upper: 0.0, lower: null}") == 1


def test_compare_matches_runs_by_run_key_and_reports_the_unmatched(
        reference: Path, tmp_path: Path) -> None:
    same = make_sweep(tmp_path / "same", standard_runs())
    report = compare_sweeps(load_directory(reference), load_directory(same), parse_table({}))
    assert report.ok and len(report.checks) == 8  # exact by default: 4 runs x 2 metrics
    assert main(["compare", str(reference), str(same)]) == 0
    runs = standard_runs()[:3] + [{"lr": 0.05, "seed": 9, "metrics": {"acc": 0.5, "loss": 1.0}}]
    runs[0]["metrics"] = {"acc": 0.875000001, "loss": 0.25}
    other = make_sweep(tmp_path / "other", runs)
    report = compare_sweeps(load_directory(reference), load_directory(other), parse_table({}))
    got = [(c.run.split(" [")[0], c.metric, c.verdict) for c in report.checks if not c.verdict.ok]
    assert got == [("lr=0.1 seed=1", "acc", Verdict.DRIFT),
                   ("lr=0.05 seed=2", "-", Verdict.MISSING_RUN),
                   ("lr=0.05 seed=9", "-", Verdict.UNEXPECTED_RUN)]
    assert main(["compare", str(reference), str(other), "--tolerance",
                 "default={rel: 1.0e-6}"]) == 1  # the unmatched runs still fail


def test_compare_of_different_code_says_why_nothing_matches(
        reference: Path, tmp_path: Path) -> None:
    runs = standard_runs()
    for run in runs:
        run["code"] = "git:def"
    report = compare_sweeps(load_directory(reference),
                            load_directory(make_sweep(tmp_path / "c", runs)), parse_table({}))
    assert not report.ok and any("no run key matches" in n for n in report.notes)


def test_noise_aware_compare_uses_the_reference_groups_spread(
        reference: Path, tmp_path: Path) -> None:
    runs = standard_runs()
    runs[0]["metrics"] = {"acc": 0.875 + 0.3, "loss": 0.25}  # std of lr=0.1 acc is 0.177
    report = compare_sweeps(load_directory(reference),
                            load_directory(make_sweep(tmp_path / "n", runs)),
                            parse_table({"default": {"k": 2.0, "floor": 0.01}}))
    assert report.ok


def test_junit_has_one_case_per_check_and_a_failure_for_each_that_failed(
        reference: Path, tmp_path: Path) -> None:
    baseline = baseline_of(reference, tmp_path)
    runs = standard_runs()
    runs[2]["metrics"] = {"acc": 0.1, "loss": 1.0}
    report = check_baseline(_load(baseline), load_directory(make_sweep(tmp_path / "n", runs)),
                            TOL)
    root = ET.fromstring(junit_xml(report))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 4
    failures = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failures] == [
        ("hpcorch.baseline check.lr=0.05", "acc")]
    assert failures[0].find("failure").get("type") == "DRIFT"  # type: ignore[union-attr]


def test_diff_of_two_runs(reference: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(reference / "0"), str(reference / "0")]) == 0
    assert "no differences" in capsys.readouterr().out
    assert main(["diff", str(reference / "0"), str(reference / "2")]) == 1
    out = capsys.readouterr().out
    assert "overrides:" in out and "lr: 0.1 -> 0.05" in out and "acc: 0.875 -> 0.5" in out


def test_verify_rewrites_the_run_dir_and_forces_a_single_run() -> None:
    command = ("python", "train.py", "hydra.mode=MULTIRUN", "lr=0.1", "hydra.run.dir=/old/0")
    assert with_run_dir(command, "/new dir/0") == (
        "python", "train.py", "lr=0.1", "hydra.mode=RUN", "hydra.run.dir='/new dir/0'")
    with pytest.raises(Exception, match="no hydra.run.dir= argument"):
        with_run_dir(("python", "x.py"), "/n")


def test_verify_sample_is_reproducible_and_in_sweep_order(reference: Path) -> None:
    from hpcorch.store.ledger import read_ledger

    info = read_ledger(reference)
    assert info is not None
    picked = [s.num for s in choose(info.specs, 2, seed=3)]
    assert picked == [s.num for s in choose(info.specs, 2, seed=3)] and picked == sorted(picked)
    assert [s.num for s in choose(info.specs, None)] == [0, 1, 2, 3]
