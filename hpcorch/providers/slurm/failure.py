"""Why a Slurm run failed, beyond its state: killed for memory, and which rank failed.

Slurm kills a job over its `--mem` in one of two ways. With task/cgroup
(ConstrainRAMSpace) the kernel's OOM killer stops it and sacct says
OUT_OF_MEMORY. With jobacct_gather's OverMemoryKill (polling, no cgroups)
slurmstepd kills the step, sacct says only FAILED, and the task's Slurm log
(`<sweep>/.hpcorch/slurm/logs/<array>_<index>.log`) says "Exceeded job memory
limit". Either way the run's reason says so and names the memory it asked for.

`describe` is the one place a terminal run's context is finished: the explanation, the
FailureClass the retry policy reads (`classify`) and the peak memory sacct measured.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

from hpcorch.launch.failure import rank_failure
from hpcorch.providers.kills import memory_used
from hpcorch.providers.slurm.accounting import JobInfo, SlurmState
from hpcorch.spec import FailureClass, FailureContext, RunSpec, RunState
from hpcorch.store.records import read_json, spec_path, tail_text

#: What slurmstepd writes into a task's log when it (or the kernel) killed it for memory.
MEMORY_LOG_MARKS = ("exceeded job memory limit", "exceeded step memory limit",
                    "oom-kill event", "out-of-memory handler")


def task_log(info: JobInfo) -> Path | None:
    """Slurm's own log of a task (`--output=logs/%A_%a.log`, or `logs/%j.log` for a
    single-task plan, under its work dir)."""
    if not info.workdir:
        return None
    return Path(info.workdir) / "logs" / f"{info.job_id}.log"


def memory_kill(info: JobInfo, log_text: str | None = None) -> str | None:
    """How Slurm said it killed this task for memory (its state, or its log's line);
    None when it did not. `log_text`: the task log's tail (read when not given)."""
    state = info.base_state
    if state is SlurmState.OUT_OF_MEMORY:
        return "OUT_OF_MEMORY"
    if state is not SlurmState.FAILED:
        return None
    if log_text is None:
        log_text = tail_text(task_log(info), lines=50)
    for line in reversed(log_text.splitlines()):
        if any(mark in line.lower() for mark in MEMORY_LOG_MARKS):
            return f"FAILED, its Slurm log says: {line.strip()[:200]}"
    return None


def memory_reason(evidence: str, mem_gb: float | None) -> str:
    """`killed by Slurm for exceeding its memory limit of 0.2 GB (OUT_OF_MEMORY)`."""
    limit = f" of {mem_gb:g} GB (resources.mem_gb)" if mem_gb else ""
    return f"killed by Slurm for exceeding its memory limit{limit} ({evidence})"


def explain(run_dir: str, context: FailureContext, info: JobInfo | None = None) -> FailureContext:
    """A failed run's context, with a memory kill (`info`: the scheduler's word) and, for
    a multi-rank run, the failed rank, its host and its stderr."""
    spec = _spec(run_dir) if run_dir else None
    evidence = memory_kill(info) if info is not None else None
    memory = memory_reason(evidence, spec.resources.mem_gb if spec else None) \
        if evidence else ""
    if memory:
        context = dataclasses.replace(context, reason=memory, failure_class=FailureClass.OOM)
    elif context.signal == signal.SIGKILL and not context.reason.strip():
        context = dataclasses.replace(context, reason=sigkill_reason(context, info))
    if spec is None or spec.resources.tasks <= 1:
        return context
    ranked = rank_failure(spec, context)
    if memory and ranked.reason != memory:
        ranked = dataclasses.replace(ranked, reason=f"{memory}; {ranked.reason}")
    return dataclasses.replace(ranked, failure_class=context.failure_class)


#: Slurm's end states -> the failure class they stand for on their own.
_CLASS_OF_STATE: dict[SlurmState, FailureClass] = {
    SlurmState.OUT_OF_MEMORY: FailureClass.OOM,
    SlurmState.TIMEOUT: FailureClass.TIMEOUT,
    SlurmState.DEADLINE: FailureClass.TIMEOUT,
    SlurmState.NODE_FAIL: FailureClass.NODE_FAIL,
    SlurmState.BOOT_FAIL: FailureClass.NODE_FAIL,
    SlurmState.PREEMPTED: FailureClass.PREEMPTED,  # ended so: not requeued (PREEMPT_GRACE_S)
    SlurmState.CANCELLED: FailureClass.CANCELLED,
    SlurmState.REVOKED: FailureClass.CANCELLED,
}


def classify(state: RunState, context: FailureContext, info: JobInfo | None) -> FailureClass:
    """Why a run that ended `state` failed, for the retry policy: a memory kill `explain`
    found first; then Slurm's own end state (`info`: its word, None when the run's own
    files answered); then the run's exit (a MemoryError is OOM). A SIGKILL nobody
    explained is OTHER: it may be the kernel's OOM killer as well as a person, and its
    reason says what is known."""
    if context.failure_class is not None:
        return context.failure_class
    if state is RunState.UNKNOWN:
        return FailureClass.LOST
    base = info.base_state if info is not None else None
    if base is not None and base in _CLASS_OF_STATE:
        return _CLASS_OF_STATE[base]
    if state is RunState.TIMEOUT:
        return FailureClass.TIMEOUT
    if state is RunState.CANCELLED:
        return FailureClass.CANCELLED
    if context.signal == signal.SIGKILL:
        return FailureClass.OTHER
    last = (context.stderr_tail.strip().splitlines() or [""])[-1]
    if context.exit_code and last.startswith("MemoryError"):
        return FailureClass.OOM  # the run's own allocation failed: more memory may do
    if context.exit_code or context.signal is not None:
        return FailureClass.APP_ERROR
    return FailureClass.OTHER


def peak_mem_gb(info: JobInfo | None) -> float | None:
    """The most memory sacct saw the job's steps hold (MaxRSS, KiB), in GiB."""
    kb = info.max_rss_kb if info is not None else None
    return kb / 1024 ** 2 if kb else None


def describe(state: RunState, run_dir: str, context: FailureContext,
             info: JobInfo | None = None, *, peak_from: JobInfo | None = None) -> FailureContext:
    """The finished context of a run that ended `state` (not SUCCEEDED): FAILED runs
    explained (`explain`), then classified, with the peak memory where sacct has it
    (`peak_from`: a record to read only that from, default `info`)."""
    if state is RunState.FAILED:
        context = explain(run_dir, context, info)
    peak = context.peak_mem_gb or peak_mem_gb(peak_from if peak_from is not None else info)
    return dataclasses.replace(context, failure_class=classify(state, context, info),
                               peak_mem_gb=peak)


def sigkill_reason(context: FailureContext, info: JobInfo | None,
                   log_text: str | None = None) -> str:
    """The reason of a run that ended FAILED by SIGKILL with no word from Slurm: that it
    was SIGKILL, who sent it as far as Slurm's state and the task's log tell, and the
    memory it had used when accounting gives it (`info.max_rss_kb`, sacct MaxRSS)."""
    state = info.state.strip() if info is not None else ""
    if log_text is None and info is not None:
        log_text = tail_text(task_log(info), lines=50)
    stepd = next((line.strip()[:200] for line in reversed((log_text or "").splitlines())
                  if "slurmstepd" in line.lower()), "")
    node = f" on {context.node}" if context.node else ""
    if " by " in state:  # `CANCELLED by 1000`: Slurm names the user who did it
        who = f"by Slurm on request ({state})"
    elif stepd:
        who = f"by Slurm: its Slurm log says: {stepd}"
    else:
        who = (f"not by a limit Slurm recorded (sacct: {state or 'no state'}): the kernel's "
               f"OOM killer{node} or another process")
    used = memory_used(info.max_rss_kb if info is not None else None)
    return f"killed by SIGKILL (signal 9), {who}" + (f"; {used}" if used else "")


def _spec(run_dir: str) -> RunSpec | None:
    try:
        return RunSpec.from_dict(read_json(spec_path(run_dir)))
    except (OSError, ValueError, TypeError):
        return None
