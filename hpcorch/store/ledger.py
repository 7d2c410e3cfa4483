"""The sweep ledger: `<sweep dir>/.hpcorch/sweep.json`, the durable plan of a sweep.

It holds every RunSpec of the sweep (the command included), so any later
process can see, watch or resume the sweep without the submitting one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.spec import RunSpec
from hpcorch.store.records import META_DIR, atomic_write_json, read_json

LEDGER_FILE = "sweep.json"
EVENTS_FILE = "events.jsonl"
"""What happened to a sweep beside its runs' records: retries and submission delays."""


@dataclass(frozen=True)
class SweepInfo:
    """One sweep: where it lives, how it was started, and its runs' specs."""

    sweep_id: str
    sweep_dir: str
    provider: str
    created: float
    cwd: str = ""
    argv: tuple[str, ...] = ()
    app: str = ""
    provider_settings: dict[str, Any] = field(default_factory=dict)
    specs: tuple[RunSpec, ...] = ()
    max_parallel: int | None = None
    """`hpcorch.max_parallel`: at most this many runs queued or running at once."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["specs"] = [s.to_dict() for s in self.specs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepInfo:
        """Rebuild from `to_dict` output."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["argv"] = tuple(values.get("argv", ()))
        values["specs"] = tuple(RunSpec.from_dict(s) for s in values.get("specs", ()))
        return cls(**values)

    def with_specs(self, specs: list[RunSpec]) -> SweepInfo:
        """This sweep with `specs` merged in (a later batch adds runs; same num replaces)."""
        by_num = {s.num: s for s in self.specs}
        by_num.update({s.num: s for s in specs})
        return dataclasses.replace(self, specs=tuple(by_num[n] for n in sorted(by_num)))


def ledger_path(sweep_dir: str | Path) -> Path:
    """`<sweep_dir>/.hpcorch/sweep.json`."""
    return Path(sweep_dir) / META_DIR / LEDGER_FILE


def write_ledger(info: SweepInfo) -> None:
    """Write the ledger atomically."""
    atomic_write_json(ledger_path(info.sweep_dir), info.to_dict())


def read_ledger(sweep_dir: str | Path) -> SweepInfo | None:
    """The ledger of a sweep directory, or None."""
    path = ledger_path(sweep_dir)
    if not path.exists():
        return None
    return SweepInfo.from_dict(read_json(path))


def events_path(sweep_dir: str | Path) -> Path:
    """`<sweep_dir>/.hpcorch/events.jsonl`."""
    return Path(sweep_dir) / META_DIR / EVENTS_FILE


def append_event(sweep_dir: str | Path, data: dict[str, Any]) -> None:
    """Add one event (a JSON line, stamped with `time`) to the sweep's event log. One
    O_APPEND write per line, so lines of two writers never interleave."""
    path = events_path(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), **data}, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every event of the sweep, oldest first (a torn last line is left out)."""
    path = events_path(sweep_dir)
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
