"""What the job-array providers (Slurm, Grid Engine) share about their arrays: the job
name that finds an array again after a crash, the map file an array task reads, and
where a sweep keeps its scheduler files. Nothing here knows a scheduler."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpcorch.spec import RunSpec
from hpcorch.store.records import META_DIR, atomic_write_json, meta_dir, read_json, spec_path

#: Every array's job name: `hpcorch-<sweep id>-<token>`.
JOB_PREFIX = "hpcorch-"
#: The map file's layout version.
MAP_VERSION = 1


def job_name(sweep_id: str, token: str) -> str:
    """The job name of an array of a sweep."""
    return f"{JOB_PREFIX}{sweep_id}-{token}"


def job_name_token(name: str, sweep_id: str | None = None,
                   token_start: str = "") -> str | None:
    """The token of an hpcorch job name (of that sweep, when given; starting with
    `token_start`, when given); None for any other job."""
    prefix = f"{JOB_PREFIX}{sweep_id}-" if sweep_id is not None else JOB_PREFIX
    if not name.startswith(prefix) or "-" not in name[len(JOB_PREFIX):]:
        return None
    token = name.rsplit("-", 1)[1]
    return token if token and token.startswith(token_start) else None


def signal_grace(wanted_s: int, limit_s: int) -> int:
    """Seconds before a task's time limit at which its run is told: the provider's
    `signal_grace_s`, but at most half of a short limit (and at least one second)."""
    return min(wanted_s, max(1, limit_s // 2))


def map_header(sweep_id: str, name: str, pack: int,
               tasks: Sequence[Sequence[RunSpec]]) -> dict[str, Any]:
    """The part of a map file every array task reads: the runs of each array index."""
    return {
        "version": MAP_VERSION,
        "sweep_id": sweep_id,
        "job_name": name,
        "pack": pack,
        "tasks": [[{"num": s.num, "run_key": s.run_key, "run_dir": s.run_dir} for s in task]
                  for task in tasks],
    }


def cached_map(cache: dict[str, dict[str, Any]], path: str) -> dict[str, Any]:
    """A map file's content, read once per path (one that cannot be read: empty)."""
    if path not in cache:
        try:
            cache[path] = read_json(path)
        except (OSError, ValueError):
            cache[path] = {}
    return cache[path]


def task_runs(data: dict[str, Any], position: int) -> list[tuple[str, str]]:
    """(run key, run dir) of each run of the `position`-th array index (0-based) of a
    map file; none for an index it does not have."""
    tasks = data.get("tasks", [])
    if not isinstance(tasks, list) or not 0 <= position < len(tasks):
        return []
    return [(str(e["run_key"]), str(e["run_dir"])) for e in tasks[position]]


def scheduler_dir_for(specs: Sequence[RunSpec], name: str) -> str:
    """`<sweep dir>/.hpcorch/<name>`: the sweep dir is the common parent of the run dirs."""
    parents = [os.path.dirname(os.path.abspath(s.run_dir)) for s in specs]
    return os.path.join(os.path.commonpath(parents), META_DIR, name)


def write_task_inputs(specs: Iterable[RunSpec], log_dir: str) -> None:
    """What an array task reads, on disk before the array is submitted: each run's spec
    file (the orchestrator writes it; direct callers may not) and its `.hpcorch`
    directory, and the scheduler's log directory."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        path = spec_path(spec.run_dir)
        if not path.exists():
            atomic_write_json(path, spec.to_dict())
        meta_dir(spec.run_dir).mkdir(parents=True, exist_ok=True)
