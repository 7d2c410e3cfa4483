"""The example pipeline's research apps (prepare.py, train.py, evaluate.py), each run as a
user's process runs it: `python APP ... hydra.run.dir=DIR` from the repository root, with
hpcorch's defaults (its callback writes the real run record).

No pipeline driver and no engine: where a run is a pipeline stage, the test writes the
spec the pipeline would write (a RunSpec whose `upstream` names real run directories of
earlier runs of this test) and points HPCORCH_SPEC at it, as every provider does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from hpcorch.jobenv import SPEC_ENV, spec_file
from hpcorch.repro.baselines import load_baseline
from hpcorch.repro.upstream import UpstreamRun
from hpcorch.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
#: Short training: the apps' behaviour, not the model's quality, is under test.
EPOCHS = "epochs=2"


def _load_app(name: str) -> ModuleType:
    """An app's module, imported from its file (the repo root is no package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(app: str, args: Sequence[str], run_dir: Path, home: Path,
         spec: RunSpec | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python APP ARGS hydra.run.dir=RUN_DIR`; with `spec`, as the job of that spec."""
    env = {k: v for k, v in os.environ.items() if k != SPEC_ENV}
    env["HPCORCH_HOME"] = str(home)
    if spec is not None:
        path = spec_file(run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec.to_json())
        env[SPEC_ENV] = str(path)
    return subprocess.run([str(PYTHON), str(ROOT / app), *args, f"hydra.run.dir={run_dir}"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _record(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / ".hpcorch" / "record.json").read_text())
    return data


def _stage_spec(run_dir: Path, key: str, overrides: Sequence[str],
                upstream: Sequence[tuple[str, str, str]], seed: int = 0,
                num: int = 0) -> RunSpec:
    """The spec a pipeline writes for one stage run (what the job reads of it)."""
    return RunSpec(run_key=key, sweep_id="pipeline-test", num=num, overrides=tuple(overrides),
                   config={}, seed=seed, run_dir=str(run_dir),
                   command=("python", "app.py", *overrides, f"hydra.run.dir={run_dir}"),
                   upstream=tuple(upstream))


def _shard(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "shard.npz") as data:
        return {name: data[name] for name in data.files}


class Pipeline:
    """The runs of one small pipeline, made once for the module: two prepare shards, a
    plain train run, and a train sweep lr=0.1,0.05 x shard=0,1 on the shards."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.prepare: dict[int, Path] = {}
        for shard in (0, 1):
            self.prepare[shard] = base / f"prepare-{shard}"
            _ok(_run("prepare.py", [f"shard={shard}"], self.prepare[shard], self.home))
        self.plain = base / "train-plain"
        _ok(_run("train.py", ["lr=0.1", EPOCHS], self.plain, self.home))
        #: The plain run's seed: the stage runs get it too, so only their data differs.
        self.seed = int(_record(self.plain)["seed"])
        self.train: list[Path] = []
        for lr in ("0.1", "0.05"):
            for shard in (0, 1):
                self.train.append(self.train_run(
                    f"train-{len(self.train)}", [f"lr={lr}", EPOCHS, f"++shard={shard}"],
                    [shard], num=len(self.train)))

    def upstream(self, stage: str, run_dir: Path) -> tuple[str, str, str]:
        return (stage, str(_record(run_dir)["run_key"]), str(run_dir))

    def train_run(self, name: str, overrides: list[str], shards: Sequence[int],
                  num: int = 0) -> Path:
        run_dir = self.base / name
        spec = _stage_spec(run_dir, f"key-{name}", overrides,
                           [self.upstream("prepare", self.prepare[s]) for s in shards],
                           seed=self.seed, num=num)
        _ok(_run("train.py", overrides, run_dir, self.home, spec))
        return run_dir

    def evaluate(self, name: str, args: Sequence[str], train: Sequence[Path] | None = None,
                 cwd: Path = ROOT) -> tuple[Path, subprocess.CompletedProcess[str]]:
        run_dir = self.base / name
        runs = self.train if train is None else train
        spec = _stage_spec(run_dir, f"key-{name}", list(args),
                           [self.upstream("train", d) for d in runs])
        return run_dir, _run("evaluate.py", args, run_dir, self.home, spec, cwd=cwd)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("pipeline"))


# -- prepare -------------------------------------------------------------------------------
def test_the_shards_are_disjoint_deterministic_and_together_the_data_set(
        pipeline: Pipeline, tmp_path: Path) -> None:
    two_moons = _load_app("train").two_moons
    x, y = two_moons(1000, 0.25, 1234)  # conf/config.yaml's data set
    zero, one = _shard(pipeline.prepare[0]), _shard(pipeline.prepare[1])
    assert not np.array_equal(zero["x"], one["x"][: len(zero["x"])])
    index = np.concatenate([zero["index"], one["index"]])
    assert sorted(index.tolist()) == list(range(1000))  # every point once
    for part in (zero, one):
        np.testing.assert_array_equal(part["x"], x[part["index"]])
        np.testing.assert_array_equal(part["y"], y[part["index"]])
        assert 0 < part["y"].mean() < 1  # both classes in each shard
    again = tmp_path / "prepare-1-again"
    _ok(_run("prepare.py", ["shard=1"], again, pipeline.home))
    for name, array in _shard(again).items():
        np.testing.assert_array_equal(array, one[name])
    record = _record(pipeline.prepare[1])
    assert record["state"] == "SUCCEEDED"
    assert record["metrics"] == {"points": 500.0, "positive_fraction": float(one["y"].mean())}
    assert not list(pipeline.prepare[1].glob(".shard.npz.*"))  # no temporary file left


def test_a_shard_out_of_range_is_one_clear_error(pipeline: Pipeline, tmp_path: Path) -> None:
    proc = _run("prepare.py", ["shard=2"], tmp_path / "bad", pipeline.home)
    assert proc.returncode != 0
    assert "shard=2: must be a whole number from 0 to 1 (shards=2)" in proc.stderr
    assert not (tmp_path / "bad" / "shard.npz").exists()
    assert _record(tmp_path / "bad")["state"] == "FAILED"


# -- train ---------------------------------------------------------------------------------
def test_train_on_its_shard_differs_from_the_plain_run_and_repeats(pipeline: Pipeline) -> None:
    plain = _record(pipeline.plain)
    on_shard = _record(pipeline.train[1])  # lr=0.1, shard 1, the plain run's seed
    assert on_shard["seed"] == plain["seed"]
    assert on_shard["metrics"] != plain["metrics"]
    assert [s["items"] for s in on_shard["fingerprint"]["repro"]["splits"]] == [500]
    assert [s["items"] for s in plain["fingerprint"]["repro"]["splits"]] == [1000]
    again = pipeline.train_run("train-1-again", ["lr=0.1", EPOCHS, "++shard=1"], [1])
    assert _record(again)["metrics"] == on_shard["metrics"]


def test_train_on_every_shard_is_the_plain_run(pipeline: Pipeline) -> None:
    both = pipeline.train_run("train-both", ["lr=0.1", EPOCHS], [1, 0])
    plain, record = _record(pipeline.plain), _record(both)
    assert record["metrics"] == plain["metrics"]  # same points, same splits, same seed
    assert record["fingerprint"]["repro"]["splits"] == plain["fingerprint"]["repro"]["splits"]


def test_train_refuses_overlapping_shards(pipeline: Pipeline) -> None:
    train = _load_app("train")
    run = UpstreamRun(stage="prepare", num=1, run_key="k", dir=pipeline.prepare[1],
                      overrides=("shard=1",), metrics={}, config={})
    with pytest.raises(ValueError, match="the upstream shards overlap: point 1 "):
        train.load_shards([run, run])
    x, y, index = train.load_shards([run])
    assert index.tolist() == list(range(1, 1000, 2)) and len(x) == len(y) == 500


# -- evaluate ------------------------------------------------------------------------------
def _expected(pipeline: Pipeline, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and population std per lr group, computed here from the train records."""
    groups: dict[str, list[dict[str, float]]] = {}
    for run_dir in pipeline.train:
        record = _record(run_dir)
        lr = next(o for o in record["overrides"] if o.startswith("lr="))
        groups.setdefault(f"epochs=2 {lr}", []).append(record["metrics"])
    out = {}
    for group, runs in groups.items():
        row = {"n": float(len(runs))}
        for metric in metrics:
            values = [r[metric] for r in runs]
            mean = sum(values) / len(values)
            row[f"{metric}/mean"] = mean
            row[f"{metric}/std"] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        out[group] = row
    return out


def test_evaluate_tables_and_metrics_and_the_baseline_it_writes(
        pipeline: Pipeline, tmp_path: Path) -> None:
    metrics = ["val_acc", "test_acc", "val_loss"]
    expected = _expected(pipeline, metrics)
    assert set(expected) == {"epochs=2 lr=0.1", "epochs=2 lr=0.05"}
    project = tmp_path / "project"  # a relative baseline.path is relative to the start dir
    project.mkdir()
    run_dir, proc = pipeline.evaluate(
        "evaluate-update", ["baseline.update=true", "baseline.path=baselines/b.yaml"],
        cwd=project)
    _ok(proc)
    record = _record(run_dir)
    flat = {f"{g}/{k}": v for g, row in expected.items() for k, v in row.items()}
    assert record["metrics"].keys() == flat.keys()
    assert record["metrics"] == pytest.approx(flat, rel=1e-12, abs=1e-15)
    rows = (run_dir / "table.csv").read_text().splitlines()
    assert rows[0] == ("group,n,val_acc_mean,val_acc_std,test_acc_mean,test_acc_std,"
                       "val_loss_mean,val_loss_std")
    for line in rows[1:]:
        group, n, *numbers = line.split(",")
        row = expected[group]
        assert float(n) == row["n"] == 2
        want = [row[f"{m}/{s}"] for m in metrics for s in ("mean", "std")]
        assert [float(v) for v in numbers] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert len(rows) == 3
    markdown = (run_dir / "table.md").read_text()
    assert proc.stdout == markdown  # the table, and nothing of hpcorch's, on stdout
    row = expected["epochs=2 lr=0.1"]
    assert (f"| epochs=2 lr=0.1 | 2 | {row['val_acc/mean']:.4f} ± {row['val_acc/std']:.4f} |"
            in markdown)
    written = load_baseline(project / "baselines" / "b.yaml")
    assert set(written.entries) == set(expected)
    for group, entry in written.entries.items():
        assert set(entry.metrics) == set(metrics)
        for metric, stats in entry.metrics.items():
            assert stats.n == 2
            assert stats.mean == pytest.approx(expected[group][f"{metric}/mean"], rel=1e-12)
    assert written.tolerances.for_metric("test_acc").lower == -0.02  # conf/evaluate.yaml's
    assert written.tolerances.for_metric("val_loss").rel == 0.02

    _, check = pipeline.evaluate("evaluate-check", [f"baseline.path={project}/baselines/b.yaml"])
    assert "all 6 checks passed" in _ok(check).stderr
    assert check.stdout == markdown


def test_evaluate_fails_on_a_baseline_mismatch(pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    _ok(pipeline.evaluate("evaluate-write", ["baseline.update=true", f"baseline.path={path}"])[1])
    data = yaml.safe_load(path.read_text())
    observed = data["runs"]["epochs=2 lr=0.05"]["metrics"]["test_acc"]["mean"]
    data["runs"]["epochs=2 lr=0.05"]["metrics"]["test_acc"]["mean"] = observed + 0.1
    # within conf/evaluate.yaml's default {rel: 0.02}: must still pass
    data["runs"]["epochs=2 lr=0.1"]["metrics"]["val_loss"]["mean"] *= 1.01
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir, proc = pipeline.evaluate("evaluate-mismatch", [f"baseline.path={path}"])
    assert proc.returncode != 0
    reference = observed + 0.1
    message = (f"BaselineMismatch: baseline check against {path} failed (1 of 6 checks): "
               f"epochs=2 lr=0.05: test_acc = {observed:.6g} is below the lower bound "
               f"{reference - 0.02 * reference:.6g} (reference {reference:.6g}, tolerance "
               "bounds [-0.02, +inf] x|ref|)")
    assert message in proc.stderr
    record = _record(run_dir)
    assert record["state"] == "FAILED" and record["error"]["type"] == "BaselineMismatch"
    assert (run_dir / "table.md").exists()  # the table is there to look at


def test_evaluate_without_a_baseline_file_says_how_to_write_it(pipeline: Pipeline,
                                                              tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    _, proc = pipeline.evaluate("evaluate-missing", [f"baseline.path={missing}"],
                                train=pipeline.train[:1])
    assert proc.returncode != 0
    assert (f"baseline.path={missing}: no baseline file there; run evaluate with "
            "baseline.update=true") in proc.stderr
    assert not missing.exists()


def test_evaluate_with_no_train_runs_has_nothing_to_aggregate(pipeline: Pipeline,
                                                             tmp_path: Path) -> None:
    proc = _run("evaluate.py", [], tmp_path / "alone", pipeline.home)
    assert proc.returncode != 0
    assert "NothingToAggregate: evaluate has nothing to aggregate: this run has no upstream " \
           "'train' runs" in proc.stderr
    assert proc.stdout == ""

