"""What a pipeline hands a stage's Hydra multirun: the exact jobs to launch.

The stage's app runs as an ordinary multirun with hpcorch's sweeper, told where this
file is (`hydra.sweeper.jobs_file=...`). The sweeper launches exactly these override
lists (instead of expanding the command line), and the launcher gives each run its
planned number (its directory) and its upstream runs (part of its run key, checked by
the job before it starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcorch.store.records import META_DIR, atomic_write_json, read_json

#: The sweeper's setting that names the jobs file.
JOBS_SETTING = "hydra.sweeper.jobs_file"


@dataclass(frozen=True)
class StageJob:
    """One run a stage launches: its number, overrides and (stage, run key, run dir) inputs."""

    num: int
    overrides: tuple[str, ...]
    upstream: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class StageJobs:
    """The jobs of one stage's multirun."""

    stage: str
    jobs: tuple[StageJob, ...]


def jobs_path(pipeline_dir: str | Path, stage: str) -> Path:
    """`<pipeline dir>/.hpcorch/<stage>.jobs.json`."""
    return Path(pipeline_dir) / META_DIR / f"{stage}.jobs.json"


def write_stage_jobs(path: Path, stage: str, jobs: Sequence[StageJob]) -> None:
    """Write the jobs file atomically."""
    atomic_write_json(path, {"stage": stage, "jobs": [
        {"num": j.num, "overrides": list(j.overrides), "upstream": [list(u) for u in j.upstream]}
        for j in jobs]})


def read_stage_jobs(path: str | Path) -> StageJobs:
    """The jobs file `write_stage_jobs` wrote."""
    data = read_json(path)
    return StageJobs(stage=str(data["stage"]), jobs=tuple(
        StageJob(num=int(j["num"]), overrides=tuple(j["overrides"]),
                 upstream=tuple((str(s), str(k), str(d)) for s, k, d in j["upstream"]))
        for j in data["jobs"]))
