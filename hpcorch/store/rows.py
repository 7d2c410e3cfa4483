"""One run as the SQLite index knows it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hpcorch.spec import RunState


@dataclass(frozen=True)
class RunRow:
    """One run as the index knows it."""

    sweep_id: str
    num: int
    run_key: str
    state: RunState
    run_dir: str
    overrides: tuple[str, ...]
    provider: str = ""
    job_id: str = ""
    node: str = ""
    started: float | None = None
    ended: float | None = None
    metrics: dict[str, float] | None = None
    failure: str = ""

    @property
    def duration_s(self) -> float | None:
        """Wall time, when known."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for `--json`)."""
        return {
            "sweep_id": self.sweep_id,
            "num": self.num,
            "run_key": self.run_key,
            "state": self.state.value,
            "run_dir": self.run_dir,
            "overrides": list(self.overrides),
            "provider": self.provider,
            "job_id": self.job_id,
            "node": self.node,
            "started": self.started,
            "ended": self.ended,
            "duration_s": self.duration_s,
            "metrics": self.metrics or {},
            "failure": self.failure,
        }


def row_from_db(r: tuple[Any, ...]) -> RunRow:
    """A RunRow from a `SELECT * FROM runs` row."""
    (
        sweep_id,
        num,
        run_key,
        state,
        run_dir,
        overrides,
        provider,
        job_id,
        node,
        started,
        ended,
        metrics,
        failure,
        _updated,
    ) = r
    return RunRow(
        sweep_id=sweep_id,
        num=num,
        run_key=run_key,
        state=RunState(state),
        run_dir=run_dir,
        overrides=tuple(json.loads(overrides)),
        provider=provider or "",
        job_id=job_id or "",
        node=node or "",
        started=started,
        ended=ended,
        metrics=json.loads(metrics) if metrics else None,
        failure=failure or "",
    )
