"""A pipeline stage's inputs: the upstream runs a run consumes, read from their records.

    from hpcorch import repro
    for run in repro.upstream("prepare"):       # the prepare runs this run was matched to
        data = np.load(run.dir / "shard.npz")

The list comes from the run's own spec (`HPCORCH_SPEC`, written before the run was
submitted), so it is the same in a container and on a remote node as on the
submitting host: no path is hard-coded, no scheduler is asked. Outside a pipeline
(or outside hpcorch) it is empty, so an app that reads its inputs this way still
runs on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.errors import HpcorchError
from hpcorch.jobenv import SPEC_ENV
from hpcorch.spec import RunSpec
from hpcorch.store.records import read_json, read_record


class UpstreamNotReady(HpcorchError):
    """An upstream run a job consumes has no SUCCEEDED record of the expected run key."""


@dataclass(frozen=True)
class UpstreamRun:
    """One upstream run, as its record says it ended; `dir` holds the files it wrote."""

    stage: str
    num: int
    run_key: str
    dir: Path
    overrides: tuple[str, ...]
    metrics: dict[str, float]
    config: dict[str, Any]
    seed: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    """Its environment and what hpcorch.repro recorded (seeds, splits), as in its record."""

    def override(self, key: str, default: str | None = None) -> str | None:
        """The value this run was given for `key` on its command line (`shard=1` -> "1")."""
        for item in self.overrides:
            name, sep, value = item.lstrip("+~").partition("=")
            if sep and name == key:
                return value
        return default


def _own_spec() -> RunSpec | None:
    path = os.environ.get(SPEC_ENV)
    if not path or not Path(path).exists():
        return None
    return RunSpec.from_dict(read_json(path))


def check_upstream(upstream: Sequence[tuple[str, str, str]]) -> list[UpstreamRun]:
    """Every upstream run's record, each SUCCEEDED with the expected run key; raises
    UpstreamNotReady naming the first that is not (the job must not start on it)."""
    runs = []
    for stage, key, run_dir in upstream:
        record = read_record(run_dir)
        where = f"upstream {stage} run in {run_dir}"
        if record is None:
            raise UpstreamNotReady(f"{where} has no record: it has not finished")
        if record.run_key != key:
            raise UpstreamNotReady(f"{where} holds run {record.run_key}, not {key}: it was "
                                   "run again for another configuration")
        if not record.state.ok:
            raise UpstreamNotReady(f"upstream {stage} #{record.num} is {record.state.value}, "
                                   "not SUCCEEDED")
        # A reused run (SKIPPED) points at the directory its files were written in.
        where_files = record.reused_from or run_dir
        runs.append(UpstreamRun(stage=stage, num=record.num, run_key=key, dir=Path(where_files),
                                overrides=tuple(record.overrides), metrics=dict(record.metrics),
                                config=dict(record.config or {}), seed=record.seed,
                                fingerprint=dict(record.fingerprint or {})))
    return runs


def upstream(stage: str | None = None) -> list[UpstreamRun]:
    """The upstream runs this run consumes (of `stage`, or of every stage), in the
    order the pipeline matched them; empty outside a pipeline."""
    spec = _own_spec()
    if spec is None:
        return []
    wanted = [u for u in spec.upstream if stage is None or u[0] == stage]
    return check_upstream(wanted)

