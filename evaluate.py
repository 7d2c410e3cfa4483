"""The example pipeline's last stage: aggregate every train run and check the baseline.

A plain Hydra app, run as the pipeline's `evaluate` stage, whose one run has
every run of the `train` stage as upstream (`repro.upstream("train")`). It

1. groups the train runs by their hyper-parameters: their overrides without the
   keys of `across` (default `shard` and `seed`: what is averaged over) and
   without the where-it-runs keys (`provider`, `resources`, ...: the run's
   `hpcorch.key_exclude`); the seed is never a hyper-parameter (hpcorch's
   baselines group the same way);
2. computes, per group, the count of runs and the mean and standard deviation
   (population, `numpy.std`) of each metric in `metrics`;
3. writes `table.csv` and `table.md` into its run directory (each whole or not
   at all) and prints the markdown table on stdout;
4. checks the groups against the committed baseline `baseline.path` (a
   `hpcorch-baseline/1` file, relative to the directory the app was started in)
   with hpcorch's own comparison (`hpcorch.repro.drift.check_baseline`): the
   tolerances written in the file, then `baseline.tolerances` for the metrics
   it does not name. With `baseline.update=true` it writes the file from this
   run's groups instead (with `baseline.tolerances`), as `hpcorch baseline save`
   does; review that diff like code.

It returns flat metrics, one per group and statistic, named
`<group>/<metric>/mean`, `<group>/<metric>/std` and `<group>/n`, where `<group>`
is the group's overrides sorted by key and joined by spaces (`lr=0.1`,
`hidden=8 lr=0.1`, `(no overrides)` for a sweep of shards and seeds alone),
the same key the baseline file uses for its `runs:` entries.

The baseline's own `std` is hpcorch's per-group sample standard deviation
(`MetricStats`), the spread its noise-aware `k` tolerances scale with; the
table's is the population one.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hpcorch import repro
from hpcorch.repro.baselines import build_baseline, load_baseline, save_baseline
from hpcorch.repro.drift import check_baseline
from hpcorch.repro.results import SweepResults, upstream_results
from hpcorch.repro.tolerances import ToleranceTable, parse_table

#: The pipeline stage whose runs are aggregated.
UPSTREAM_STAGE = "train"
TABLE_CSV = "table.csv"
TABLE_MD = "table.md"
#: The statistics of each metric, in table and metric-name order.
STATS = ("mean", "std")


class NothingToAggregate(RuntimeError):
    """The run has no upstream train runs: it was not started as a pipeline's evaluate stage."""


class BaselineMismatch(RuntimeError):
    """The aggregated metrics are not within the baseline's tolerances."""


def _names(value: Any, key: str) -> list[str]:
    """A config list of names, or one ValueError naming the setting."""
    raw = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise ValueError(f"{key}={raw!r}: must be a list of names, e.g. [val_acc, test_acc]")
    return list(raw)


def aggregate(sweep: SweepResults, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per group, sorted by group: `group`, `n` and `<metric>_<stat>` for each."""
    rows = []
    for group, runs in sorted(sweep.groups().items()):
        row: dict[str, Any] = {"group": group, "n": len(runs)}
        for metric in metrics:
            values = np.array([r.metrics[metric] for r in runs], dtype=float)
            row[f"{metric}_mean"] = float(np.mean(values))
            row[f"{metric}_std"] = float(np.std(values))
        rows.append(row)
    return rows


def flat_metrics(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, float]:
    """`{"lr=0.1/val_acc/mean": ..., "lr=0.1/val_acc/std": ..., "lr=0.1/n": ...}`."""
    out: dict[str, float] = {}
    for row in rows:
        out[f"{row['group']}/n"] = float(row["n"])
        for metric in metrics:
            for stat in STATS:
                out[f"{row['group']}/{metric}/{stat}"] = row[f"{metric}_{stat}"]
    return out


def table_csv(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """The table as CSV, numbers at full precision."""
    columns = ["group", "n", *(f"{m}_{s}" for m in metrics for s in STATS)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def table_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """The table as Markdown, `mean ± std` per metric to 4 decimals."""
    lines = ["| group | n | " + " | ".join(metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for row in rows:
        cells = [f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}" for m in metrics]
        lines.append(f"| {row['group']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: readers see the old file or the new, never half."""
    with repro.atomic_file(path) as handle:
        handle.write(text)


def baseline_file(cfg: DictConfig) -> Path:
    """`baseline.path`, relative to the directory the app was started in."""
    path = Path(str(cfg.baseline.path))
    return path if path.is_absolute() else Path(hydra.utils.get_original_cwd()) / path


def check_against(path: Path, sweep: SweepResults, tolerances: ToleranceTable) -> int:
    """Check the groups against the baseline file; returns the number of checks passed,
    raises BaselineMismatch with every failing check's message."""
    if not path.is_file():
        raise FileNotFoundError(f"baseline.path={path}: no baseline file there; run evaluate "
                                "with baseline.update=true to write it from this run's table")
    baseline = load_baseline(path)
    report = check_baseline(baseline, sweep, baseline.tolerances.merged_over(tolerances),
                            allow_reused=True)
    if not report.ok:
        failed = "; ".join(f"{c.run}: {c.message}" for c in report.failures)
        raise BaselineMismatch(f"baseline check against {path} failed "
                               f"({len(report.failures)} of {len(report.checks)} checks): "
                               f"{failed}")
    return len(report.checks)


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Aggregate the upstream train runs, write the tables, check or update the baseline."""
    across = _names(cfg.across, "across")
    metrics = _names(cfg.metrics, "metrics")
    if not metrics:
        raise ValueError("metrics=[]: name at least one metric to aggregate, e.g. [val_acc]")
    update = cfg.baseline["update"]  # item access: `.update` is the mapping's own method
    if not isinstance(update, bool):
        raise ValueError(f"baseline.update={update!r}: must be true or false")
    tolerances = parse_table(OmegaConf.to_container(cfg.baseline.tolerances),
                             "baseline.tolerances")
    runs = repro.upstream(UPSTREAM_STAGE)
    if not runs:
        raise NothingToAggregate(
            f"evaluate has nothing to aggregate: this run has no upstream '{UPSTREAM_STAGE}' "
            "runs; run it as the evaluate stage of a pipeline "
            "(hpcorch pipeline run conf/pipeline/example.yaml)")
    sweep = upstream_results(runs, across=across, metrics=metrics)
    rows = aggregate(sweep, metrics)
    markdown = table_markdown(rows, metrics)
    write_text(out_dir / TABLE_CSV, table_csv(rows, metrics))
    write_text(out_dir / TABLE_MD, markdown)
    print(markdown, end="", flush=True)  # the research code's output: stdout
    path = baseline_file(cfg)
    if update:
        save_baseline(build_baseline(sweep, str(cfg.baseline.name), tolerances), path)
        print(f"evaluate: wrote the baseline {path} ({len(rows)} group(s))", file=sys.stderr)
    else:
        passed = check_against(path, sweep, tolerances)
        print(f"evaluate: baseline {path}: all {passed} checks passed", file=sys.stderr)
    return flat_metrics(rows, metrics)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point."""
    return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
