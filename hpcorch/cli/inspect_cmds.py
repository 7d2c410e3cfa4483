"""Read-only commands: sweeps, status, show, logs, rebuild."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hpcorch.errors import StoreError
from hpcorch.orchestrate.pipeline.state import is_pipeline
from hpcorch.orchestrate.summary import print_summary
from hpcorch.providers import provider_class
from hpcorch.store.home import is_healthy, known_sweep_dirs
from hpcorch.store.index import RunRow, StoreIndex
from hpcorch.store.index import open_index as open_index_at
from hpcorch.store.ledger import read_ledger
from hpcorch.store.records import (
    STDERR_FILE,
    STDOUT_FILE,
    RunRecord,
    meta_dir,
    read_json,
    read_record,
)

#: An earlier attempt's record, kept by store.records.archive_record.
_ATTEMPT_FILE = re.compile(r"^record\.attempt-(\d+)\.json$")


def open_index(args: argparse.Namespace) -> StoreIndex:
    """The index selected by --home (or $HPCORCH_HOME, or the default), its directory
    checked: ConfigError (exit 2) naming --home or HPCORCH_HOME when it is unusable."""
    return open_index_at(args.home, key="--home")


def refresh(index: StoreIndex, rows: list[RunRow]) -> list[RunRow]:
    """Pick up records that finished runs wrote since the index last saw them."""
    fresh = []
    for row in rows:
        if not row.state.terminal:
            record = read_record(row.run_dir)
            if record is not None and record.sweep_id == row.sweep_id and record.state.terminal:
                fresh.append(record)
    if fresh:
        index.put_records(fresh)
        done = {(r.sweep_id, r.num) for r in fresh}
        by_id = {(r.sweep_id, r.num): r for r in index.runs(rows[0].sweep_id)} if rows else {}
        rows = [
            by_id.get((r.sweep_id, r.num), r) if (r.sweep_id, r.num) in done else r for r in rows
        ]
    return rows


def cmd_sweeps(args: argparse.Namespace) -> int:
    """List sweeps, newest first."""
    index = open_index(args)
    sweeps = index.sweeps()
    if args.json:
        print(json.dumps(sweeps, indent=1))
        return 0
    table = Table(title=f"sweeps in {index.path}", title_justify="left")
    for col in ("sweep", "created", "provider", "runs", "states", "directory"):
        table.add_column(col)
    for s in sweeps:
        states = " ".join(f"{k.lower()}={v}" for k, v in sorted(s["states"].items()))
        created = dt.datetime.fromtimestamp(s["created"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            s["sweep_id"], created, s["provider"], str(s["n_runs"]), states, s["sweep_dir"]
        )
    _console().print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """A table of one sweep's runs (the newest sweep when none is named)."""
    if args.sweep and is_pipeline(args.sweep):
        from hpcorch.cli import pipeline_cmds

        return pipeline_cmds.status(args)
    index = open_index(args)
    sweeps = index.sweeps()
    if not sweeps:
        print(f"no sweeps in {index.path}", file=sys.stderr)
        return 1
    sweep = index.sweep(args.sweep) if args.sweep else sweeps[0]
    rows = refresh(index, index.runs(sweep["sweep_id"]))
    links = dashboard_links(sweep["sweep_dir"], rows)
    if args.json:
        print(
            json.dumps(
                {"sweep": sweep, "runs": [r.to_dict() for r in rows], "dashboard": links}, indent=1
            )
        )
        return 0
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state.value] = counts.get(row.state.value, 0) + 1
    parts = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    print_summary(
        [r.to_dict() for r in rows],
        console=_console(),
        title=f"sweep {sweep['sweep_id']} on {sweep['provider']}: {parts}  ({sweep['sweep_dir']})",
    )
    for link in links:
        print(f"dashboard: {link}")
    return 0 if all(r.state.ok for r in rows) else 3


def dashboard_links(sweep_dir: str, rows: list[RunRow]) -> list[str]:
    """Dashboard pages of a sweep's jobs, from providers whose engine has a dashboard
    (their optional `dashboard_links(provider_settings, job_ids)`)."""
    info = read_ledger(sweep_dir)
    if info is None:
        return []
    try:
        links = getattr(provider_class(info.provider), "dashboard_links", None)
        if not callable(links):
            return []
        return list(links(info.provider_settings or {}, [r.job_id for r in rows if r.job_id]))
    except Exception:  # noqa: BLE001 - a link is a courtesy; the table is what matters
        return []


def cmd_show(args: argparse.Namespace) -> int:
    """Print a run's whole record as JSON (stdout) and, when it ran more than once, one
    line per attempt, oldest first (stderr, so stdout stays one JSON document)."""
    row = open_index(args).find_run(args.run)
    record = read_record(row.run_dir)
    earlier = attempt_records(row.run_dir)
    if earlier:
        lines = [attempt_line(r) for r in earlier]
        lines.append(attempt_line(record) if record is not None
                     else f"attempt {len(earlier)}: not finished yet")
        print(f"{len(lines)} attempts of run {row.run_key}:", *lines, sep="\n  ",
              file=sys.stderr)
    if record is None:
        print(
            json.dumps(
                {**row.to_dict(), "note": "no record yet: the run has not finished"}, indent=1
            )
        )
        return 0
    print(json.dumps(record.to_dict(), indent=1, sort_keys=True, default=str))
    return 0


def attempt_records(run_dir: str | Path) -> list[RunRecord]:
    """The records of a run's earlier attempts (`.hpcorch/record.attempt-N.json`),
    oldest first; one that cannot be read is skipped with a warning on stderr."""
    found = []
    directory = meta_dir(run_dir)
    paths = directory.glob("record.attempt-*.json") if directory.is_dir() else ()
    for path in paths:
        match = _ATTEMPT_FILE.match(path.name)
        if match is None:
            continue
        try:
            found.append((int(match.group(1)), RunRecord.from_dict(read_json(path))))
        except (KeyError, TypeError, ValueError, OSError, StoreError) as exc:
            print(f"warning: {path}: not a valid hpcorch run record: {exc}", file=sys.stderr)
    return [record for _, record in sorted(found, key=lambda item: item[0])]


def attempt_line(record: RunRecord) -> str:
    """`attempt 1  FAILED  OOM  cpus=1 mem_gb=0.5 time_min=60  job=123  retried after
    OOM; [slurm job=123 node=c1] signal=9: killed ...`: one attempt of a run."""
    failure = record.failure
    klass = failure.failure_class.value if failure and failure.failure_class else "-"
    res = record.resources
    asked = " ".join(f"{key}={res[key]}" for key in ("cpus", "mem_gb", "time_min") if key in res)
    if failure is not None:
        reason = failure.one_line()
    elif record.error is not None:
        reason = f"{record.error.type}: {record.error.message}".strip()
    else:
        reason = ""
    retried_for = record.retry.get("retried_for")
    why = "; ".join(p for p in (f"retried after {retried_for}" if retried_for else "", reason)
                    if p)
    parts = [f"attempt {record.attempt}", record.state.value, klass, asked or "resources=?",
             f"job={record.job_id or '?'}", why]
    return "  ".join(p for p in parts if p)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a run's logs: stdout, stderr and the Hydra job log."""
    row = open_index(args).find_run(args.run)
    record = read_record(row.run_dir)
    job_name = (record.fingerprint.get("job_name") if record else None) or "*"
    paths = [
        meta_dir(row.run_dir) / STDOUT_FILE,
        meta_dir(row.run_dir) / STDERR_FILE,
        *sorted(Path(row.run_dir).glob(f"{job_name}.log")),
    ]
    shown = 0
    for path in paths:
        if path.exists():
            print(f"==> {path} <==")
            sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
            shown += 1
    if not shown:
        print(f"no logs yet in {row.run_dir}", file=sys.stderr)
        return 1
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Recreate the index from the sweep ledgers and run records under the given roots."""
    index = open_index(args)
    roots = list(args.roots)
    if not roots:
        # The sweep dirs the index registered (readable even when the index is not),
        # their parents (sweeps beside them), and ./multirun.
        known = known_sweep_dirs(index.home)
        roots = sorted(
            {str(Path(s["sweep_dir"]).parent) for s in _safe_sweeps(index)}
            | set(known) | {str(Path(os.getcwd()) / "multirun")}
        )
    n_sweeps, n_runs = index.rebuild(roots)
    print(f"rebuilt {index.path}: {n_sweeps} sweep(s), {n_runs} run(s) from {', '.join(roots)}")
    return 0


def _safe_sweeps(index: StoreIndex) -> list[dict[str, Any]]:
    if not is_healthy(index.path):  # rebuild sets it aside; reading it would repair it twice
        return []
    try:
        return index.sweeps()
    except Exception:  # noqa: BLE001 - a broken index is exactly what rebuild repairs
        return []


def _console() -> Console:
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def register(sub: Any) -> None:
    """Add these commands to the CLI."""
    p = sub.add_parser("sweeps", help="list sweeps")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweeps)
    p = sub.add_parser("status", help="the runs of a sweep (exit 3 if any did not succeed)")
    p.add_argument(
        "sweep", nargs="?", help="sweep id, unique prefix or directory (default: newest)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("show", help="one run's whole record")
    p.add_argument("run", help="run key (or prefix), SWEEP/NUM, or run directory")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("logs", help="one run's logs")
    p.add_argument("run", help="run key (or prefix), SWEEP/NUM, or run directory")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("rebuild", help="recreate the index from run directories")
    p.add_argument(
        "roots", nargs="*", help="directories to scan (default: known sweep roots and ./multirun)"
    )
    p.set_defaults(func=cmd_rebuild)
