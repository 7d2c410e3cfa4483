"""Baseline files: reviewable YAML of reference metrics, their tolerances and their origin.

    format: hpcorch-baseline/1
    name: example
    tolerances:                      # per metric; `default` covers the others
      default: {k: 3.0, floor: 0.005}
      train_loss: {rel: 0.05}
      test_acc: {lower: -0.03}      # may rise freely, may not fall by more than 3%
    runs:
      lr=0.1:                        # the run's overrides, seed excluded
        seeds: [1, 2, 3]
        metrics:
          test_acc: {mean: 0.88, std: 0.004, n: 3}
        splits: [{salt: two_moons, items: 1000, counts: {...}, membership_hash: ...}]
        config: {lr: 0.1, epochs: 20, ...}
    environment: {python: 3.11.7, packages: {...}, git: {...}, ...}

Written by `hpcorch baseline save`, read by `hpcorch baseline check`. A file
that cannot be read is a BaselineError naming the file and the line.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcorch.errors import ConfigError, HpcorchError
from hpcorch.repro.diffing import environment_summary, experiment_config, nest, unnest
from hpcorch.repro.results import SweepResults
from hpcorch.repro.tolerances import ToleranceTable, parse_table
from hpcorch.store.records import atomic_write_text

FORMAT = "hpcorch-baseline/1"
_TOP_KEYS = ("format", "name", "created", "source", "tolerances", "runs", "environment")
_ENTRY_KEYS = ("seeds", "run_keys", "metrics", "splits", "config")
_STAT_KEYS = ("mean", "std", "n")
#: The sweep's own command-line words that say nothing about what it computes.
_SOURCE_DROP = ("-m", "--multirun", "hydra.sweep.dir=", "hydra.run.dir=", "hydra.sweep.subdir=",
                "hpcorch.rerun=", "hpcorch.progress=", "hpcorch.home=", "hpcorch.dry_run=")


class BaselineError(HpcorchError):
    """A baseline file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class MetricStats:
    """A reference metric aggregated over seeds (std: sample standard deviation, 0 for n=1)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricStats:
        """Aggregate the per-seed values."""
        if len(values) == 1:
            return cls(float(values[0]), 0.0, 1)
        finite = all(math.isfinite(v) for v in values)
        mean = statistics.fmean(values) if finite else math.nan
        return cls(mean, statistics.stdev(values) if finite else math.nan, len(values))


@dataclass(frozen=True)
class BaselineEntry:
    """The reference of one group of runs (same overrides, any seed)."""

    key: str
    metrics: dict[str, MetricStats]
    seeds: tuple[int, ...] = ()
    run_keys: tuple[str, ...] = ()
    splits: tuple[dict[str, Any], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """A whole baseline file."""

    name: str
    entries: dict[str, BaselineEntry]
    tolerances: ToleranceTable = field(default_factory=ToleranceTable)
    environment: dict[str, Any] = field(default_factory=dict)
    """Flat `section.key` environment summary of the runs it came from."""
    source: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    path: str = ""


def sweep_overrides(argv: Sequence[str]) -> list[str]:
    """The overrides of a sweep's command line that define it (no -m, no output dirs)."""
    words = list(argv[1:]) if argv and not argv[0].startswith(("-", "+")) \
        and "=" not in argv[0] else list(argv)
    return [w for w in words if not w.startswith(_SOURCE_DROP) and w not in _SOURCE_DROP]


def _splits_of(runs: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    seen: list[dict[str, Any]] = []
    for run in runs:
        for summary in run.splits:
            if summary not in seen:
                seen.append(summary)
    return tuple(seen)


def build_baseline(sweep: SweepResults, name: str, tolerances: ToleranceTable) -> Baseline:
    """The baseline of a sweep whose runs all succeeded (BaselineError otherwise)."""
    bad = [r for r in sweep.runs if not r.state.ok]
    if bad:
        listing = "; ".join(f"{r.label}: {r.state.value} {r.failure}".strip() for r in bad)
        raise BaselineError(f"{sweep.label}: {len(bad)} run(s) did not succeed, a baseline "
                            f"needs every run: {listing}")
    if not sweep.runs:
        raise BaselineError(f"{sweep.label}: no runs")
    entries = {}
    for key, runs in sweep.groups().items():
        names = sorted({m for r in runs for m in r.metrics})
        if not names:
            raise BaselineError(f"{sweep.label}: runs {key} report no numeric metrics "
                                "(the task function returns none)")
        metrics = {m: MetricStats.of([r.metrics[m] for r in runs if m in r.metrics])
                   for m in names}
        entries[key] = BaselineEntry(
            key=key, metrics=metrics,
            seeds=tuple(sorted(r.seed for r in runs if r.seed is not None)),
            run_keys=tuple(r.run_key for r in runs), splits=_splits_of(runs),
            config=experiment_config(runs[0].config))
    source = {"sweep_id": sweep.sweep_id, "sweep_dir": sweep.sweep_dir,
              "provider": sweep.provider, "overrides": sweep_overrides(sweep.argv)}
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return Baseline(name=name, entries=entries, tolerances=tolerances,
                    environment=environment_summary(r.fingerprint for r in sweep.runs),
                    source=source, created=created)


# -- writing ------------------------------------------------------------------
class _Flow(dict):  # type: ignore[type-arg]
    """A mapping written on one line (metric stats, tolerances)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))

_HEADER = """\
# hpcorch baseline: reference metrics, checked by
#   hpcorch baseline check SWEEP --against {path}
# Review changes to this file like code. Tolerances per metric (`default` for the rest):
#   {{abs: A}} {{rel: R}} {{k: K, floor: F}} (widest wins)  |  {{lower: -L, upper: U}} fractions
#   of the reference (absolute when it is 0; a missing side is unbounded)  |  exact
"""


def dump_baseline(baseline: Baseline, path: str | Path) -> str:
    """The YAML text of a baseline (also what `save_baseline` writes)."""
    runs = {}
    for key, entry in baseline.entries.items():
        runs[key] = {
            "seeds": list(entry.seeds),
            "run_keys": list(entry.run_keys),
            "metrics": {m: _Flow(mean=s.mean, std=s.std, n=s.n) for m, s in entry.metrics.items()},
            "splits": [_Flow(s) for s in entry.splits], "config": dict(entry.config)}
    data = {"format": FORMAT, "name": baseline.name, "created": baseline.created,
            "source": baseline.source,
            "tolerances": {m: _Flow(t) for m, t in baseline.tolerances.to_dict().items()},
            "runs": runs, "environment": nest(baseline.environment)}
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=100, allow_unicode=True)
    return _HEADER.format(path=path) + body


def save_baseline(baseline: Baseline, path: str | Path) -> Path:
    """Write a baseline file atomically."""
    target = Path(path)
    shown = os.path.relpath(target.resolve())  # the header shows it as typed from here
    atomic_write_text(target, dump_baseline(baseline, target if shown.startswith("..") else shown))
    return target


# -- reading ------------------------------------------------------------------
def _lines(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int],
           source: str) -> None:
    """Map every key path to its 1-based line; refuse duplicate keys (YAML would hide them)."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise BaselineError(f"{source}:{key_node.start_mark.line + 1}: duplicate key "
                                    f"{'.'.join(path + (key,))!r}")
            seen.add(key)
            out[path + (key,)] = key_node.start_mark.line + 1
            _lines(value_node, path + (key,), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (str(i),), out, source)


class _Reader:
    """Validation with errors that point at the file and line of the offending key."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: tuple[str, ...], message: str) -> BaselineError:
        line = next((self.lines[path[:i]] for i in range(len(path), -1, -1)
                     if path[:i] in self.lines), 1)
        where = ".".join(path) or "(top level)"
        return BaselineError(f"{self.source}:{line}: {where}: {message}")

    def mapping(self, value: Any, path: tuple[str, ...], allowed: Sequence[str] | None = None,
                required: Sequence[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, not {type(value).__name__}")
        for key in value:
            if allowed is not None and key not in allowed:
                raise self.fail((*path, str(key)), "unknown key; allowed: " + ", ".join(allowed))
        for key in required:
            if key not in value:
                raise self.fail(path, f"missing required key '{key}'")
        return value

    def number(self, value: Any, path: tuple[str, ...], *, integer: bool = False,
               minimum: float | None = None) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise self.fail(path, f"must be {'an integer' if integer else 'a number'}, "
                                  f"not {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be >= {minimum:g}, not {value!r}")
        return value


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{source}: cannot read the baseline: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BaselineError(f"{source}{line}: not valid YAML: {problem}") from exc
    lines: dict[tuple[str, ...], int] = {}
    if root is not None:
        _lines(root, (), lines, source)
    reader = _Reader(source, lines)
    top = reader.mapping(data, (), _TOP_KEYS, required=("format", "runs"))
    if top["format"] != FORMAT:
        raise reader.fail(("format",), f"is {top['format']!r}; this hpcorch reads {FORMAT!r}")
    try:
        tolerances = parse_table(top.get("tolerances"))
    except ConfigError as exc:
        raise reader.fail(tuple(exc.key.split(".")), f"{exc.value!r}: {exc.allowed}") from exc
    runs = reader.mapping(top["runs"], ("runs",))
    if not runs:
        raise reader.fail(("runs",), "is empty: a baseline needs at least one run")
    entries = {str(k): _entry(reader, str(k), v) for k, v in runs.items()}
    environment = top.get("environment") or {}
    return Baseline(name=str(top.get("name") or Path(path).stem), entries=entries,
                    tolerances=tolerances,
                    environment=unnest(reader.mapping(environment, ("environment",))),
                    source=dict(top.get("source") or {}), created=str(top.get("created") or ""),
                    path=source)


def _entry(reader: _Reader, key: str, raw: Any) -> BaselineEntry:
    path = ("runs", key)
    entry = reader.mapping(raw, path, _ENTRY_KEYS, required=("metrics",))
    metrics = {}
    for name, stats in reader.mapping(entry["metrics"], (*path, "metrics")).items():
        where = (*path, "metrics", str(name))
        stats = reader.mapping(stats, where, _STAT_KEYS, required=("mean",))
        metrics[str(name)] = MetricStats(
            float(reader.number(stats["mean"], (*where, "mean"))),
            float(reader.number(stats.get("std", 0.0), (*where, "std"), minimum=0)),
            int(reader.number(stats.get("n", 1), (*where, "n"), integer=True, minimum=1)))
    if not metrics:
        raise reader.fail((*path, "metrics"), "is empty: nothing to check")
    splits = entry.get("splits") or []
    if not isinstance(splits, list) or not all(isinstance(s, Mapping) for s in splits):
        raise reader.fail((*path, "splits"), "must be a list of split summaries")
    seeds = entry.get("seeds") or []
    for i, seed in enumerate(seeds):
        reader.number(seed, (*path, "seeds", str(i)), integer=True)
    return BaselineEntry(key=key, metrics=metrics, seeds=tuple(seeds),
                         run_keys=tuple(entry.get("run_keys") or ()),
                         splits=tuple(dict(s) for s in splits),
                         config=dict(reader.mapping(entry.get("config") or {}, (*path, "config"))))
