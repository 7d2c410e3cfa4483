"""Rank files: what every rank of a multi-rank run writes about itself, and how to read it.

A job-side state file (core, like the job contract): the worker inside the job
writes one per rank (`<run_dir>/.hpcorch/ranks/rank.<r>.json`: its place, host,
pid, the devices it saw, how it ended); rank 0 puts them into the run record,
and the launch layer reads them to name the rank and host of a failure. It
lives here, below both, so neither imports the other for it.

States are `RankState` values; the JSON keeps their plain names ("RUNNING",
"SUCCEEDED", "FAILED"), so files written before the enum read the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hpcorch.jobenv import META_DIR

#: Sub-directory of a run's `.hpcorch` folder that holds per-rank files (and mpirun's output).
RANKS_DIR = "ranks"
#: The devices a rank may use, as CUDA names them (what the rank shim sets per rank).
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


class RankState(str, Enum):
    """How far one rank got, as its rank file says (the value is what the JSON holds)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RankInfo:
    """This process's place in its run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    """Rank among the run's processes on this host."""
    local_size: int = 1
    host: str = ""
    source: str = "single"
    """Which launcher's variables said so (openmpi, pmix, slurm, pmi), or single."""

    @property
    def is_root(self) -> bool:
        """True for rank 0, the rank that writes the run record and metrics."""
        return self.rank == 0

    @property
    def multi(self) -> bool:
        """True when the run has more than one rank."""
        return self.size > 1


def devices_for(local_rank: int, local_size: int, available: Sequence[str]) -> tuple[str, ...]:
    """The devices of one rank: an equal, disjoint share when there are enough for every
    rank on the node, else one device shared round-robin."""
    if not available or local_size < 1:
        return ()
    if len(available) >= local_size:
        share = len(available) // local_size
        return tuple(available[local_rank * share:(local_rank + 1) * share])
    return (available[local_rank % len(available)],)


def ranks_dir(run_dir: str | os.PathLike[str]) -> Path:
    """`<run_dir>/.hpcorch/ranks`: rank files, per-rank logs and mpirun's per-rank output."""
    return Path(run_dir) / META_DIR / RANKS_DIR


def rank_file(run_dir: str | os.PathLike[str], rank: int) -> Path:
    """Where rank `rank` writes what it saw and how it ended."""
    return ranks_dir(run_dir) / f"rank.{rank}.json"


def write_rank_file(run_dir: str | os.PathLike[str], info: RankInfo, state: RankState | str,
                    **extra: Any) -> Path:
    """Write (atomically) this rank's file: its place, host, pid, devices, state, plus `extra`.

    `state` is a RankState (its plain name is accepted too); anything else is a ValueError.
    """
    path = rank_file(run_dir, info.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**asdict(info), "pid": os.getpid(), "devices": os.environ.get(DEVICES_ENV),
            **extra, "state": RankState(state).value}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_rank_files(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every rank file of a run, by rank (unreadable ones are skipped). A `state` stays the
    plain string the file holds; compare it with RankState members (a str enum)."""
    found = []
    for path in ranks_dir(run_dir).glob("rank.*.json"):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda d: int(d.get("rank", 0)))


def rank_stderr(run_dir: str | os.PathLike[str], rank: int) -> Path | None:
    """The stderr file mpirun (--output-filename) wrote for one rank, if there is one."""
    return next(iter(sorted(ranks_dir(run_dir).glob(f"*/rank.{rank}/stderr"))), None)
