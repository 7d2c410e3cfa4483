"""DriftReports for people (a table and the reasons beside it) and for CI (JSON, JUnit XML)."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

from hpcorch.repro.drift import DriftReport
from hpcorch.store.records import atomic_write_text

#: Environment lines printed before the rest is left to --json.
MAX_ENV_LINES = 60


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _delta(reference: float | None, delta: float | None) -> str:
    if delta is None:
        return "-"
    if reference and math.isfinite(delta) and math.isfinite(reference):
        return f"{delta:+.4g} ({delta / abs(reference):+.2%})"
    return f"{delta:+.4g}" if math.isfinite(delta) else str(delta)


def explanation(report: DriftReport) -> list[str]:
    """The lines printed after the table: failures, config and environment differences, notes."""
    failures = report.failures
    if failures:
        lines = [f"FAILED: {len(failures)} of {len(report.checks)} check(s)"]
        lines += [f"  {c.verdict.value:<16} {c.run} {c.metric}: {c.message}" for c in failures]
    else:
        lines = [f"OK: all {len(report.checks)} check(s) passed"]
    return lines + context(report)


def context(report: DriftReport) -> list[str]:
    """What may explain drift: config and environment differences, and notes."""
    lines: list[str] = []
    if report.config:
        lines.append("config differences (reference -> observed):")
        for key, changes in report.config.items():
            lines += [f"  {key}: {c.line()}" for c in changes]
    if report.environment:
        lines.append("environment differences (reference -> observed):")
        env = [f"  {c.line()}" for c in report.environment]
        lines += env[:MAX_ENV_LINES]
        if len(env) > MAX_ENV_LINES:
            lines.append(f"  ... and {len(env) - MAX_ENV_LINES} more (see --json)")
    elif report.failures:
        lines.append("environment: no differences (python, packages, git, host, cpu, gpu, "
                     "container, mpi)")
    if report.notes:
        lines.append("notes:")
        lines += [f"  {n}" for n in report.notes]
    return lines


def table_lines(report: DriftReport, limit: int | None = None) -> list[str]:
    """The drift table as aligned plain text (CI logs keep it intact).

    With `limit`, a report of more rows shows its failing rows only (every row
    is in --json either way).
    """
    header = ("run", "metric", "reference", "observed", "delta", "bound", "verdict")
    checks = list(report.checks)
    hidden = 0
    if limit is not None and len(checks) > limit:
        shown = [c for c in checks if not c.verdict.ok]
        hidden = len(checks) - len(shown)
        checks = shown
    rows = [header] + [
        (c.run, c.metric, _fmt(c.reference), _fmt(c.observed), _delta(c.reference, c.delta),
         f"[{_fmt(c.lower)}, {_fmt(c.upper)}]" if c.lower is not None else "-", c.verdict.value)
        for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 4}
    lines = [f"{report.kind}: {report.reference}  vs  {report.observed}"]
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if hidden:
        lines.append(f"({hidden} passing row(s) not shown; --all shows them, --json has them)")
    return lines


def print_report(report: DriftReport, out: TextIO | None = None,
                 limit: int | None = 200) -> None:
    """The table (run, metric, reference, observed, delta, bound, verdict) and its explanation."""
    stream = out or sys.stdout
    stream.write("\n".join(table_lines(report, limit) + explanation(report)) + "\n")
    stream.flush()


def write_json(report: DriftReport, path: str | Path) -> None:
    """The report as JSON (atomically)."""
    atomic_write_text(path, json.dumps(report.to_dict(), indent=1, sort_keys=True) + "\n")


def junit_xml(report: DriftReport) -> str:
    """The report as JUnit XML: one testcase per check, a <failure> for each that failed."""
    suites = ET.Element("testsuites", name="hpcorch", tests=str(len(report.checks)),
                        failures=str(len(report.failures)))
    suite = ET.SubElement(suites, "testsuite", name=f"hpcorch {report.kind}",
                          tests=str(len(report.checks)), failures=str(len(report.failures)),
                          errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="reference", value=report.reference)
    ET.SubElement(props, "property", name="observed", value=report.observed)
    why = "\n".join(context(report))
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"hpcorch.{report.kind}.{c.run}",
                             name=c.metric)
        if not c.verdict.ok:
            failure = ET.SubElement(case, "failure", message=f"{c.verdict.value}: {c.message}",
                                    type=c.verdict.value)
            failure.text = f"{c.message}\n\n{why}".strip()
    ET.SubElement(suite, "system-out").text = "\n".join(explanation(report))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode")


def write_junit(report: DriftReport, path: str | Path) -> None:
    """The report as a JUnit XML file (atomically)."""
    atomic_write_text(path, junit_xml(report) + "\n")
