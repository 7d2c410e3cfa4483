"""The SQLite index of sweeps and runs, for fast queries; rebuildable from the files.

Only the orchestrator and the CLI write it (never the jobs on compute nodes).
WAL mode and a busy timeout let several login-node processes share it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.errors import StoreError
from hpcorch.spec import RunSpec, RunState
from hpcorch.store.ledger import LEDGER_FILE, SweepInfo, read_ledger
from hpcorch.store.records import META_DIR, RunRecord, read_record

HOME_ENV = "HPCORCH_HOME"
INDEX_FILE = "index.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    sweep_dir TEXT NOT NULL,
    provider TEXT NOT NULL,
    created REAL NOT NULL,
    cwd TEXT,
    argv TEXT,
    app TEXT,
    n_runs INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    sweep_id TEXT NOT NULL,
    num INTEGER NOT NULL,
    run_key TEXT NOT NULL,
    state TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    overrides TEXT NOT NULL,
    provider TEXT,
    job_id TEXT,
    node TEXT,
    started REAL,
    ended REAL,
    metrics TEXT,
    failure TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (sweep_id, num)
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs(run_key, state);
"""


def default_home(start: str | Path | None = None) -> Path:
    """Where the index lives: $HPCORCH_HOME, else the nearest `.hpcorch` with an index
    in the current directory or above it, else `./.hpcorch`."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / META_DIR / INDEX_FILE).exists():
            return directory / META_DIR
    return here / META_DIR


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


class StoreIndex:
    """The SQLite index. Opening it creates the file and schema if needed."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.path = self.home / INDEX_FILE

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the index: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # The record files are the durable truth; the index may lose its last
            # transaction on power loss (rebuild recovers it), so skip the per-commit fsync.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(_SCHEMA)
            with conn:
                yield conn
        finally:
            conn.close()

    # -- writing -----------------------------------------------------------
    def put_sweep(self, info: SweepInfo) -> None:
        """Insert or update a sweep and register its planned runs as PENDING (if new)."""
        now = time.time()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO sweeps VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sweep_id) DO UPDATE SET "
                "sweep_dir=excluded.sweep_dir, provider=excluded.provider, n_runs=excluded.n_runs",
                (
                    info.sweep_id,
                    info.sweep_dir,
                    info.provider,
                    info.created,
                    info.cwd,
                    json.dumps(list(info.argv)),
                    info.app,
                    len(info.specs),
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO runs (sweep_id, num, run_key, state, run_dir, overrides, "
                "provider, updated) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        s.sweep_id,
                        s.num,
                        s.run_key,
                        RunState.PENDING.value,
                        s.run_dir,
                        json.dumps(list(s.overrides)),
                        info.provider,
                        now,
                    )
                    for s in info.specs
                ],
            )

    def set_states(self, updates: Iterable[tuple[RunSpec, RunState, str]]) -> None:
        """Record in-flight states: (spec, state, job id)."""
        now = time.time()
        with self._connect() as conn:
            conn.executemany(
                "UPDATE runs SET state=?, job_id=COALESCE(NULLIF(?, ''), job_id), run_key=?, "
                "updated=? WHERE sweep_id=? AND num=?",
                [
                    (state.value, job_id, spec.run_key, now, spec.sweep_id, spec.num)
                    for spec, state, job_id in updates
                ],
            )

    def put_records(self, records: Iterable[RunRecord]) -> None:
        """Index finished runs from their records."""
        now = time.time()
        rows = []
        for r in records:
            failure = r.failure.one_line() if r.failure else ""
            if not failure and r.error:
                failure = f"{r.error.type}: {r.error.message}"
            rows.append(
                (
                    r.sweep_id,
                    r.num,
                    r.run_key,
                    r.state.value,
                    r.run_dir,
                    json.dumps(list(r.overrides)),
                    r.provider,
                    r.job_id,
                    r.node,
                    r.started,
                    r.ended,
                    json.dumps(r.metrics),
                    failure,
                    now,
                )
            )
        with self._connect() as conn:
            conn.executemany(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(sweep_id, num) DO UPDATE SET run_key=excluded.run_key, "
                "state=excluded.state, run_dir=excluded.run_dir, overrides=excluded.overrides, "
                "provider=COALESCE(NULLIF(excluded.provider, ''), provider), "
                "job_id=COALESCE(NULLIF(excluded.job_id, ''), job_id), node=excluded.node, "
                "started=excluded.started, ended=excluded.ended, metrics=excluded.metrics, "
                "failure=excluded.failure, updated=excluded.updated",
                rows,
            )

    # -- reading -----------------------------------------------------------
    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep with its run counts per state, newest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT s.sweep_id, s.sweep_dir, s.provider, s.created, s.n_runs, s.argv, "
                "r.state, COUNT(r.num) FROM sweeps s LEFT JOIN runs r USING (sweep_id) "
                "GROUP BY s.sweep_id, r.state ORDER BY s.created DESC"
            ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for sid, sdir, provider, created, n_runs, argv, state, count in rows:
            entry = out.setdefault(
                sid,
                {
                    "sweep_id": sid,
                    "sweep_dir": sdir,
                    "provider": provider,
                    "created": created,
                    "n_runs": n_runs,
                    "argv": json.loads(argv or "[]"),
                    "states": {},
                },
            )
            if state:
                entry["states"][state] = count
        return list(out.values())

    def sweep(self, ref: str) -> dict[str, Any]:
        """One sweep by id, unique id prefix, or sweep directory; StoreError if none/ambiguous."""
        candidates = [
            s
            for s in self.sweeps()
            if s["sweep_id"] == ref
            or s["sweep_id"].startswith(ref)
            or os.path.abspath(ref) == s["sweep_dir"]
        ]
        exact = [s for s in candidates if s["sweep_id"] == ref]
        if exact:
            return exact[0]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise StoreError(f"no sweep {ref!r} in {self.path} (see `hpcorch sweeps`)")
        raise StoreError(
            f"sweep {ref!r} is ambiguous: " + ", ".join(s["sweep_id"] for s in candidates)
        )

    def runs(self, sweep_id: str | None = None) -> list[RunRow]:
        """The runs of one sweep (or all), in sweep order."""
        query = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if sweep_id is not None:
            query += " WHERE sweep_id=?"
            args = (sweep_id,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY sweep_id, num", args).fetchall()
        return [_row(r) for r in rows]

    def find_run(self, ref: str) -> RunRow:
        """A run by run key (or unique prefix), `SWEEP/NUM`, or run directory."""
        runs = self.runs()
        if "/" in ref and not os.path.isdir(ref):
            sweep_ref, _, num = ref.rpartition("/")
            sid = self.sweep(sweep_ref)["sweep_id"]
            found = [r for r in runs if r.sweep_id == sid and str(r.num) == num]
        else:
            absolute = os.path.abspath(ref)
            found = [r for r in runs if r.run_dir == absolute]
            if not found:
                found = [r for r in runs if r.run_key.startswith(ref)]
                # The same experiment may have run in several sweeps: newest wins.
                keys = {r.run_key for r in found}
                if len(keys) > 1:
                    raise StoreError(f"run {ref!r} is ambiguous: " + ", ".join(sorted(keys)))
        if not found:
            raise StoreError(f"no run {ref!r} in {self.path} (see `hpcorch status SWEEP`)")
        return max(found, key=lambda r: (r.ended or 0.0, r.started or 0.0))

    def succeeded(self, run_keys: Iterable[str]) -> dict[str, str]:
        """Run key -> run directory of a SUCCEEDED run with that key, for the keys that have one."""
        keys = list(run_keys)
        found: dict[str, str] = {}
        with self._connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, run_dir in conn.execute(
                    f"SELECT run_key, run_dir FROM runs WHERE state='SUCCEEDED' "
                    f"AND run_key IN ({marks}) ORDER BY ended",
                    chunk,
                ):
                    found[key] = run_dir
        return found

    # -- rebuilding --------------------------------------------------------
    def rebuild(self, roots: Iterable[str | Path]) -> tuple[int, int]:
        """Drop the index and recreate it from the ledgers and records under `roots`.

        Returns (sweeps, runs) indexed.
        """
        ledgers = sorted(
            {
                p.parent.parent
                for root in roots
                if Path(root).exists()
                for p in Path(root).rglob(f"{META_DIR}/{LEDGER_FILE}")
            }
        )
        if self.path.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        n_runs = 0
        for sweep_dir in ledgers:
            info = read_ledger(sweep_dir)
            if info is None:
                continue
            self.put_sweep(info)
            records = [r for r in (read_record(s.run_dir) for s in info.specs) if r is not None]
            self.put_records(records)
            n_runs += len(info.specs)
        return len(ledgers), n_runs


def _row(r: tuple[Any, ...]) -> RunRow:
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
