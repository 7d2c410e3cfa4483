"""DriftReports for people (a table and the reasons beside it) and for CI (JSON, JUnit XML)."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

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


def print_report(report: DriftReport, out: TextIO | None = None) -> None:
    """The table (run, metric, reference, observed, delta, bound, verdict) and its explanation."""
    stream = out or sys.stdout
    console = Console(file=stream, soft_wrap=False,
                      width=None if stream.isatty() else 200, highlight=False)
    table = Table(title=f"{report.kind}: {report.reference}  vs  {report.observed}",
                  title_justify="left")
    for column in ("run", "metric", "reference", "observed", "delta", "bound", "verdict"):
        table.add_column(column, justify="right" if column in (
            "reference", "observed", "delta") else "left")
    for c in report.checks:
        bound = f"[{_fmt(c.lower)}, {_fmt(c.upper)}]" if c.lower is not None else "-"
        verdict = Text(c.verdict.value, style="green" if c.verdict.ok else "bold red")
        table.add_row(c.run, c.metric, _fmt(c.reference), _fmt(c.observed),
                      _delta(c.reference, c.delta), bound, verdict)
    console.print(table)
    for line in explanation(report):
        console.print(line, markup=False)


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
