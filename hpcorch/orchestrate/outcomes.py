"""The records the orchestrator writes itself: for runs that ended without writing one,
completions of the job's own record with what only the provider knows, reuse of an
identical run's record, and a retry's run dir made ready for its next attempt."""

from __future__ import annotations

import dataclasses
import time

from hpcorch.orchestrate.retry import classify
from hpcorch.spec import FailureContext, RunHandle, RunSpec, RunState, fields_dict
from hpcorch.store.records import (
    RunRecord,
    archive_record,
    atomic_write_json,
    read_record,
    spec_path,
    write_record,
)


def synthesize(provider: str, spec: RunSpec, handle: RunHandle, state: RunState,
               context: FailureContext | None) -> RunRecord:
    """The record of a run that ended without writing one (cancelled, killed, lost),
    made from its spec and what the provider said; a failure gets its class."""
    record = RunRecord(
        run_key=spec.run_key,
        sweep_id=spec.sweep_id,
        num=spec.num,
        state=state,
        run_dir=spec.run_dir,
        overrides=spec.overrides,
        seed=spec.seed,
        failure=context,
        provider=provider,
        job_id=handle.job_id,
        node=context.node if context else "",
        ended=time.time(),
        code_version=spec.code_version,
        config=spec.config,
        attempt=spec.attempt,
        resources=fields_dict(spec.resources),
        retry=dict(spec.retry),
    )
    if context is not None and context.failure_class is None and not state.ok:
        record = dataclasses.replace(record, failure=dataclasses.replace(
            context, failure_class=classify(record)))
    return record

def completed(provider: str, record: RunRecord, handle: RunHandle,
              context: FailureContext | None = None) -> RunRecord:
    """The job's record, completed with what only the provider knows."""
    updates: dict[str, object] = {}
    if not record.provider:
        updates["provider"] = provider
    if not record.job_id:
        updates["job_id"] = handle.job_id
    if record.failure is None and not record.state.ok:
        context = context or FailureContext(provider,
                                            job_id=record.job_id or handle.job_id,
                                            node=record.node)
        updates["failure"] = dataclasses.replace(
            context,
            reason=context.reason
            or (f"{record.error.type}: {record.error.message}" if record.error else ""),
        )
    failure = updates.get("failure", record.failure)
    if isinstance(failure, FailureContext) and failure.failure_class is None:
        # Every failed record says what kind of failure it was (the retry policy's
        # reading), so `show`, reports and later processes need not guess again.
        kind = classify(dataclasses.replace(record, failure=failure))
        updates["failure"] = dataclasses.replace(failure, failure_class=kind)
    if not updates:
        return record
    # The job could not know these; its record file gains them (nothing is removed).
    completed = dataclasses.replace(record, **updates)  # type: ignore[arg-type]
    write_record(completed)
    return completed

def reused(spec: RunSpec, earlier: RunRecord) -> RunRecord:
    """A SUCCEEDED run of the same key stands for `spec`: SKIPPED, pointing at it."""
    if earlier.run_dir == spec.run_dir:
        return earlier
    record = dataclasses.replace(
        earlier,
        sweep_id=spec.sweep_id,
        num=spec.num,
        run_dir=spec.run_dir,
        overrides=spec.overrides,
        state=RunState.SKIPPED,
        reused_from=earlier.run_dir,
    )
    write_record(record)
    return record



def write_own(record: RunRecord) -> None:
    """Write a record the orchestrator made, keeping another run's record in that
    directory as an archived attempt instead of overwriting it."""
    there = read_record(record.run_dir)
    if there is not None and there.run_key != record.run_key:
        archive_record(record.run_dir)
    write_record(record)


def prepare_attempt(spec: RunSpec) -> None:
    """Right before a run is submitted: a retry's run dir keeps the failed attempt's
    record as `record.attempt-N.json`, and gets the spec the job will read."""
    if spec.attempt > 0 and read_record(spec.run_dir) is not None:
        archive_record(spec.run_dir)
    atomic_write_json(spec_path(spec.run_dir), spec.to_dict(), durable=False)
