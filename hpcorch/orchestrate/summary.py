"""The summary table printed when a sweep ends (and by `hpcorch status`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hpcorch.spec import RunState
from hpcorch.store.records import RunRecord

_STYLE = {
    RunState.SUCCEEDED: "green", RunState.SKIPPED: "cyan", RunState.FAILED: "bold red",
    RunState.CANCELLED: "yellow", RunState.TIMEOUT: "red", RunState.UNKNOWN: "magenta",
}


def metric_columns(rows: Sequence[dict[str, Any]], limit: int) -> list[str]:
    """The first `limit` metric names, in order of first appearance."""
    names: list[str] = []
    for row in rows:
        for name in row.get("metrics") or {}:
            if name not in names:
                names.append(name)
    return names[:limit]


def format_duration(seconds: float | None) -> str:
    """`0.42s`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def summary_table(rows: Sequence[dict[str, Any]], *, title: str, metrics: int = 6) -> Table:
    """A table of runs: num, overrides, state, duration, job, key metrics; failures explained.

    `rows` are `RunRow.to_dict()`-shaped mappings.
    """
    names = metric_columns(rows, metrics)
    table = Table(title=Text(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("overrides")
    table.add_column("state")
    table.add_column("duration", justify="right")
    table.add_column("job")
    for name in names:
        table.add_column(name, justify="right")
    for row in rows:
        state = RunState(row["state"])
        # Text(), not str: an override like `hosts=[a:4]` must not be read as rich markup.
        cells: list[str | Text] = [str(row["num"]), Text(" ".join(row["overrides"]) or "(none)"),
                 Text(state.value, style=_STYLE.get(state, "")),
                 format_duration(row.get("duration_s")), Text(row.get("job_id") or "")]
        metrics_of = row.get("metrics") or {}
        cells += [_fmt(metrics_of.get(n)) for n in names]
        table.add_row(*cells)
        if row.get("failure") and not state.ok:
            table.add_row("", Text(f"↳ {row['failure']}", style="red"), *[""] * (3 + len(names)))
    return table


def print_summary(rows: Sequence[dict[str, Any]], *, title: str, metrics: int = 6,
                  console: Console | None = None, stderr: bool = False) -> None:
    """Print `summary_table` to stdout (or stderr), plain text when that is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    out = console or Console(soft_wrap=False, stderr=stderr,
                             width=None if stream.isatty() else 200)
    out.print(summary_table(rows, title=title, metrics=metrics))


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return f"{value:.3e}"


def failure_message(record: RunRecord) -> str:
    """`run #3 (lr=0.1) FAILED: ValueError: ...  [run dir]`."""
    what = " ".join(record.overrides) or "(no overrides)"
    if record.error is not None:
        cause = f"{record.error.type}: {record.error.message}"
    elif record.failure is not None:
        cause = record.failure.one_line()
    else:
        cause = record.state.value
    return f"run #{record.num} ({what}) {record.state.value}: {cause}  [{record.run_dir}]"


def report(records: Sequence[RunRecord], sweep_id: str, provider: str, metrics: int = 6) -> None:
    """Print the end-of-sweep table, what was skipped, and where to look next, on stderr:
    stdout belongs to the research code (a user pipes an app's output; Hydra's suites
    count the lines it prints)."""
    counts: dict[RunState, int] = {}
    for rec in records:
        counts[rec.state] = counts.get(rec.state, 0) + 1
    parts = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items())
    rows = []
    for rec in records:
        failure = "" if rec.state.ok else failure_message(rec).split(": ", 1)[-1]
        rows.append({"num": rec.num, "overrides": list(rec.overrides), "state": rec.state.value,
                     "duration_s": rec.duration_s, "job_id": rec.job_id,
                     "metrics": rec.metrics, "failure": failure})
    print_summary(rows, title=f"sweep {sweep_id} on {provider}: {parts}", metrics=metrics,
                  stderr=True)
    skipped = counts.get(RunState.SKIPPED, 0)
    if skipped:
        print(f"skipped {skipped} run(s) that already SUCCEEDED with the same run key "
              "(hpcorch.rerun=true runs them again)", file=sys.stderr)
    print(f"details: hpcorch status {sweep_id}", file=sys.stderr, flush=True)
