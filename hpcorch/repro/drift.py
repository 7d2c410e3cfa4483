"""Drift checks: a sweep against a baseline, one sweep against another, a run against its re-run.

Every comparison yields a DriftReport: one Check per (run, metric) plus one
per missing or unexpected run, failed or reused run and changed data split,
each with a verdict and a sentence that says what is wrong. Nothing is ever
skipped silently: what cannot be compared is a failure with its own message.
The environment differences between the two sides ride along to explain drift.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hpcorch.repro.baselines import Baseline, MetricStats
from hpcorch.repro.diffing import Change, diff_flat, environment_summary, experiment_config
from hpcorch.repro.results import RunResult, SweepResults
from hpcorch.repro.tolerances import Tolerance, ToleranceTable, parse_table


class Verdict(str, Enum):
    """The outcome of one check. Only PASS passes."""

    PASS = "PASS"
    """Within tolerance."""
    DRIFT = "DRIFT"
    """Out of tolerance."""
    NONDETERMINISTIC = "NONDETERMINISTIC"
    """A re-run of the same run gave a different value."""
    MISSING_RUN = "MISSING RUN"
    """The reference side has the run, the observed side does not."""
    UNEXPECTED_RUN = "UNEXPECTED RUN"
    """The observed side has a run the reference lacks."""
    MISSING_METRIC = "MISSING METRIC"
    """The reference has the metric, the observed run(s) did not report it."""
    NEW_METRIC = "NEW METRIC"
    """The observed run(s) report a metric the reference lacks."""
    RUN_FAILED = "RUN FAILED"
    """A run did not succeed, so it has nothing to compare."""
    REUSED = "REUSED"
    """A run was not run: it reused an identical earlier run's result."""
    SPLIT_CHANGED = "SPLIT CHANGED"
    """The run trained/evaluated on other items than the reference."""

    @property
    def ok(self) -> bool:
        """True only for PASS."""
        return self is Verdict.PASS


@dataclass(frozen=True)
class Check:
    """One row of the drift table."""

    run: str
    metric: str
    verdict: Verdict
    reference: float | None = None
    observed: float | None = None
    lower: float | None = None
    upper: float | None = None
    tolerance: str = ""
    message: str = ""

    @property
    def delta(self) -> float | None:
        """observed - reference, when both exist."""
        if self.reference is None or self.observed is None:
            return None
        return self.observed - self.reference

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite numbers as strings)."""
        return {"run": self.run, "metric": self.metric, "verdict": self.verdict.value,
                "ok": self.verdict.ok, "reference": _num(self.reference),
                "observed": _num(self.observed), "delta": _num(self.delta),
                "lower": _num(self.lower), "upper": _num(self.upper),
                "tolerance": self.tolerance, "message": self.message}


def _num(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


@dataclass(frozen=True)
class DriftReport:
    """The result of one comparison."""

    kind: str
    reference: str
    observed: str
    checks: tuple[Check, ...]
    environment: tuple[Change, ...] = ()
    config: dict[str, tuple[Change, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.verdict.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that did not pass."""
        return [c for c in self.checks if not c.verdict.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "ok": self.ok, "reference": self.reference,
                "observed": self.observed, "checks": [c.to_dict() for c in self.checks],
                "failures": len(self.failures),
                "environment_diff": [c.to_dict() for c in self.environment],
                "config_diff": {k: [c.to_dict() for c in v] for k, v in self.config.items()},
                "notes": list(self.notes)}


def metric_check(run: str, metric: str, tolerance: Tolerance, reference: float, observed: float,
                 std: float = 0.0, mismatch: Verdict = Verdict.DRIFT) -> Check:
    """Check one value against its reference."""
    lo, hi = tolerance.interval(reference, std) if math.isfinite(reference) else (
        reference, reference)
    common: dict[str, Any] = {"reference": reference, "observed": observed, "lower": lo,
                              "upper": hi, "tolerance": tolerance.describe()}
    if tolerance.accepts(reference, observed, std):
        return Check(run, metric, Verdict.PASS, **common)
    change = observed - reference
    relative = f" ({change / abs(reference):+.2%})" if reference and math.isfinite(change) else ""
    if math.isnan(observed):
        where = "is NaN"
    elif observed < lo:
        where = f"is below the lower bound {lo:.6g}"
    else:
        where = f"is above the upper bound {hi:.6g}"
    message = (f"{metric} = {observed:.6g} {where} (reference {reference:.6g}, tolerance "
               f"{tolerance.describe()}); change {change:+.4g}{relative}")
    return Check(run, metric, mismatch, **common, message=message)


def _split_key(summary: dict[str, Any]) -> str:
    return f"{summary.get('salt', '')}|{','.join(_names(summary))}"  # records sort the names


def split_checks(run: str, expected: Sequence[dict[str, Any]],
                 observed: Sequence[dict[str, Any]]) -> list[Check]:
    """SPLIT_CHANGED for every split whose membership differs.

    Splits are matched by salt and split names; what is left over on both
    sides with the same names is paired up (the salt itself changed).
    """
    want = {_split_key(s): s for s in expected}
    have = {_split_key(s): s for s in observed}
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = [
        (want[k], have[k]) for k in sorted(set(want) & set(have))]
    lost = [want[k] for k in sorted(set(want) - set(have))]
    new = [have[k] for k in sorted(set(have) - set(want))]
    for gone in list(lost):
        match = next((b for b in new if _names(b) == _names(gone)), None)
        if match is not None:
            pairs.append((gone, match))
            lost.remove(gone)
            new.remove(match)
    pairs += [(a, None) for a in lost] + [(None, b) for b in new]
    checks = []
    for a, b in pairs:
        label = f"split:{(a or b or {}).get('salt', '') or '(no salt)'}"
        if b is None:
            message = "the reference made this split, the observed run(s) did not"
        elif a is None:
            message = "the observed run(s) made a split the reference did not"
        elif a.get("membership_hash") == b.get("membership_hash"):
            continue
        else:
            salt = "" if a.get("salt") == b.get("salt") else \
                f"salt {a.get('salt')!r} -> {b.get('salt')!r}; "
            counts = ", ".join(f"{n} {a['counts'].get(n)} -> {b['counts'].get(n)}"
                               for n in _names(a))
            message = (f"{salt}membership {a.get('membership_hash')} -> "
                       f"{b.get('membership_hash')}; items {a.get('items')} -> {b.get('items')}; "
                       f"counts {counts}")
        checks.append(Check(run, label, Verdict.SPLIT_CHANGED, message=message))
    return checks


def _names(summary: dict[str, Any]) -> list[str]:
    return sorted(summary.get("counts", {}))


def _splits(runs: Iterable[RunResult]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for run in runs:
        seen += [s for s in run.splits if s not in seen]
    return seen


def _usable(runs: Sequence[RunResult], group: str, allow_reused: bool,
            side: str = "") -> tuple[list[RunResult], list[Check]]:
    """The runs that can be compared, and a failing check for each that cannot."""
    good, checks = [], []
    prefix = f"{side}: " if side else ""
    for run in runs:
        if not run.state.ok:
            checks.append(Check(group, "-", Verdict.RUN_FAILED, message=(
                f"{prefix}{run.label} {run.state.value}: {run.failure or 'no details'} "
                f"[{run.run_dir}]")))
        elif run.reused_from and not allow_reused:
            checks.append(Check(group, "-", Verdict.REUSED, message=(
                f"{prefix}{run.label} did not run: it reused the result of an identical earlier "
                f"run ({run.reused_from}); run the sweep with hpcorch.rerun=true, or pass "
                "--allow-reused")))
        else:
            good.append(run)
    return good, checks


def config_tolerances(sweep: SweepResults) -> ToleranceTable:
    """The tolerances a sweep's own config declares (`hpcorch.repro.tolerances`)."""
    for run in sweep.runs:
        hpcorch = run.config.get("hpcorch")
        node = hpcorch.get("repro") if isinstance(hpcorch, dict) else None
        if isinstance(node, dict) and node.get("tolerances"):
            return parse_table(node["tolerances"], "hpcorch.repro.tolerances")
    return ToleranceTable()


def check_baseline(baseline: Baseline, sweep: SweepResults, tolerances: ToleranceTable,
                   allow_reused: bool = False) -> DriftReport:
    """Compare a sweep with a baseline, group by group (overrides without seed)."""
    checks: list[Check] = []
    notes: list[str] = []
    config: dict[str, tuple[Change, ...]] = {}
    observed = sweep.groups()
    for key, entry in baseline.entries.items():
        if key not in observed:
            checks.append(Check(key, "-", Verdict.MISSING_RUN, message=(
                f"baseline runs '{key}' (seeds {list(entry.seeds)}) have no counterpart in "
                f"{sweep.label}")))
            continue
        good, bad = _usable(observed[key], key, allow_reused)
        checks += bad
        if not good:
            continue
        checks += split_checks(key, entry.splits, _splits(good))
        seeds = tuple(sorted(r.seed for r in good if r.seed is not None))
        if entry.seeds and seeds != tuple(entry.seeds):
            notes.append(f"{key}: baseline seeds {list(entry.seeds)}, observed {list(seeds)}")
        changes = tuple(diff_flat(entry.config, experiment_config(good[0].config)))
        if changes:
            config[key] = changes
        checks += _metric_checks(key, entry.metrics, good, tolerances)
    for key, runs in observed.items():
        if key not in baseline.entries:
            checks.append(Check(key, "-", Verdict.UNEXPECTED_RUN, message=(
                f"{len(runs)} run(s) '{key}' of {sweep.label} are not in the baseline "
                f"{baseline.path or baseline.name}")))
    env = environment_changes(baseline.environment,
                              environment_summary(r.fingerprint for r in sweep.runs), notes)
    return DriftReport("baseline check", f"baseline {baseline.path or baseline.name}",
                       sweep.label, tuple(checks), tuple(env), config, tuple(notes))


def _metric_checks(key: str, reference: dict[str, MetricStats], runs: Sequence[RunResult],
                   tolerances: ToleranceTable) -> list[Check]:
    checks = []
    for metric in sorted(set(reference) | {m for r in runs for m in r.metrics}):
        values = [r.metrics[metric] for r in runs if metric in r.metrics]
        lacking = [r.label for r in runs if metric not in r.metrics]
        if metric not in reference:
            checks.append(Check(key, metric, Verdict.NEW_METRIC, observed=_mean(values), message=(
                f"metric '{metric}' is reported by the runs but not in the reference "
                "(save a new baseline to accept it)")))
        elif lacking:
            checks.append(Check(key, metric, Verdict.MISSING_METRIC,
                                reference=reference[metric].mean, message=(
                f"metric '{metric}' is in the reference but missing from "
                f"{', '.join(lacking)}")))
        else:
            ref = reference[metric]
            checks.append(metric_check(key, metric, tolerances.for_metric(metric), ref.mean,
                                       MetricStats.of(values).mean, ref.std))
    return checks


def _mean(values: Sequence[float]) -> float | None:
    return MetricStats.of(values).mean if values else None


def compare_sweeps(a: SweepResults, b: SweepResults, tolerances: ToleranceTable,
                   allow_reused: bool = False, mismatch: Verdict = Verdict.DRIFT,
                   kind: str = "compare") -> DriftReport:
    """Compare two sweeps run by run, matching runs by run key (A is the reference)."""
    checks: list[Check] = []
    notes: list[str] = []
    by_a = {r.run_key: r for r in a.runs}
    by_b = {r.run_key: r for r in b.runs}
    if len(by_b) < len(b.runs) or len(by_a) < len(a.runs):
        notes.append("a run key occurs more than once in a sweep: the last run counts")
    groups = a.groups()
    for key, ra in by_a.items():
        label = f"{ra.group} seed={ra.seed} [{key[:8]}]"
        rb = by_b.get(key)
        if rb is None:
            checks.append(Check(label, "-", Verdict.MISSING_RUN, message=(
                f"A's {ra.label} (run key {key}) has no run with the same key in B")))
            continue
        good_a, bad_a = _usable([ra], label, True, "A")
        good_b, bad_b = _usable([rb], label, allow_reused, "B")
        checks += bad_a + bad_b
        if not (good_a and good_b):
            continue
        checks += split_checks(label, ra.splits, rb.splits)
        reference = {m: MetricStats(v, _group_std(groups.get(ra.group, []), m), 1)
                     for m, v in ra.metrics.items()}
        for check in _metric_checks(label, reference, [rb], tolerances):
            if check.verdict is Verdict.DRIFT:
                check = dataclasses.replace(check, verdict=mismatch)
            checks.append(check)
    for key, rb in by_b.items():
        if key not in by_a:
            checks.append(Check(f"{rb.group} seed={rb.seed} [{key[:8]}]", "-",
                                Verdict.UNEXPECTED_RUN, message=(
                f"B's {rb.label} (run key {key}) has no run with the same key in A")))
    if by_a and by_b and not set(by_a) & set(by_b):
        notes.append("no run key matches: run keys include the code version and the image, so "
                     "sweeps of different code never match; compare them through a baseline "
                     "(`hpcorch baseline save A` then `hpcorch baseline check B`)")
    env = environment_changes(environment_summary(r.fingerprint for r in a.runs),
                              environment_summary(r.fingerprint for r in b.runs), notes)
    return DriftReport(kind, f"A: {a.label}", f"B: {b.label}", tuple(checks), tuple(env),
                       {}, tuple(notes))


def environment_changes(before: dict[str, Any], after: dict[str, Any],
                        notes: list[str]) -> list[Change]:
    """The environment diff, unless a side recorded none (then a note says so)."""
    if not before or not after:
        side = "the reference" if not before else "the observed side"
        notes.append(f"no environment to compare: {side} has no run record with a fingerprint")
        return []
    return diff_flat(before, after)


def _group_std(runs: Sequence[RunResult], metric: str) -> float:
    """The per-seed spread of a metric in the reference's group (for noise-aware tolerances)."""
    values = [r.metrics[metric] for r in runs if r.state.ok and metric in r.metrics]
    return MetricStats.of(values).std if len(values) > 1 else 0.0
