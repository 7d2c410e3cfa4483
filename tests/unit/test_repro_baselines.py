"""Baseline files: aggregation over seeds, reviewable YAML, and errors that name file and line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcorch.cli import main
from hpcorch.repro.baselines import (
    BaselineError,
    MetricStats,
    build_baseline,
    load_baseline,
    save_baseline,
    sweep_overrides,
)
from hpcorch.repro.results import load_directory
from hpcorch.testing.synthetic import SPLIT, make_sweep, standard_runs
from hpcorch.repro.tolerances import parse_table
from hpcorch.spec import RunState


def test_stats_are_mean_sample_std_and_n() -> None:
    assert MetricStats.of([2.0]) == MetricStats(2.0, 0.0, 1)
    stats = MetricStats.of([1.0, 2.0, 3.0])
    assert stats.mean == 2.0 and stats.std == 1.0 and stats.n == 3
    assert math.isnan(MetricStats.of([1.0, math.nan]).mean)


def test_baseline_groups_by_overrides_without_seed_and_round_trips(tmp_path: Path) -> None:
    sweep = load_directory(make_sweep(tmp_path / "sweep", standard_runs()))
    baseline = build_baseline(sweep, "demo", parse_table({"default": {"rel": 0.1}}))
    assert list(baseline.entries) == ["lr=0.1", "lr=0.05"]
    entry = baseline.entries["lr=0.1"]
    assert entry.seeds == (1, 2) and entry.splits == (SPLIT,)
    assert entry.metrics["acc"] == MetricStats(0.75, MetricStats.of([0.875, 0.625]).std, 2)
    assert entry.config == {"epochs": 20, "lr": 0.1}  # seed and where-it-ran keys left out
    assert baseline.environment["packages.numpy"] == "2.4.6"
    assert "git.root" not in baseline.environment and "hash_seed" not in baseline.environment
    assert baseline.source["overrides"] == ["lr=0.1,0.05", "seed=1,2"]
    path = save_baseline(baseline, tmp_path / "demo.yaml")
    text = path.read_text()
    assert "acc: {mean: 0.75, std: 0.1767766952966369, n: 2}" in text
    assert "default: {rel: 0.1}" in text
    loaded = load_baseline(path)
    assert loaded.entries == baseline.entries
    assert loaded.tolerances == baseline.tolerances
    assert loaded.environment == baseline.environment
    assert main(["baseline", "args", str(path)]) == 0


def test_a_sweep_with_a_failed_run_makes_no_baseline(tmp_path: Path) -> None:
    runs = standard_runs()
    runs[1]["state"] = RunState.FAILED
    with pytest.raises(BaselineError, match=r"1 run\(s\) did not succeed.*#1 lr=0.1 seed=2"):
        build_baseline(load_directory(make_sweep(tmp_path / "s", runs)), "x", parse_table({}))


def test_sweep_overrides_drop_flags_and_output_locations() -> None:
    assert sweep_overrides(["train.py", "-m", "lr=0.1,0.01", "hydra.sweep.dir=/x",
                            "hpcorch.rerun=true", "provider=slurm"]) == ["lr=0.1,0.01",
                                                                         "provider=slurm"]


def test_cli_save_refuses_to_overwrite_and_writes_the_default_tolerance(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path / "sweep", standard_runs())
    out = tmp_path / "b.yaml"
    assert main(["baseline", "save", str(sweep), "-o", str(out)]) == 0
    assert "default: {k: 3.0, floor: 0.001}" in out.read_text()
    assert main(["baseline", "save", str(sweep), "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["baseline", "save", str(sweep), "-o", str(out), "--force",
                 "--tolerance", "acc={lower: -0.05}"]) == 0
    assert "acc: {lower: -0.05, upper: null}" in out.read_text()


VALID = """\
format: hpcorch-baseline/1
name: t
tolerances:
  default: {rel: 0.1}
runs:
  lr=0.1:
    seeds: [1, 2]
    metrics:
      acc: {mean: 0.75, std: 0.1, n: 2}
"""


@pytest.mark.parametrize("text, line, fragment", [
    (VALID.replace("acc: {mean: 0.75", "acc: {mean: 0.75,, "), 9, "not valid YAML"),
    (VALID.replace("mean: 0.75", "mean: high"), 9, "runs.lr=0.1.metrics.acc.mean: must be a "
                                                   "number, not 'high'"),
    (VALID.replace("n: 2}", "n: 0}"), 9, "must be >= 1"),
    (VALID.replace("std: 0.1", "std: -0.1"), 9, "must be >= 0"),
    (VALID.replace("  default: {rel: 0.1}", "  default: {rel: 0.1}\n  default: {abs: 1}"), 5,
     "duplicate key 'tolerances.default'"),
    (VALID.replace("default: {rel: 0.1}", "default: {lower: 0.2}"), 4,
     "tolerances.default.lower: 0.2: must be <= 0"),
    (VALID.replace("default: {rel: 0.1}", "default: {rell: 0.1}"), 4, "did you mean 'rel'"),
    (VALID.replace("name: t", "nmae: t"), 2, "nmae: unknown key; allowed: format, name"),
    (VALID.replace("hpcorch-baseline/1", "hpcorch-baseline/9"), 1, "this hpcorch reads"),
    (VALID.replace("    seeds: [1, 2]\n", "    seeds: [1, two]\n"), 7, "seeds.1: must be an "
                                                                     "integer"),
    (VALID.split("runs:")[0] + "runs: {}\n", 5, "is empty"),
    (VALID.replace("      acc: {mean: 0.75, std: 0.1, n: 2}\n", "      acc: {std: 0.1}\n"), 9,
     "missing required key 'mean'"),
    ("- just\n- a list\n", 1, "must be a mapping"),
])
def test_malformed_baseline_files_name_the_file_and_line(
        tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BaselineError) as err:
        load_baseline(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


def test_valid_text_loads_and_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    assert load_baseline(path).entries["lr=0.1"].metrics["acc"].mean == 0.75
    with pytest.raises(BaselineError, match="cannot read the baseline"):
        load_baseline(tmp_path / "absent.yaml")


def test_cli_check_with_a_malformed_baseline_exits_2_naming_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path / "sweep", standard_runs())
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("mean: 0.75", "mean: [0.75]"))
    assert main(["baseline", "check", str(sweep), "--against", str(bad)]) == 2
    assert f"{bad}:9: runs.lr=0.1.metrics.acc.mean: must be a number" in capsys.readouterr().err
