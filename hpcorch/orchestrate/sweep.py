"""The orchestrator: plan -> submit -> watch -> collect -> record, for any provider.

It talks to a provider only through the batched contract and to the store
through record files (truth) and the SQLite index (for queries). Interrupting
it (SIGINT/SIGTERM) cancels what is still open, records those runs as
CANCELLED and leaves every finished record in place, so running the same
sweep again finishes the rest.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from hpcorch.errors import HpcorchError
from hpcorch.orchestrate.outcomes import completed, prepare_attempt, reused, synthesize, write_own
from hpcorch.orchestrate.plan import Plan, check_limits, plan_batch
from hpcorch.orchestrate.progress import SweepProgress
from hpcorch.orchestrate.queue import SubmitQueue
from hpcorch.orchestrate.retry import decide
from hpcorch.providers.base import Provider
from hpcorch.spec import (
    FailureContext,
    ResourceLimits,
    Resources,
    RunHandle,
    RunSpec,
    RunState,
    RunStatus,
    fields_dict,
)
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo, append_event, write_ledger
from hpcorch.store.records import (
    RunRecord,
    atomic_write_json,
    read_record,
    record_path,
    run_record,
    spec_path,
)


class SweepInterrupted(HpcorchError):
    """The sweep was stopped by SIGINT/SIGTERM; open runs were cancelled and recorded."""


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into an exception while the sweep is watched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Orchestrator:
    """Runs batches of RunSpecs on one provider and keeps the store up to date."""

    def __init__(
        self,
        provider: Provider,
        index: StoreIndex,
        *,
        rerun: bool = False,
        progress: Literal["auto", "on", "off"] = "auto",
        sleep: Callable[[float], None] = time.sleep,
        max_parallel: int | None = None,
    ) -> None:
        self.provider = provider
        self.index = index
        self.rerun = rerun
        self.progress_mode = progress
        self._sleep = sleep
        self.notices: list[str] = []
        """What planning had to say (e.g. another run's record archived), for stderr."""
        self.queue = SubmitQueue(provider, max_parallel=max_parallel,
                                 prepare=prepare_attempt, event=self._event)
        """Runs waiting to be submitted: first attempts held back by max_parallel or a
        transient refusal, and retries (see hpcorch.orchestrate.queue)."""
        self._limits: dict[Resources, ResourceLimits | None] = {}
        self._sweep_dirs: dict[str, str] = {}  # sweep id -> its directory (event logs)
        self._just_submitted: list[str] = []  # the runs the queue's last turn submitted
        self.retries = True
        """Whether failed runs are retried by this orchestrator (False: another process
        owns the sweep and retries them; this one only watches)."""

    # -- plan --------------------------------------------------------------
    def plan(self, specs: Sequence[RunSpec]) -> Plan:
        """Split a batch into runs to submit and runs that already SUCCEEDED (see
        `plan_batch`); what planning had to say is kept in `notices`."""
        plan, notices = plan_batch(specs, self.index, rerun=self.rerun)
        self.notices += notices
        return plan

    # -- the whole cycle ---------------------------------------------------
    def run(self, info: SweepInfo, specs: Sequence[RunSpec]) -> list[RunRecord]:
        """Plan, submit, watch and collect one batch; records come back in `specs` order."""
        records, open_runs = self.submit(info, specs)
        records.update(self.watch(open_runs, total=len(specs), already=len(records)))
        return [records[_jid(s)] for s in specs]

    def submit(
        self, info: SweepInfo, specs: Sequence[RunSpec]
    ) -> tuple[dict[str, RunRecord], dict[str, tuple[RunSpec, RunHandle]]]:
        """Plan and submit (or find again) a batch; returns (reused records, open runs).
        Runs that could never fit the provider's limits are refused first (ConfigError)."""
        check_limits(specs, self.limits_for)
        self._sweep_dirs[info.sweep_id] = info.sweep_dir
        write_ledger(info)
        self.index.put_sweep(info)
        plan = self.plan(specs)
        for notice in self.notices:
            print(f"hpcorch: {notice}", file=sys.stderr, flush=True)
        self.notices.clear()
        records: dict[str, RunRecord] = {}
        for spec, earlier in plan.reused:
            records[_jid(spec)] = reused(spec, earlier)
        self.index.put_records(records.values())
        open_runs: dict[str, tuple[RunSpec, RunHandle]] = {}
        if not plan.to_run:
            return records, open_runs
        for spec in plan.to_run:  # recreatable from the (durable) ledger: no fsync per run
            atomic_write_json(spec_path(spec.run_dir), spec.to_dict(), durable=False)
        with _signals_raise():
            try:
                keys = [s.run_key for s in plan.to_run]
                found = {h.run_key: h for h in self.provider.lookup(keys, sweep_id=info.sweep_id)}
                for spec in plan.to_run:
                    if spec.run_key in found:
                        open_runs[_jid(spec)] = (spec, found[spec.run_key])
                self.index.set_states(
                    (s, RunState.SUBMITTED, h.job_id) for s, h in open_runs.values()
                )
                self.queue.add([s for s in plan.to_run if s.run_key not in found])
                records.update(self._submit_due(open_runs))
            except KeyboardInterrupt as exc:
                self._interrupted(open_runs, {}, exc)
        return records, open_runs

    def limits_for(self, resources: Resources) -> ResourceLimits | None:
        """The provider's limits for runs of this shape (asked once per shape)."""
        if resources not in self._limits:
            ask = getattr(self.provider, "limits", None)
            self._limits[resources] = ask(resources) if callable(ask) else None
        return self._limits[resources]

    def drain(self) -> None:
        """Submit every queued run, waiting out backoff delays (a detached sweep on a
        provider that keeps its runs: nothing needs watching meanwhile)."""
        open_runs: dict[str, tuple[RunSpec, RunHandle]] = {}
        while self.queue:
            self._submit_due(open_runs, in_flight=0)
            wait = self.queue.due_in()
            if wait:
                self._sleep(wait)

    def retry_failed(self, finished: dict[str, RunRecord],
                     specs: Sequence[RunSpec]) -> dict[str, RunRecord]:
        """Queue the retries the policy grants to failed runs found finished (a sweep
        watched again by another process); returns the records that stay final."""
        by_jid = {_jid(s): s for s in specs}
        final = {}
        for jid, record in finished.items():
            spec = by_jid.get(jid)
            if spec is None or record.state.ok or not self._retry(spec, record):
                final[jid] = record
        return final

    def attach(
        self, specs: Sequence[RunSpec]
    ) -> tuple[dict[str, RunRecord], dict[str, tuple[RunSpec, RunHandle]], list[RunSpec]]:
        """For a sweep submitted by another process: (finished records, open runs the
        engine still knows, runs that are neither finished nor known)."""
        finished: dict[str, RunRecord] = {}
        pending = []
        for spec in specs:
            record = run_record(spec.run_dir, spec.run_key, spec.sweep_id)
            if record is not None and record.state.terminal:
                # What the job could not know (its failure's class and context) is added
                # here too: a retry decided by this process must read the same record.
                finished[_jid(spec)] = record if record.state.ok else completed(
                    self.provider.name, record,
                    RunHandle(self.provider.name, spec.run_key, record.job_id))
            else:
                pending.append(spec)
        sweeps = {s.sweep_id for s in pending}  # one, unless specs of several were mixed
        found = (
            {h.run_key: h for h in self.provider.lookup(
                [s.run_key for s in pending], sweep_id=sweeps.pop() if len(sweeps) == 1 else None)}
            if pending
            else {}
        )
        open_runs = {_jid(s): (s, found[s.run_key]) for s in pending if s.run_key in found}
        lost = [s for s in pending if s.run_key not in found]
        self.index.put_records(finished.values())
        return finished, open_runs, lost

    def watch(
        self, open_runs: dict[str, tuple[RunSpec, RunHandle]], *, total: int, already: int = 0
    ) -> dict[str, RunRecord]:
        """Watch open runs until every one is terminal; returns their records."""
        finished: dict[str, RunRecord] = {}
        with SweepProgress(total, self.progress_mode) as progress, _signals_raise():
            try:
                self._watch(open_runs, finished, progress, already)
            except KeyboardInterrupt as exc:
                self._interrupted(open_runs, finished, exc)
        return finished

    def cancel(self, specs: Sequence[RunSpec], reason: str) -> list[RunRecord]:
        """Cancel every unfinished run of `specs` the engine knows and record it CANCELLED."""
        _, open_runs, lost = self.attach(specs)
        closed: dict[str, RunRecord] = {}
        self._cancel_open(open_runs, closed, reason=reason)
        for spec in lost:
            record = synthesize(self.provider.name,
                spec,
                RunHandle(self.provider.name, spec.run_key, ""),
                RunState.CANCELLED,
                FailureContext(self.provider.name, reason=reason),
            )
            write_own(record)
            closed[_jid(spec)] = record
        self.index.put_records(closed.values())
        return list(closed.values())

    def _interrupted(
        self,
        open_runs: dict[str, tuple[RunSpec, RunHandle]],
        finished: dict[str, RunRecord],
        exc: BaseException,
    ) -> None:
        reason = f"sweep interrupted ({exc or 'SIGINT'})"
        self._cancel_open(open_runs, finished, reason=reason)
        queued = self.queue.specs()
        self.queue.clear()
        for spec in queued:  # never submitted: its last attempt's record stays, else one now
            if read_record(spec.run_dir) is None:
                record = self._unsubmitted(spec, RunState.CANCELLED,
                                           FailureContext(self.provider.name, reason=reason))
                write_own(record)
                finished[_jid(spec)] = record
        raise SweepInterrupted(
            f"sweep interrupted: {len(open_runs)} open run(s) cancelled and recorded; "
            "run the same command again (or `hpcorch resume`) to finish them"
        ) from None

    # -- watch ---------------------------------------------------------------
    def _watch(
        self,
        open_runs: dict[str, tuple[RunSpec, RunHandle]],
        finished: dict[str, RunRecord],
        progress: SweepProgress,
        already: int,
    ) -> None:
        interval = self.provider.poll_interval
        states: dict[str, RunState] = {}
        unindexed: list[RunRecord] = []
        last_flush = time.monotonic()
        record_files = {jid: str(record_path(spec.run_dir)) for jid, (spec, _) in open_runs.items()}
        try:
            while open_runs or self.queue:
                changed = False
                if self.queue:
                    submitted_before = len(open_runs)
                    failed_now = self._submit_due(open_runs)
                    for jid in self._just_submitted:
                        record_files[jid] = str(record_path(open_runs[jid][0].run_dir))
                        states[jid] = RunState.SUBMITTED
                    finished.update(failed_now)
                    unindexed += failed_now.values()
                    changed = changed or bool(failed_now) or len(open_runs) != submitted_before
                # Record files first: a finished run says so without asking the scheduler.
                # Not for runs still queued when last asked: the status call below finds
                # them if they finished since (record_for reads their record then).
                for jid, (spec, handle) in list(open_runs.items()):
                    if states.get(jid) is RunState.SUBMITTED \
                            or not os.path.exists(record_files[jid]):
                        continue
                    record = run_record(spec.run_dir, spec.run_key, spec.sweep_id)
                    if record is not None and record.state.terminal \
                            and record.attempt >= spec.attempt:
                        record = completed(self.provider.name, record, handle)
                        del open_runs[jid]
                        changed = True
                        if not self._retry(spec, record):
                            finished[jid] = record
                            unindexed.append(record)
                if open_runs:
                    pairs = list(open_runs.items())
                    for (jid, (spec, handle)), st in zip(
                        pairs, self.provider.status([h for _, (_, h) in pairs]), strict=True
                    ):
                        if st.state.terminal:
                            record = self.record_for(spec, handle, st)
                            del open_runs[jid]
                            changed = True
                            if not self._retry(spec, record):
                                finished[jid] = record
                                unindexed.append(record)
                        elif states.get(jid) is not st.state:
                            states[jid] = st.state
                            changed = True
                now = time.monotonic()
                # The index is for queries, not truth: write it in batches, at most twice a second.
                if unindexed and (not open_runs or now - last_flush > 0.5):
                    self.index.put_records(unindexed)
                    unindexed, last_flush = [], now
                if changed:
                    running = sum(1 for j in open_runs if states.get(j) is RunState.RUNNING)
                    failed = sum(1 for r in finished.values() if not r.state.ok)
                    progress.update(already + len(finished), running, failed)
                    interval = self.provider.poll_interval
                else:
                    interval = min(interval * 1.5, self.provider.max_poll_interval)
                if open_runs or self.queue:
                    pause = interval * random.uniform(0.9, 1.1)
                    due = self.queue.due_in()
                    self._pause(pause if due is None else min(pause, max(due, 0.01)))
        finally:
            # Also on an interrupt: what finished must be findable (and skipped) later.
            if unindexed:
                self.index.put_records(unindexed)

    def _submit_due(self, open_runs: dict[str, tuple[RunSpec, RunHandle]],
                    in_flight: int | None = None) -> dict[str, RunRecord]:
        """One turn of the submission queue: what it submitted joins `open_runs`; the
        records of runs it gave up on (refused too often) come back."""
        turn = self.queue.submit_due(len(open_runs) if in_flight is None else in_flight)
        self._just_submitted = [_jid(spec) for spec, _ in turn.runs]
        for spec, handle in turn.runs:
            open_runs[_jid(spec)] = (spec, handle)
        if turn.runs:
            self.index.set_states((s, RunState.SUBMITTED, h.job_id) for s, h in turn.runs)
        given_up = {}
        for spec, context in turn.given_up:
            record = self._unsubmitted(spec, RunState.FAILED, context)
            write_own(record)
            given_up[_jid(spec)] = record
        return given_up

    def _retry(self, spec: RunSpec, record: RunRecord) -> bool:
        """Queue the next attempt of a failed run when its policy grants one (True)."""
        if record.state.ok or not self.retries:
            return False
        decision = decide(spec, record, self.limits_for(spec.resources))
        if decision.retry is None:
            if decision.failure_class not in (None,) and record.state is not RunState.CANCELLED:
                self._event({"event": "not_retried", "num": spec.num, "sweep_id": spec.sweep_id,
                             "why": decision.why})
            return False
        print(f"hpcorch: run #{spec.num} (attempt {record.attempt}) {decision.why}",
              file=sys.stderr, flush=True)
        self._event({"event": "retry", "num": spec.num, "sweep_id": spec.sweep_id,
                     "attempt": decision.retry.attempt, "why": decision.why,
                     "resources": fields_dict(decision.retry.resources)})
        self.index.put_records([record])
        self.queue.add([decision.retry])
        return True

    def _unsubmitted(self, spec: RunSpec, state: RunState,
                     context: FailureContext) -> RunRecord:
        """The record of a run that ends before the engine ever had it."""
        return synthesize(self.provider.name, spec,
                          RunHandle(self.provider.name, spec.run_key, ""), state, context)

    def _event(self, data: dict[str, object]) -> None:
        sweep = str(data.get("sweep_id", "")) or next(iter(self._sweep_dirs), "")
        directory = self._sweep_dirs.get(sweep)
        if directory:
            append_event(directory, data)

    def _pause(self, seconds: float) -> None:
        """Wait between polls: on the provider's own wake-up signal when it has one."""
        wait = getattr(self.provider, "wait", None)
        if callable(wait) and self._sleep is time.sleep:
            wait(seconds)
        else:
            self._sleep(seconds)

    def record_for(self, spec: RunSpec, handle: RunHandle, st: RunStatus) -> RunRecord:
        """The record of a run the provider reports terminal (the job's own record wins)."""
        record = run_record(spec.run_dir, spec.run_key, spec.sweep_id)
        if record is not None and record.state.terminal:
            return completed(self.provider.name, record, handle, st.context)
        state = st.state
        context = st.context
        if state is RunState.SUCCEEDED:  # exited 0 but the worker never wrote a record
            state = RunState.FAILED
            context = FailureContext(
                self.provider.name,
                job_id=handle.job_id,
                reason="the job exited 0 but wrote no run record "
                "(is the hpcorch callback in the app's config defaults?)",
            )
        record = synthesize(self.provider.name, spec, handle, state, context)
        write_own(record)
        return record

    def _cancel_open(
        self,
        open_runs: dict[str, tuple[RunSpec, RunHandle]],
        finished: dict[str, RunRecord],
        reason: str,
    ) -> None:
        handles = [h for _, h in open_runs.values()]
        if handles:
            self.provider.cancel(handles)
        records = []
        for jid, (spec, handle) in list(open_runs.items()):
            record = run_record(spec.run_dir, spec.run_key, spec.sweep_id)
            if record is None:
                record = synthesize(self.provider.name,
                    spec,
                    handle,
                    RunState.CANCELLED,
                    FailureContext(self.provider.name, job_id=handle.job_id, reason=reason),
                )
                write_own(record)
            else:
                del open_runs[jid]
            finished[jid] = record
            records.append(record)
        self.index.put_records(records)


def _jid(spec: RunSpec) -> str:
    return f"{spec.sweep_id}/{spec.num}"
