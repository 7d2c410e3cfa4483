"""Run records: the durable truth of what a run did, one JSON file per run directory.

A record is written once, atomically (temporary file, fsync, rename), by
whoever finishes the run: the worker inside the job on success or error, the
orchestrator for runs that never got that far (cancelled, killed, lost).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hpcorch.errors import StoreError
from hpcorch.jobenv import META_DIR, SPEC_FILE
from hpcorch.spec import FailureContext, RunState, fields_dict

#: Everything hpcorch keeps in a run directory lives under this sub-directory.
RECORD_FILE = "record.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
RETURN_PICKLE = "return.pkl"
"""A return value JSON cannot hold exactly, pickled by the worker for the launcher."""
SCHEMA_VERSION = 1


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Files are created world-readable like any other output (mkstemp would make them 0600).
_FILE_MODE = 0o666 & ~_current_umask()


def meta_dir(run_dir: str | Path) -> Path:
    """`<run_dir>/.hpcorch`."""
    return Path(run_dir) / META_DIR


def record_path(run_dir: str | Path) -> Path:
    """Where a run's record lives."""
    return meta_dir(run_dir) / RECORD_FILE


def spec_path(run_dir: str | Path) -> Path:
    """Where a run's RunSpec is written before it is submitted."""
    return meta_dir(run_dir) / SPEC_FILE


@contextmanager
def atomic_file(path: str | Path, *, binary: bool = False,
                durable: bool = True) -> Iterator[IO[Any]]:
    """A handle to write `path` through: readers see the old content or the new, never a
    torn one (a temp file beside it, renamed over it on success, removed on failure).

    `durable=False` skips the fsync: for files that can be recreated from a
    durable one (a run's spec, from the sweep ledger).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes it private; outputs are for reading
        mode: str = "wb" if binary else "w"
        with os.fdopen(fd, mode, encoding=None if binary else "utf-8") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    """Write a text file atomically (see `atomic_file`)."""
    with atomic_file(path, durable=durable) as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, data: Any, *, durable: bool = True) -> None:
    """`atomic_write_text` of indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n",
                      durable=durable)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a corrupt one into a StoreError that names it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc


@dataclass(frozen=True)
class ErrorInfo:
    """The exception a run's code raised."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class RunRecord:
    """What one run did. The store, the CLI and baseline checks read only this."""

    run_key: str
    sweep_id: str
    num: int
    state: RunState
    run_dir: str
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    return_value: Any = None
    error: ErrorInfo | None = None
    failure: FailureContext | None = None
    provider: str = ""
    job_id: str = ""
    node: str = ""
    started: float | None = None
    ended: float | None = None
    code_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    seeded: tuple[str, ...] = ()
    reused_from: str = ""
    attempt: int = 0
    resources: dict[str, Any] = field(default_factory=dict)
    """What this attempt asked for (a retry may ask for more than the one before)."""
    retry: dict[str, Any] = field(default_factory=dict)
    """The retry policy it ran under (`hpcorch.retry`) and, on a retry, why it was retried
    (`retried_for`: the failure class of the attempt before)."""
    schema: int = SCHEMA_VERSION

    @property
    def duration_s(self) -> float | None:
        """Wall time of the run, when it ran."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (sharing this record's values)."""
        data = fields_dict(self)
        data["state"] = self.state.value
        data["duration_s"] = self.duration_s
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record read from disk (unknown keys from newer versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = RunState(values["state"])
        values["overrides"] = tuple(values.get("overrides", ()))
        values["seeded"] = tuple(values.get("seeded", ()))
        if values.get("error"):
            values["error"] = ErrorInfo(**values["error"])
        if values.get("failure"):
            values["failure"] = FailureContext(**values["failure"])
        return cls(**values)


def write_record(record: RunRecord) -> Path:
    """Write a record into its run directory, atomically; returns the path."""
    path = record_path(record.run_dir)
    atomic_write_json(path, record.to_dict())
    return path


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The record of a run directory, or None when the run has not finished."""
    path = record_path(run_dir)
    if not path.exists():
        return None
    try:
        return RunRecord.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: not a valid hpcorch run record: {exc}") from exc


def run_record(run_dir: str | Path, run_key: str, sweep_id: str | None = None) -> RunRecord | None:
    """The record in `run_dir` only if it is the record of run `run_key` (and of sweep
    `sweep_id` when given): a directory reused by another run (a fixed sweep dir given
    another config) holds a record that must never stand for this run."""
    record = read_record(run_dir)
    if record is None or record.run_key != run_key:
        return None
    if sweep_id is not None and record.sweep_id != sweep_id:
        return None
    return record


#: Files of a finished attempt that must not be mistaken for the next attempt's.
ATTEMPT_FILES = (RECORD_FILE, RETURN_PICKLE)


def archive_record(run_dir: str | Path) -> int:
    """Keep a finished attempt's record (and its pickled return value) as
    `record.attempt-N.json` (`return.attempt-N.pkl`); returns N."""
    directory = meta_dir(run_dir)
    attempt = 0
    while (directory / f"record.attempt-{attempt}.json").exists():
        attempt += 1
    for name in ATTEMPT_FILES:
        path = directory / name
        if path.exists():
            stem, dot, ext = name.partition(".")
            os.replace(path, directory / f"{stem}.attempt-{attempt}{dot}{ext}")
    return attempt


def tail_text(path: str | os.PathLike[str] | None, lines: int = 20,
              max_bytes: int = 65536) -> str:
    """The last `lines` lines of a text file (all that was read when `lines` is 0);
    '' when there is no such file."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:]) if lines else data


def metrics_from(value: Any) -> dict[str, float]:
    """The numeric metrics in a task's return value (a dict of numbers, or one number)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {"value": float(value)}
    if hasattr(value, "item") and not hasattr(value, "keys"):  # numpy scalar
        try:
            return metrics_from(value.item())
        except (TypeError, ValueError):
            return {}
    out: dict[str, float] = {}
    if hasattr(value, "items"):
        for key, item in value.items():
            if isinstance(item, bool):
                continue
            if hasattr(item, "item"):
                try:
                    item = item.item()
                except (TypeError, ValueError):
                    continue
            if isinstance(item, (int, float)):
                out[str(key)] = float(item)
    return out


def jsonable(value: Any) -> Any:
    """The value itself if it survives JSON, else its plain-data form, else its repr."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    try:
        return json.loads(json.dumps(value, default=_plain))
    except (TypeError, ValueError):
        return repr(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)
