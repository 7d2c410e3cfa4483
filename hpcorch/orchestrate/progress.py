"""The live progress display of a sweep: done / running / failed, elapsed, ETA.

Shown on stderr when it is a terminal (or when forced on); silent otherwise,
so logs and CI output stay clean.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SweepProgress:
    """A context manager; call `update` whenever counts change."""

    def __init__(self, total: int, mode: Literal["auto", "on", "off"] = "auto",
                 label: str = "sweep") -> None:
        self.total = total
        console = Console(stderr=True)
        self.enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._label = label
        self._console = console
        self._last = (-1, -1, -1)
        self.started = time.monotonic()

    def __enter__(self) -> SweepProgress:
        if self.enabled and self.total:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total} done"),
                TextColumn("{task.fields[running]} running"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self._console, transient=False, refresh_per_second=8)
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=self.total, running=0,
                                                 failed=0)
        return self

    def update(self, done: int, running: int, failed: int) -> None:
        """New counts (done includes failed)."""
        if self._progress is None or self._task is None or (done, running, failed) == self._last:
            return
        self._last = (done, running, failed)
        self._progress.update(self._task, completed=done, running=running, failed=failed)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
