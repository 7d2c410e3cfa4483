"""Commands that act on a sweep from any process: wait, resume, cancel.

They need nothing from the process that submitted the sweep: the ledger in
the sweep directory holds every RunSpec and the provider settings, the
engine's own metadata finds the runs again (lookup by run key and sweep id), and the
record files say how each finished.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from hpcorch.cli import pipeline_cmds
from hpcorch.errors import StoreError
from hpcorch.orchestrate.detach import orchestrator_alive, orchestrator_pid_path
from hpcorch.orchestrate.pipeline.state import is_pipeline
from hpcorch.orchestrate.summary import report
from hpcorch.orchestrate.sweep import Orchestrator
from hpcorch.providers import create_provider
from hpcorch.spec import RunHandle, RunSpec, RunState
from hpcorch.store.index import StoreIndex, default_home
from hpcorch.store.ledger import SweepInfo, read_ledger
from hpcorch.store.records import RunRecord, read_record


def load_sweep(args: argparse.Namespace) -> tuple[SweepInfo, StoreIndex]:
    """The sweep named on the command line (id, unique prefix, or its directory)."""
    index = StoreIndex(Path(args.home).expanduser() if args.home else default_home())
    ref = args.sweep
    directory = ref if os.path.isdir(ref) else index.sweep(ref)["sweep_dir"]
    info = read_ledger(directory)
    if info is None:
        raise StoreError(f"{directory}: no sweep ledger (.hpcorch/sweep.json) there")
    return info, index


def _orchestrator(info: SweepInfo, index: StoreIndex, progress: str) -> Orchestrator:
    provider = create_provider(info.provider_settings or {"name": info.provider})
    provider.check()
    return Orchestrator(provider, index, progress=progress,  # type: ignore[arg-type]
                        max_parallel=info.max_parallel)


def _finish(info: SweepInfo, records: list[RunRecord], index: StoreIndex) -> int:
    index.put_records(records)
    report(sorted(records, key=lambda r: r.num), info.sweep_id, info.provider)
    return 0 if records and all(r.state.ok for r in records) else 3


def _records(specs: tuple[RunSpec, ...]) -> list[RunRecord]:
    return [r for r in (read_record(s.run_dir) for s in specs) if r is not None]


def cmd_wait(args: argparse.Namespace) -> int:
    """Block until every run of the sweep is finished; exit 0 only if all succeeded."""
    if is_pipeline(args.sweep):
        return pipeline_cmds.wait(args)
    info, index = load_sweep(args)
    orch = _orchestrator(info, index, args.progress)
    finished, open_runs, lost = orch.attach(info.specs)
    lost = _ask_engine(orch, index, info, lost, finished, open_runs)
    # A local sweep detached into a background orchestrator: its runs appear as records.
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while lost and orchestrator_alive(info.sweep_dir):
        lost = [s for s in lost if read_record(s.run_dir) is None]
        if deadline and time.monotonic() > deadline:
            print(f"hpcorch: still running after {args.timeout}s", flush=True)
            return 4
        time.sleep(0.2)
    # Retries are submitted by one process only: the sweep's orchestrator when one runs
    # (a background one, or another `wait`), else this one, which then becomes it.
    owner = orchestrator_alive(info.sweep_dir)
    orch.retries = owner is None or owner == os.getpid()
    if orch.retries:
        orchestrator_pid_path(info.sweep_dir).write_text(f"{os.getpid()}\n")
        finished = orch.retry_failed(finished, info.specs)
    finished_records = list(finished.values())
    finished_records += orch.watch(open_runs, total=len(info.specs), already=len(finished)).values()
    done = {(r.sweep_id, r.num) for r in finished_records}
    finished_records += [r for r in _records(info.specs) if (r.sweep_id, r.num) not in done]
    missing = [s for s in info.specs if read_record(s.run_dir) is None]
    if missing:
        print(f"{len(missing)} run(s) neither finished nor known to {info.provider}: "
              f"`hpcorch resume {info.sweep_id}` submits them again "
              f"(#{', #'.join(str(s.num) for s in missing)})")
    return _finish(info, finished_records, index) if not missing else 3


def _ask_engine(orch: Orchestrator, index: StoreIndex, info: SweepInfo, lost: list[RunSpec],
                finished: dict[str, RunRecord], open_runs: dict[str, Any]) -> list[RunSpec]:
    """Runs the engine no longer lists as open (lookup) may still be known by the job id
    the index recorded at submission: ask for them in one status call, so a run that
    ended without a record (time limit, memory, cancel) is reported with its context."""
    job_ids = {row.num: row.job_id for row in index.runs(info.sweep_id) if row.job_id}
    asked = [s for s in lost if job_ids.get(s.num)]
    if not asked:
        return lost
    handles = [RunHandle(orch.provider.name, s.run_key, job_ids[s.num]) for s in asked]
    still_lost = [s for s in lost if not job_ids.get(s.num)]
    for spec, handle, st in zip(asked, handles, orch.provider.status(handles), strict=True):
        jid = f"{spec.sweep_id}/{spec.num}"
        if st.state.terminal and st.state is not RunState.UNKNOWN:
            finished[jid] = orch.record_for(spec, handle, st)
        elif st.state is RunState.UNKNOWN:
            still_lost.append(spec)
        else:
            open_runs[jid] = (spec, handle)
    return still_lost


def cmd_resume(args: argparse.Namespace) -> int:
    """Submit again what did not succeed (finding, not duplicating, runs still in flight)."""
    if is_pipeline(args.sweep):
        return pipeline_cmds.resume(args)
    info, index = load_sweep(args)
    owner = orchestrator_alive(info.sweep_dir)
    if owner is not None and owner != os.getpid() and owner != os.getppid():
        print(f"sweep {info.sweep_id} is being run by process {owner}; "
              f"use `hpcorch wait {info.sweep_id}`")
        return 1
    orchestrator_pid_path(info.sweep_dir).write_text(f"{os.getpid()}\n")
    orch = _orchestrator(info, index, args.progress)
    try:
        records = orch.run(info, info.specs)
    finally:
        orch.provider.close()
    return _finish(info, records, index)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop every unfinished run of the sweep and record it CANCELLED."""
    if is_pipeline(args.sweep):
        return pipeline_cmds.cancel(args)
    info, index = load_sweep(args)
    owner = orchestrator_alive(info.sweep_dir)
    if owner is not None:  # a background orchestrator cancels and records its own runs
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while orchestrator_alive(info.sweep_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
    orch = _orchestrator(info, index, "off")
    cancelled = orch.cancel([s for s in info.specs if not _finished(s)], reason="cancelled by "
                            "`hpcorch cancel`")
    print(f"sweep {info.sweep_id}: {len(cancelled)} run(s) cancelled")
    return _finish(info, _records(info.specs), index) and 0


def _finished(spec: RunSpec) -> bool:
    record = read_record(spec.run_dir)
    return record is not None and record.state.terminal and record.sweep_id == spec.sweep_id


def register(sub: Any) -> None:
    """Add these commands to the CLI."""
    for name, func, text in (("wait", cmd_wait, "block until a sweep finishes (exit 3 if any "
                                                "run did not succeed)"),
                             ("resume", cmd_resume, "submit again what did not succeed"),
                             ("cancel", cmd_cancel, "stop a sweep's unfinished runs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("sweep", help="sweep id, unique prefix, or sweep directory")
        p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
        if name == "wait":
            p.add_argument("--timeout", type=float, default=0,
                           help="give up after this many seconds (exit 4)")
        p.set_defaults(func=func)
