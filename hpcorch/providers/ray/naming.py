"""Pure functions: submission ids, job metadata, entrypoints and the Ray -> RunState mapping.

No Ray import and no I/O here, so unit tests cover every rule directly.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpcorch.identity import short_hash
from hpcorch.jobenv import SWEEP_ID_ENV, WORKDIR_ENV
from hpcorch.spec import (
    FailureClass,
    FailureContext,
    ResourceLimits,
    RunHandle,
    RunSpec,
    RunState,
    RunStatus,
)

#: Ray job statuses (ray.job_submission.JobStatus values) -> the state of a one-run job.
JOB_STATES: Mapping[str, RunState] = {
    "PENDING": RunState.SUBMITTED,
    "RUNNING": RunState.RUNNING,
    "SUCCEEDED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "STOPPED": RunState.CANCELLED,
}
_TERMINAL_JOB = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_ATTEMPT = re.compile(r"^(?P<base>.+?)(?:-r(?P<n>\d+))?$")
#: Metadata key that marks a job as hpcorch's, with its kind ("sweep" or "run").
KIND_KEY = "hpcorch"
#: What Ray says (a task's error, a job's message) when its memory monitor killed a worker.
RAY_OOM_MARKERS = ("OutOfMemoryError", "low on memory", "due to low memory", "memory monitor")
#: The same in a run's stderr: only Ray's own exception (torch.cuda's OutOfMemoryError is a
#: GPU's, which more mem_gb would not cure), or a traceback ending in MemoryError.
_STDERR_OOM = re.compile(r"ray\.exceptions\.OutOfMemoryError|^(?:\w+\.)*MemoryError\b",
                         re.MULTILINE)


def is_terminal(job_status: str) -> bool:
    """True for a Ray job status that never changes again."""
    return job_status in _TERMINAL_JOB


def batch_submission_id(specs: Sequence[RunSpec]) -> str:
    """The submission id of a sweep job: the sweep id and a hash of its runs' keys."""
    keys = " ".join(sorted(s.run_key for s in specs))
    return f"hpcorch-{specs[0].sweep_id}-{short_hash(keys, 10)}"


def run_submission_id(spec: RunSpec) -> str:
    """The submission id of a one-run job: derived from the run key alone."""
    return f"hpcorch-{spec.run_key}"


def next_submission_id(base: str, existing: Iterable[str]) -> str:
    """`base` when unused, else `base-rN` for the next attempt N (earlier attempts ended)."""
    attempts = [_attempt_of(base, sid) for sid in existing]
    used = [n for n in attempts if n is not None]
    return base if not used else f"{base}-r{max(used) + 1}"


def attempts_of(base: str, existing: Iterable[str]) -> list[str]:
    """The submission ids in `existing` that are attempts of `base`, oldest first."""
    found = [(n, sid) for sid in existing if (n := _attempt_of(base, sid)) is not None]
    return [sid for _, sid in sorted(found)]


def _attempt_of(base: str, sid: str) -> int | None:
    if sid == base:
        return 0
    match = _ATTEMPT.match(sid)
    if match and match.group("base") == base and match.group("n"):
        return int(match.group("n"))
    return None


def task_job_id(submission_id: str, num: int) -> str:
    """A run's job id in sweep mode: `<submission id>#<run number>`."""
    return f"{submission_id}#{num}"


def split_job_id(job_id: str) -> tuple[str, int | None]:
    """(submission id, run number or None) of a handle's job id."""
    sid, sep, num = job_id.rpartition("#")
    if sep and num.isdigit():
        return sid, int(num)
    return job_id, None


def sweep_metadata(specs: Sequence[RunSpec], batch_file: str,
                   extra: Mapping[str, Any]) -> dict[str, str]:
    """Metadata of a sweep job: findable by sweep id; every run's number, key and overrides."""
    runs = [{"num": s.num, "run_key": s.run_key, "overrides": " ".join(s.overrides)}
            for s in specs]
    data = {str(k): str(v) for k, v in extra.items()}
    data.update({KIND_KEY: "sweep", "hpcorch_sweep_id": specs[0].sweep_id,
                 "hpcorch_runs": json.dumps(runs, separators=(",", ":")),
                 "hpcorch_run_keys": " ".join(s.run_key for s in specs),
                 "hpcorch_batch": batch_file})
    return data


def run_metadata(spec: RunSpec, extra: Mapping[str, Any]) -> dict[str, str]:
    """Metadata of a one-run job: sweep id, run number, run key, overrides, run directory."""
    data = {str(k): str(v) for k, v in extra.items()}
    data.update({KIND_KEY: "run", "hpcorch_sweep_id": spec.sweep_id,
                 "hpcorch_run_num": str(spec.num), "hpcorch_run_key": spec.run_key,
                 "hpcorch_run_keys": spec.run_key,
                 "hpcorch_overrides": " ".join(spec.overrides),
                 "hpcorch_run_dir": str(spec.run_dir)})
    return data


def entrypoint(python: str, *args: str) -> str:
    """The job's entrypoint: Ray runs it through a shell, so every word is quoted."""
    return shlex.join([python, "-m", "hpcorch.providers.ray.driver", *args])


def entrypoint_resources(spec: RunSpec) -> dict[str, Any]:
    """submit_job's entrypoint resources (mode=job) from the run's Resources."""
    res = spec.resources
    out: dict[str, Any] = {"entrypoint_num_cpus": res.cpus, "entrypoint_num_gpus": res.gpus}
    if res.mem_gb:
        out["entrypoint_memory"] = int(res.mem_gb * 2**30)
    return out


def by_sweep(runs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """A batch split by sweep, in order: one sweep job each."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault(spec.sweep_id, []).append(spec)
    return list(groups.values())


def run_env_vars(spec: RunSpec, user: Mapping[str, str]) -> dict[str, str]:
    """runtime_env env_vars of a job: the user's plus where the run starts."""
    return {**dict(user), WORKDIR_ENV: spec.workdir or spec.run_dir,
            SWEEP_ID_ENV: spec.sweep_id}


def task_name(spec: RunSpec) -> str:
    """The name a run's task has in the dashboard."""
    return f"run-{spec.num}-{spec.run_key[:12]}"


def task_options(spec: RunSpec) -> dict[str, Any]:
    """Ray task options from the run's Resources."""
    res = spec.resources
    options: dict[str, Any] = {"name": task_name(spec), "num_cpus": res.cpus,
                               "num_gpus": res.gpus, "max_retries": 0, "retry_exceptions": False}
    if res.mem_gb:
        options["memory"] = int(res.mem_gb * 2**30)
    return options


def infeasible_reason(spec: RunSpec, nodes: Sequence[dict[str, float]]) -> str:
    """Why no node of the cluster can ever hold this run ('' when one can)."""
    res = spec.resources
    need = {"CPU": float(res.cpus), "GPU": float(res.gpus)}
    if res.mem_gb:
        need["memory"] = float(res.mem_gb) * 2**30
    need = {k: v for k, v in need.items() if v > 0}
    for node in nodes:
        if all(node.get(k, 0.0) >= v for k, v in need.items()):
            return ""

    def fmt(key: str, value: float) -> str:
        return f"{value / 2**30:g} GiB memory" if key == "memory" else f"{value:g} {key}"
    best = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in need}
    return ("infeasible on this Ray cluster: the run needs " +
            ", ".join(fmt(k, v) for k, v in need.items()) + " on one node; the largest node has " +
            ", ".join(fmt(k, v) for k, v in best.items()) + " (lower resources.* or add nodes)")


def cluster_limits(nodes: Sequence[Mapping[str, float]]) -> ResourceLimits:
    """What one run can get from a cluster of these alive nodes (their resources_total):
    the CPUs and memory of the largest node (a run is one task, on one node), and how
    many nodes there are; every field None when no node is listed."""
    if not nodes:
        return ResourceLimits(where="this Ray cluster")
    cpus = max(float(n.get("CPU", 0.0)) for n in nodes)
    memory = max(float(n.get("memory", 0.0)) for n in nodes)
    return ResourceLimits(where="this Ray cluster", max_mem_gb=memory / 2**30 if memory else None,
                          max_cpus=int(cpus) if cpus else None, max_nodes=len(nodes))


def classified(state: RunState, context: FailureContext) -> FailureContext:
    """`context` with its FailureClass where Ray's words tell it: CANCELLED for a
    cancelled run, OOM when Ray's memory monitor killed it (or the run's last traceback
    ended in MemoryError); else as it was (the orchestrator classifies the rest)."""
    if context.failure_class is not None:
        return context
    if state is RunState.CANCELLED:
        return dataclasses.replace(context, failure_class=FailureClass.CANCELLED)
    last = context.stderr_tail.rpartition("Traceback (most recent call last):")[2]
    if any(m in context.reason for m in RAY_OOM_MARKERS) or _STDERR_OOM.search(last):
        return dataclasses.replace(context, failure_class=FailureClass.OOM)
    return context


def peak_mem_gb(outcome: Mapping[str, Any]) -> float | None:
    """The run's max RSS from its outcome file (KiB there), in GiB; None when unknown."""
    kib = outcome.get("max_rss_kb")
    return kib / 2**20 if isinstance(kib, (int, float)) and kib > 0 else None


def job_run_status(handle: RunHandle, job: Mapping[str, Any] | None,
                   outcome: Mapping[str, Any] | None, stderr_tail: str) -> RunStatus:
    """The state of a one-run job (mode=job): Ray's job status, with the outcome's details."""
    if job is None:
        return RunStatus(handle, RunState.UNKNOWN)
    state = JOB_STATES.get(str(job.get("status")), RunState.UNKNOWN)
    if state is RunState.FAILED or state is RunState.CANCELLED:
        own = outcome if outcome and outcome.get("submission_id") == handle.job_id else {}
        code = job.get("driver_exit_code")
        context = FailureContext(
            provider="ray", job_id=handle.job_id,
            node=str(own.get("node") or job.get("driver_node_id") or "")[:40],
            exit_code=own.get("exit_code", code if isinstance(code, int) else None),
            signal=own.get("signal"),
            reason=str(own.get("reason") or _first_line(job.get("message"))),
            stderr_tail=stderr_tail, peak_mem_gb=peak_mem_gb(own))
        if any(m in str(job.get("message") or "") for m in RAY_OOM_MARKERS):
            context = dataclasses.replace(context, failure_class=FailureClass.OOM)
        return RunStatus(handle, state, classified(state, context))
    return RunStatus(handle, state)


def task_run_status(handle: RunHandle, job: Mapping[str, Any] | None,
                    outcome: Mapping[str, Any] | None, stderr_tail: str) -> RunStatus:
    """The state of one run of a sweep job (mode=sweep): its outcome file, else the job's."""
    sid, _ = split_job_id(handle.job_id)
    own = outcome if outcome and outcome.get("submission_id") == sid else None
    job_status = str(job.get("status")) if job else ""
    if own is not None:
        state = RunState(str(own.get("state")))
        if state is RunState.RUNNING and is_terminal(job_status):
            # The driver ended while the run ran: stopped means cancelled, else it was lost.
            if job_status == "STOPPED":
                state = RunState.CANCELLED
            else:
                return RunStatus(handle, RunState.FAILED, classified(RunState.FAILED, _context(
                    handle, own, job, stderr_tail,
                    f"the sweep job ended ({job_status}) while this run was running")))
        if state in (RunState.FAILED, RunState.CANCELLED):
            return RunStatus(handle, state,
                             classified(state, _context(handle, own, job, stderr_tail, "")))
        return RunStatus(handle, state)
    if job is None:
        return RunStatus(handle, RunState.UNKNOWN)
    if job_status in ("PENDING", "RUNNING"):
        return RunStatus(handle, RunState.SUBMITTED)
    if job_status == "STOPPED":
        return RunStatus(handle, RunState.CANCELLED, classified(RunState.CANCELLED, _context(
            handle, {}, job, stderr_tail, "the sweep job was stopped before this run started")))
    return RunStatus(handle, RunState.FAILED, classified(RunState.FAILED, _context(
        handle, {}, job, stderr_tail,
        f"the sweep job ended ({job_status}) without running this run")))


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _context(handle: RunHandle, own: Mapping[str, Any], job: Mapping[str, Any] | None,
             stderr_tail: str, fallback: str) -> FailureContext:
    job = job or {}
    message = _first_line(job.get("message"))
    reason = str(own.get("reason") or fallback or "")
    if fallback and message:
        reason = f"{reason}: {message}"
    return FailureContext(
        provider="ray", job_id=handle.job_id,
        node=str(own.get("node") or job.get("driver_node_id") or "")[:40],
        exit_code=own.get("exit_code"), signal=own.get("signal"), reason=reason,
        stderr_tail=stderr_tail, peak_mem_gb=peak_mem_gb(own))
