"""Where the index lives, whether it can live there, and what it needs to heal itself.

The index directory (`hpcorch.home`, `$HPCORCH_HOME` or `./.hpcorch`) is checked before
a sweep launches anything: a file in its place or a directory nobody may write is one
ConfigError, not a traceback after the runs were started. Next to the index, a small
text file lists every sweep directory the index has seen, so that a corrupt index can
be rebuilt from the record files without asking the user where they are.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import tempfile
from pathlib import Path

from hpcorch.errors import ConfigError
from hpcorch.jobenv import HOME_ENV
from hpcorch.store.records import META_DIR

INDEX_FILE = "index.db"
#: One sweep directory per line: where `rebuild` looks when the index itself is unreadable.
ROOTS_FILE = "sweep-dirs.txt"
#: SQLite's result codes for a file that is not (or no longer) a database.
_CORRUPT_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_CORRUPT_WORDS = ("file is not a database", "database disk image is malformed",
                  "file is encrypted or is not a database")


def default_home(start: str | Path | None = None) -> Path:
    """Where the index lives: $HPCORCH_HOME, else the nearest `.hpcorch` with an index
    in the current directory or above it, else `./.hpcorch`."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / META_DIR / INDEX_FILE).is_file():
            return directory / META_DIR
    return here / META_DIR


def resolve_home(home: str | Path | None, key: str = "hpcorch.home") -> tuple[Path, str]:
    """(index directory, the setting that chose it): `home` when given (named `key`),
    else $HPCORCH_HOME, else the default."""
    if home:
        return Path(home).expanduser(), key
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser(), HOME_ENV
    return default_home(), key


def check_home(path: str | Path, key: str = "hpcorch.home") -> Path:
    """`path` as a usable index directory (created if missing), or ConfigError naming
    `key` (the setting that chose it), the path and what is allowed."""
    home = Path(path).expanduser()
    allowed = "must be a directory hpcorch can create and write (it holds the index)"
    if home.exists() and not home.is_dir():
        raise ConfigError(key, str(path), f"{allowed}; it is a file")
    try:
        home.mkdir(parents=True, exist_ok=True)
        # Writing is the only test that holds on every file system (read-only mounts,
        # ACLs, root squash): os.access says yes to root everywhere.
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(key, str(path), f"{allowed}: {exc.strerror or exc}") from None
    index = home / INDEX_FILE
    if index.exists() and not index.is_file():
        raise ConfigError(key, str(path), f"{allowed}; {index} is not a file")
    return home.resolve()


def is_corruption(exc: BaseException) -> bool:
    """True when SQLite says the index file is damaged (not busy, locked or missing)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if getattr(exc, "sqlite_errorname", "") in _CORRUPT_CODES:
        return True
    return any(word in str(exc).lower() for word in _CORRUPT_WORDS)


def is_healthy(path: Path) -> bool:
    """True when `path` is missing or a database SQLite checks as sound (quick_check)."""
    if not path.exists():
        return True
    try:
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return False
        raise
    return bool(row) and row[0] == "ok"


def set_aside(path: Path) -> Path:
    """Move a damaged index (and its WAL files) to `index.db.corrupt-<time>`; never deletes.
    Returns the new path of the database file (absent when there was nothing to move:
    another process got there first). OSError when it cannot be moved."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(Path(str(path) + suffix), Path(str(aside) + suffix))
        except FileNotFoundError:  # absent, or another process set it aside first
            continue
    return aside


def remember_sweep_dir(home: Path, sweep_dir: str) -> None:
    """Add a sweep directory to the roots file (once); a failure here never stops a sweep,
    it only makes a later self-repair find less (`hpcorch rebuild DIR` finds the rest)."""
    if sweep_dir in known_sweep_dirs(home):
        return
    try:
        # One short line appended with O_APPEND: concurrent writers never interleave it.
        fd = os.open(home / ROOTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (sweep_dir + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def known_sweep_dirs(home: Path) -> list[str]:
    """Every sweep directory the index has registered (from the roots file)."""
    try:
        text = (home / ROOTS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return list(dict.fromkeys(line for line in text.splitlines() if line.strip()))
