"""The entrypoint of hpcorch's Ray jobs (runs inside the cluster, started by the Jobs API).

    python -m hpcorch.providers.ray.driver batch BATCH.json   # a sweep job: one named task per run
    python -m hpcorch.providers.ray.driver run SPEC.json SUBMISSION_ID   # a job that is one run

A sweep job reads its runs' specs from the files the orchestrator wrote (no
pickled state from the submitting process), runs each as a Ray task named
`run-<num>-<key>` with the run's own resources, and leaves every run's
outcome in its run directory. It keeps running when the submitting shell is
gone. A run whose resources no node of the cluster has is failed at once
(Ray would leave it pending forever); a run whose `.hpcorch/ray-cancel` file
appears is cancelled; SIGTERM (Ray's stop_job) cancels every open run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcorch.providers.ray import execute
from hpcorch.providers.ray.naming import infeasible_reason, task_name, task_options
from hpcorch.spec import RunSpec
from hpcorch.store.records import spec_path

#: Seconds between two looks for cancel files while runs are open.
CANCEL_POLL_S = 0.5
#: Seconds a stopped sweep job waits for its cancelled tasks (Ray SIGKILLs the driver
#: RAY_JOB_STOP_WAIT_TIME_S, default 3 s, after its SIGTERM).
STOP_GRACE_S = 2.5


def _alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


_T0 = time.time()


def say(message: str) -> None:
    """One line of the sweep job's log (the dashboard shows it), with seconds since start."""
    print(f"[hpcorch +{time.time() - _T0:6.2f}s] {message}", flush=True)


def run_batch(batch_file: str) -> int:
    """Run every spec of a batch as a named task; exit 0 once all have an outcome."""
    import ray

    batch = json.loads(Path(batch_file).read_text(encoding="utf-8"))
    submission_id = batch["submission_id"]
    warm = bool(batch.get("warm", True))
    specs = [execute.load_spec(p) for p in batch["specs"]]
    say(f"driver up (started {_T0:.3f}), {len(specs)} run(s) in {batch_file}")
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False,
             logging_level=logging.WARNING)
    nodes = _alive_node_resources()
    remote = ray.remote(execute.remote_run)
    open_refs: dict[Any, RunSpec] = {}
    for spec in specs:
        job_id = f"{submission_id}#{spec.num}"
        reason = infeasible_reason(spec, nodes)
        if reason:
            execute.write_outcome(spec, submission_id, "FAILED", reason=reason, job_id=job_id,
                                  node="", exit_code=None, signal=None)
            say(f"run #{spec.num} {task_name(spec)} FAILED: {reason}")
            continue
        ref = remote.options(**task_options(spec)).remote(
            str(spec_path(spec.run_dir)), submission_id, warm, job_id)
        open_refs[ref] = spec
    say(f"sweep {specs[0].sweep_id if specs else '?'}: {len(open_refs)} task(s) "
          f"submitted as {submission_id}")

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    try:
        _watch(open_refs, submission_id)
    except KeyboardInterrupt:
        _cancel(open_refs, submission_id, "sweep job stopped")
        return 0
    return 0


def _watch(open_refs: dict[Any, RunSpec], submission_id: str) -> None:
    import ray

    cancelling: dict[Any, float] = {}
    while open_refs:
        done, _ = ray.wait(list(open_refs), num_returns=1, timeout=CANCEL_POLL_S)
        for ref in done:
            spec = open_refs.pop(ref)
            cancelling.pop(ref, None)
            _collect(ref, spec, submission_id)
        for ref, spec in list(open_refs.items()):
            if ref not in cancelling and execute.cancel_path(spec.run_dir).exists():
                ray.cancel(ref)  # KeyboardInterrupt in the task: it stops its run's tree
                cancelling[ref] = time.monotonic()
            elif ref in cancelling and time.monotonic() - cancelling[ref] > execute.KILL_WAIT_S * 2:
                ray.cancel(ref, force=True)


def _collect(ref: Any, spec: RunSpec, submission_id: str) -> None:
    import ray

    job_id = f"{submission_id}#{spec.num}"
    try:
        outcome = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        outcome = {"state": "CANCELLED"}
        current = execute.read_outcome(spec.run_dir) or {}
        if current.get("submission_id") != submission_id or current.get("state") == "RUNNING":
            execute.write_outcome(spec, submission_id, "CANCELLED", reason="cancelled",
                                  job_id=job_id)
    except Exception as exc:  # noqa: BLE001 - a dead worker or a bug: the run failed, say why
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
        outcome = {"state": "FAILED", "reason": reason}
        execute.write_outcome(spec, submission_id, "FAILED", reason=reason, job_id=job_id)
    say(f"run #{spec.num} {task_name(spec)} {execute.outcome_summary(outcome)}")


def _cancel(open_refs: dict[Any, RunSpec], submission_id: str, reason: str) -> None:
    import ray

    for ref in open_refs:
        ray.cancel(ref)  # KeyboardInterrupt in each task: it SIGTERMs its run's session
    # Give the tasks that moment before this driver exits: Ray then kills the job's
    # workers outright, and a run's own children would outlive a SIGKILLed worker.
    ray.wait(list(open_refs), num_returns=len(open_refs), timeout=STOP_GRACE_S)
    for spec in open_refs.values():
        current = execute.read_outcome(spec.run_dir) or {}
        if current.get("submission_id") != submission_id or current.get("state") == "RUNNING":
            execute.write_outcome(spec, submission_id, "CANCELLED", reason=reason,
                                  job_id=f"{submission_id}#{spec.num}")


def run_one(spec_file: str, submission_id: str) -> int:
    """A job that is one run: start its portable command as a child; exit with its exit code."""
    spec = execute.load_spec(spec_file)

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    outcome = execute.run_spec(spec, submission_id, warm=False, job_id=submission_id)
    if outcome["state"] == "CANCELLED":
        return 130
    code = outcome.get("exit_code")
    return code if isinstance(code, int) else 128 + int(outcome.get("signal") or 9)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the job entrypoint."""
    parser = argparse.ArgumentParser(prog="python -m hpcorch.providers.ray.driver")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("batch", help="run a batch of runs as named tasks")
    p.add_argument("batch_file")
    p = sub.add_parser("run", help="run one run in this job")
    p.add_argument("spec_file")
    p.add_argument("submission_id")
    args = parser.parse_args(argv)
    if args.mode == "batch":
        return run_batch(args.batch_file)
    return run_one(args.spec_file, args.submission_id)


if __name__ == "__main__":
    sys.exit(main())
