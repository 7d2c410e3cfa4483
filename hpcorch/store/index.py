"""The SQLite index of sweeps and runs, for fast queries; rebuildable from the files.

Only the orchestrator and the CLI write it (never the jobs on compute nodes).
WAL mode and a busy timeout let several login-node processes share it.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hpcorch.errors import StoreError
from hpcorch.spec import RunSpec, RunState
from hpcorch.store.home import (
    HOME_ENV,
    INDEX_FILE,
    check_home,
    default_home,
    is_corruption,
    is_healthy,
    known_sweep_dirs,
    remember_sweep_dir,
    resolve_home,
    set_aside,
)
from hpcorch.store.ledger import LEDGER_FILE, SweepInfo, read_ledger
from hpcorch.store.records import META_DIR, RunRecord, read_record
from hpcorch.store.rows import RunRow, row_from_db

__all__ = ["HOME_ENV", "INDEX_FILE", "RunRow", "StoreIndex", "check_home", "default_home",
           "open_index"]

F = TypeVar("F", bound=Callable[..., Any])


def open_index(home: str | Path | None = None, key: str = "hpcorch.home") -> StoreIndex:
    """The index in `home` (else $HPCORCH_HOME, else the default), its directory checked
    first: ConfigError naming `key` (or HPCORCH_HOME) when it is a file or unwritable.
    Call it before anything is launched."""
    path, setting = resolve_home(home, key)
    return StoreIndex(check_home(path, setting))


def _self_repairing(method: F) -> F:
    """Run an index method; if SQLite finds the file damaged, set it aside, rebuild the
    index from the record files, tell the user in one line, and run the method again."""

    @functools.wraps(method)
    def wrapper(self: StoreIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise StoreError(f"{self.path}: {exc}") from None
            if self._repairing:
                raise StoreError(
                    f"{self.path} is corrupt ({exc}) and could not be rebuilt by itself; "
                    "`hpcorch rebuild [SWEEP_ROOT ...]` repairs it") from None
            self.repair(str(exc))
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]

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


class StoreIndex:
    """The SQLite index. Opening it creates the file and schema if needed."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.path = self.home / INDEX_FILE
        self._repairing = False

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
    @_self_repairing
    def put_sweep(self, info: SweepInfo) -> None:
        """Insert or update a sweep and register its planned runs as PENDING (if new)."""
        now = time.time()
        with self._connect() as conn:
            remember_sweep_dir(self.home, info.sweep_dir)
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

    @_self_repairing
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

    @_self_repairing
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
    @_self_repairing
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

    @_self_repairing
    def runs(self, sweep_id: str | None = None) -> list[RunRow]:
        """The runs of one sweep (or all), in sweep order."""
        query = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if sweep_id is not None:
            query += " WHERE sweep_id=?"
            args = (sweep_id,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY sweep_id, num", args).fetchall()
        return [row_from_db(r) for r in rows]

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

    @_self_repairing
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
        if not is_healthy(self.path):  # a damaged index is kept aside, never deleted
            aside = set_aside(self.path)
            print(f"hpcorch: {self.path} was corrupt; kept it as {aside}", file=sys.stderr)
        for suffix in ("", "-wal", "-shm"):  # a sound index is derived data: replaced
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


    def repair(self, cause: str) -> tuple[int, int]:
        """Set a corrupt index aside and rebuild it from the sweep directories it had
        registered (and ./multirun); says so on stderr in one line. StoreError, naming
        `hpcorch rebuild`, when the file cannot be moved or the rebuild fails."""
        try:
            aside = set_aside(self.path)
        except OSError as exc:
            raise StoreError(
                f"{self.path} is corrupt ({cause}) and cannot be moved aside ({exc.strerror}); "
                "move it away, then `hpcorch rebuild [SWEEP_ROOT ...]` repairs it") from None
        if not aside.exists():  # another process set it aside and rebuilds it
            return 0, 0
        roots = [*known_sweep_dirs(self.home), str(Path(os.getcwd()) / "multirun")]
        self._repairing = True
        try:
            n_sweeps, n_runs = self.rebuild(roots)
        except (OSError, sqlite3.Error, StoreError, ValueError) as exc:
            raise StoreError(
                f"{self.path} was corrupt ({cause}), kept as {aside}; rebuilding it failed "
                f"({exc}): `hpcorch rebuild [SWEEP_ROOT ...]` repairs it") from None
        finally:
            self._repairing = False
        print(f"hpcorch: the index {self.path} was corrupt ({cause}); kept it as {aside} and "
              f"rebuilt it from the record files: {n_sweeps} sweep(s), {n_runs} run(s)",
              file=sys.stderr, flush=True)
        return n_sweeps, n_runs
