"""Planning a batch: which runs are submitted, and which reuse a record of the same run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpcorch.errors import ConfigError
from hpcorch.spec import ResourceLimits, Resources, RunSpec, RunState
from hpcorch.store.index import StoreIndex
from hpcorch.store.records import RunRecord, archive_record, read_record, run_record


@dataclass(frozen=True)
class Plan:
    """Which runs of a batch will be submitted and which reuse an earlier success."""

    to_run: tuple[RunSpec, ...]
    reused: tuple[tuple[RunSpec, RunRecord], ...]


def plan_batch(specs: Sequence[RunSpec], index: StoreIndex, *,
               rerun: bool = False) -> tuple[Plan, list[str]]:
    """Split a batch into runs to submit and runs that already SUCCEEDED.

    A record is reused only for a run with the same run key. A run's own
    record file is the truth (it survives a crashed orchestrator that never
    indexed it); elsewhere the index finds an identical run (same run key)
    that succeeded in another sweep, and that run's record is read again to
    confirm it. A run directory holding a failed attempt, or the record of
    another run (a fixed `hydra.sweep.dir` given another config), keeps that
    record as `record.attempt-N.json` and the run is planned as attempt N+1.

    Returns the plan and the notices to show the user (one line each).
    """
    notices: list[str] = []
    done = {} if rerun else index.succeeded(s.run_key for s in specs)
    to_run, reused = [], []
    for spec in specs:
        own = read_record(spec.run_dir)
        if (
            own is not None
            and own.run_key == spec.run_key
            and own.sweep_id == spec.sweep_id
            and own.state.ok
            and not rerun
        ):
            reused.append((spec, own))
            continue
        if own is not None:
            attempt = archive_record(spec.run_dir)
            if own.run_key != spec.run_key:
                notices.append(
                    f"#{spec.num}: {spec.run_dir} held the record of another run "
                    f"(run key {own.run_key[:12]}, {' '.join(own.overrides) or 'no overrides'})"
                    f"; kept as record.attempt-{attempt}.json, running this one")
            spec = dataclasses.replace(spec, attempt=attempt + 1)
        earlier = (
            run_record(done[spec.run_key], spec.run_key) if spec.run_key in done else None
        )
        if earlier is not None and earlier.state is RunState.SUCCEEDED:
            reused.append((spec, earlier))
        else:
            to_run.append(spec)
    return Plan(tuple(to_run), tuple(reused)), notices


def check_limits(specs: Sequence[RunSpec],
                 limits_for: Callable[[Resources], ResourceLimits | None]) -> None:
    """ConfigError, naming the setting, its value and the limit, for the first run that
    could never fit what the provider's engine allows (`limits_for`: Provider.limits)."""
    for resources in dict.fromkeys(s.resources for s in specs):
        limits = limits_for(resources)
        problems = limits.violations(resources) if limits else []
        if problems:
            raise ConfigError(*problems[0])
