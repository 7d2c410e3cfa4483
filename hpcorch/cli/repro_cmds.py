"""Reproducibility commands: baseline save/check/args, compare, verify, diff.

Exit codes (baseline check, compare, verify):
    0  every check passed
    1  drift: a metric out of tolerance, a run or metric missing on either
       side, a failed or reused run, a changed data split, nondeterminism
    2  usage error or unusable input (unknown sweep, malformed baseline file:
       the message names the file and line)
`hpcorch diff` exits 0 when the two runs' configs and environments are the
same and 1 when they differ (like diff(1)).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from hpcorch.cli.inspect_cmds import open_index
from hpcorch.errors import ConfigError, HpcorchError, StoreError
from hpcorch.providers import DEFAULT_PROVIDER
from hpcorch.repro.baselines import (
    BaselineError,
    build_baseline,
    load_baseline,
    save_baseline,
    sweep_overrides,
)
from hpcorch.repro.diffing import (
    diff_flat,
    environment_of,
    execution_config,
    experiment_config,
)
from hpcorch.repro.drift import (
    DriftReport,
    check_baseline,
    compare_sweeps,
    config_tolerances,
    split_checks,
)
from hpcorch.repro.reports import print_report, write_json, write_junit
from hpcorch.repro.results import RunResult, load_ledger, load_sweep, result_from_record
from hpcorch.repro.tolerances import ToleranceTable, parse_table, parse_tolerance
from hpcorch.store.records import read_record

#: Written by `baseline save` when no tolerance is given: 3 seed standard deviations,
#: never narrower than 0.001 (absolute). Review it for metrics of other scales.
DEFAULT_TOLERANCE = {"k": 3.0, "floor": 0.001}
#: Rows of the drift table printed in full; a bigger report prints its failing rows only.
TABLE_LIMIT = 200


def _tolerance_file(path: str) -> ToleranceTable:
    """Tolerances from a YAML file: a `tolerances:` mapping (a baseline file works) or bare."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BaselineError(f"{path}{line}: cannot read tolerances: {exc}") from exc
    table = data.get("tolerances", data) if isinstance(data, dict) else data
    try:
        return parse_table(table)
    except ConfigError as exc:
        raise BaselineError(f"{path}: {exc}") from exc


def _tolerance_options(args: argparse.Namespace) -> ToleranceTable:
    """--tolerances FILE, then each --tolerance METRIC=YAML on top."""
    table = _tolerance_file(args.tolerances) if args.tolerances else ToleranceTable()
    extra = {}
    for item in args.tolerance or ():
        metric, eq, text = item.partition("=")
        if not eq or not metric:
            raise ConfigError("--tolerance", item, "must be METRIC=YAML, e.g. "
                                                  "test_acc='{lower: -0.03}'")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--tolerance {metric}", text, f"is not YAML: {exc}") from exc
        extra[metric] = parse_tolerance(raw, f"--tolerance {metric}")
    return ToleranceTable(extra).merged_over(table)


def _finish(report: DriftReport, args: argparse.Namespace) -> int:
    print_report(report, limit=None if args.all else TABLE_LIMIT)
    if args.json:
        write_json(report, args.json)
    if args.junit:
        write_junit(report, args.junit)
    return 0 if report.ok else 1


def cmd_baseline_save(args: argparse.Namespace) -> int:
    """Write the baseline of a sweep."""
    out = Path(args.output)
    if out.exists() and not args.force:
        raise HpcorchError(f"{out} exists; pass --force to replace it (review the diff after)")
    sweep = load_sweep(args.sweep, open_index(args))
    given = _tolerance_options(args)
    tolerances = given.merged_over(config_tolerances(sweep))
    if not tolerances.by_metric:
        tolerances = parse_table({"default": DEFAULT_TOLERANCE})
    baseline = build_baseline(sweep, args.name or out.stem, tolerances)
    save_baseline(baseline, out)
    n_runs = sum(len(e.seeds) or 1 for e in baseline.entries.values())
    print(f"wrote {out}: {len(baseline.entries)} run group(s) from {n_runs} run(s) of "
          f"{sweep.label}; tolerances: "
          + ", ".join(f"{m} {t.describe()}" for m, t in tolerances.by_metric.items()))
    return 0


def cmd_baseline_check(args: argparse.Namespace) -> int:
    """Check a sweep against a baseline file."""
    baseline = load_baseline(args.against)
    sweep = load_sweep(args.sweep, open_index(args))
    tolerances = _tolerance_options(args).merged_over(
        baseline.tolerances.merged_over(config_tolerances(sweep)))
    return _finish(check_baseline(baseline, sweep, tolerances, args.allow_reused), args)


def cmd_baseline_args(args: argparse.Namespace) -> int:
    """Print the overrides of the sweep a baseline came from, one per line (for scripts)."""
    baseline = load_baseline(args.baseline)
    overrides = baseline.source.get("overrides")
    if not overrides:
        argv = baseline.source.get("argv") or ()
        overrides = sweep_overrides(argv) if argv else []
    if not overrides:
        raise BaselineError(f"{args.baseline}: source.overrides is empty: the sweep to run "
                            "is unknown")
    for item in overrides:
        print(item)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two sweeps run by run (matched by run key)."""
    index = open_index(args)
    a, b = load_sweep(args.sweep_a, index), load_sweep(args.sweep_b, index)
    tolerances = _tolerance_options(args).merged_over(config_tolerances(a))
    return _finish(compare_sweeps(a, b, tolerances, args.allow_reused), args)


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-run a sample of a sweep's runs and demand identical metrics."""
    from hpcorch.repro.verify import verify_sweep

    index = open_index(args)
    sweep = load_sweep(args.sweep, index)
    info = load_ledger(sweep.sweep_dir, index)
    settings: dict[str, Any] | None = None
    if args.provider == DEFAULT_PROVIDER:  # cold: a fresh interpreter per run, as a job
        settings = {"name": DEFAULT_PROVIDER, "warm": False}
    if args.workers is not None:
        settings = dict(settings or info.provider_settings or {"name": DEFAULT_PROVIDER})
        settings["workers"] = args.workers
    report = verify_sweep(sweep, info, index, sample=args.sample, seed=args.seed,
                          out_dir=args.out, provider_settings=settings)
    return _finish(report, args)


def _find_run(ref: str, args: argparse.Namespace) -> RunResult:
    if Path(ref).is_dir():
        record = read_record(ref)
        if record is not None:
            return result_from_record(record, str(Path(ref).resolve()))
    row = open_index(args).find_run(ref)
    record = read_record(row.run_dir)
    if record is None:
        raise StoreError(f"run {ref!r} ({row.run_dir}) has no record yet: it has not finished")
    return result_from_record(record, row.run_dir)


def cmd_diff(args: argparse.Namespace) -> int:
    """What differs between two runs: overrides, config, metrics, splits, environment."""
    a, b = _find_run(args.run_a, args), _find_run(args.run_b, args)
    sections = {
        "overrides": diff_flat({"overrides": list(a.overrides)}, {"overrides": list(b.overrides)}),
        "seed": diff_flat({"seed": a.seed}, {"seed": b.seed}),
        "config (experiment)": diff_flat(experiment_config(a.config), experiment_config(b.config)),
        "config (execution)": diff_flat(execution_config(a.config), execution_config(b.config)),
        "metrics": diff_flat(a.metrics, b.metrics),
        "determinism": diff_flat(_pins(a), _pins(b)),
        "environment": diff_flat(environment_of(a.fingerprint), environment_of(b.fingerprint)),
    }
    splits = split_checks("", a.splits, b.splits)
    if args.json:
        print(json.dumps({"a": a.run_dir, "b": b.run_dir,
                          **{k: [c.to_dict() for c in v] for k, v in sections.items()},
                          "splits": [c.message for c in splits]}, indent=1, default=str))
    else:
        print(f"A: {a.label}  [{a.run_key}]  {a.state.value}  {a.run_dir}")
        print(f"B: {b.label}  [{b.run_key}]  {b.state.value}  {b.run_dir}")
        for title, changes in sections.items():
            if changes:
                print(f"{title}:")
                for change in changes:
                    print(f"  {change.line()}")
        for check in splits:
            print(f"splits:\n  {check.metric}: {check.message}")
        if not any(sections.values()) and not splits:
            print("no differences")
    differ = any(sections[k] for k in ("config (experiment)", "environment")) or bool(splits)
    return 1 if differ else 0


def _pins(run: RunResult) -> dict[str, Any]:
    repro = run.fingerprint.get("repro") or {}
    return {"seeded": list(repro.get("seeded", [])), "strict": repro.get("strict"),
            "threads": repro.get("threads")}


def _report_options(p: argparse.ArgumentParser, tolerances: bool = True) -> None:
    if tolerances:
        p.add_argument("--tolerances", metavar="FILE",
                       help="YAML tolerances (a `tolerances:` mapping; a baseline file works)")
        p.add_argument("--tolerance", action="append", metavar="METRIC=YAML",
                       help="one metric's tolerance, e.g. test_acc='{lower: -0.03}' "
                            "or default='{rel: 0.01}' (repeatable; wins over files)")
    p.add_argument("--all", action="store_true", help=f"print every row (default: past "
                   f"{TABLE_LIMIT} rows only the failing ones)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--junit", metavar="FILE", help="also write the report as JUnit XML")


def register(sub: Any) -> None:
    """Add these commands to the CLI."""
    epilog = "exit codes: 0 ok, 1 drift (any failed check), 2 usage or malformed input"
    p = sub.add_parser("baseline", help="save or check reference metrics (baselines/NAME.yaml)")
    bsub = p.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    s = bsub.add_parser("save", help="write a sweep's metrics as a baseline file")
    s.add_argument("sweep", help="sweep id, unique prefix or directory")
    s.add_argument("-o", "--output", required=True, help="the baseline file to write")
    s.add_argument("--name", help="baseline name (default: the file's stem)")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    s.add_argument("--tolerances", metavar="FILE", help="YAML tolerances to write into the file")
    s.add_argument("--tolerance", action="append", metavar="METRIC=YAML",
                   help="a metric's tolerance to write (default: the sweep's "
                        "hpcorch.repro.tolerances, else default={k: 3, floor: 0.001})")
    s.set_defaults(func=cmd_baseline_save)
    c = bsub.add_parser("check", help="check a sweep against a baseline file", epilog=epilog)
    c.add_argument("sweep", help="sweep id, unique prefix or directory")
    c.add_argument("--against", required=True, metavar="FILE", help="the baseline file")
    c.add_argument("--allow-reused", action="store_true",
                   help="accept runs that reused an identical earlier run's result")
    _report_options(c)
    c.set_defaults(func=cmd_baseline_check)
    a = bsub.add_parser("args", help="print the overrides of the sweep a baseline came from")
    a.add_argument("baseline", help="the baseline file")
    a.set_defaults(func=cmd_baseline_args)
    p = sub.add_parser("compare", help="compare two sweeps run by run (matched by run key)",
                       epilog=epilog)
    p.add_argument("sweep_a", help="the reference sweep (id, prefix or directory)")
    p.add_argument("sweep_b", help="the sweep to check against it")
    p.add_argument("--allow-reused", action="store_true",
                   help="accept B runs that reused an identical earlier run's result")
    _report_options(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("verify", help="re-run runs of a sweep and require identical metrics",
                       epilog=epilog)
    p.add_argument("sweep", help="sweep id, unique prefix or directory")
    p.add_argument("--sample", type=int, help="re-run this many runs, chosen at random "
                                              "(default: every successful run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    p.add_argument("--out", help="directory of the re-runs (default: SWEEP_DIR/verify/STAMP)")
    p.add_argument("--provider", choices=("same", DEFAULT_PROVIDER), default="same",
                   help="re-run on the sweep's own provider (default) or locally, cold")
    p.add_argument("--workers", type=int, help="runs at once (local provider)")
    _report_options(p, tolerances=False)
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("diff", help="what differs between two runs (exit 1 if config or "
                                    "environment differ)")
    p.add_argument("run_a", help="run key (or prefix), SWEEP/NUM, or run directory")
    p.add_argument("run_b", help="run key (or prefix), SWEEP/NUM, or run directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)
