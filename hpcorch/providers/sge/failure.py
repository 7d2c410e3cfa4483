"""Why a Grid Engine run ended as it did: time limit, memory limit, qdel, or its own exit.

What was measured on Son of Grid Engine 8.1.9 (../shared/notes/sge.md):

- `h_rt` reached: execd SIGKILLs the job; qacct says failed 37 ("qmaster
  enforced h_rt, h_cpu, or h_vmem limit"), exit 137, ru_wallclock >= h_rt.
- `h_vmem` is set as the address-space limit (RLIMIT_AS) of every process of
  the job: an allocation beyond it fails inside the run (Python: MemoryError),
  which exits by itself (failed 0, its exit code). When the summed use of the
  job's processes exceeds it, execd SIGKILLs the job: failed 37, exit 137,
  wallclock below h_rt.
- qdel of a running task: failed 100 ("assumedly after job"), exit 137. A task
  deleted while pending has no accounting record at all.
"""

from __future__ import annotations

from hpcorch.providers.sge.accounting import FAILED_DELETED, FAILED_LIMIT, AcctRecord
from hpcorch.spec import FailureContext, RunSpec, RunState

#: What a run's stderr says when an allocation failed under RLIMIT_AS.
MEMORY_ERROR_MARKS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory",
                      "cannot allocate memory", "out of memory")


def limit_seconds(text: str | None) -> float | None:
    """`h_rt=600`, `h_rt=0:10:00` or `h_rt=10:00` -> seconds."""
    if not text:
        return None
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def memory_limit(spec: RunSpec | None) -> str:
    """` of 0.5 GB (resources.mem_gb)`, or "" when the run asked for no memory."""
    mem = spec.resources.mem_gb if spec is not None else None
    return f" of {mem:g} GB (resources.mem_gb)" if mem else ""


def from_accounting(record: AcctRecord, spec: RunSpec | None,
                    stderr_tail: str) -> tuple[RunState, FailureContext]:
    """The run's end as qacct recorded it (for runs whose own exit was not recorded)."""
    context = FailureContext("sge", record.job_id, record.node, record.exit_status,
                             record.signal, "", stderr_tail)
    if record.failed == FAILED_DELETED:
        return RunState.CANCELLED, _with(context, "deleted (qdel): qacct failed 100 "
                                                  f"({record.failed_text or 'after job'})")
    if record.failed == FAILED_LIMIT:
        h_rt = limit_seconds(record.limit("h_rt"))
        h_vmem = record.limit("h_vmem")
        if h_rt is not None and (record.wallclock_s >= h_rt or h_vmem is None):
            return RunState.TIMEOUT, _with(context, f"killed by Grid Engine at its run-time "
                                           f"limit h_rt={h_rt:g} s after "
                                           f"{record.wallclock_s:g} s (qacct failed 37: "
                                           f"{record.failed_text})")
        used = f"; maxvmem {record.maxvmem_bytes / 1e6:.0f} MB" \
            if record.maxvmem_bytes else ""
        return RunState.FAILED, _with(context, f"killed by Grid Engine for exceeding its "
                                      f"memory limit{memory_limit(spec)} (h_vmem={h_vmem} per "
                                      f"slot; qacct failed 37: {record.failed_text}){used}")
    if record.failed:
        return RunState.FAILED, _with(context, f"Grid Engine failed the job: qacct failed "
                                      f"{record.failed} ({record.failed_text})")
    if record.exit_status == 0:
        return RunState.SUCCEEDED, context
    return RunState.FAILED, explain_exit(context, spec)


def explain_exit(context: FailureContext, spec: RunSpec | None) -> FailureContext:
    """A run that exited non-zero by itself: name the memory limit when the run ran out of
    address space under h_vmem (RLIMIT_AS) and its stderr says so."""
    if not memory_limit(spec):
        return context
    tail = context.stderr_tail
    line = next((ln.strip() for ln in reversed(tail.splitlines())
                 if any(mark in ln for mark in MEMORY_ERROR_MARKS)), "")
    if not line:
        return context
    return _with(context, f"ran out of memory under its Grid Engine memory limit"
                          f"{memory_limit(spec)}: h_vmem is an address-space limit "
                          f"(RLIMIT_AS) per slot, so the allocation failed ({line[:200]})")


def _with(context: FailureContext, reason: str) -> FailureContext:
    return FailureContext(context.provider, context.job_id, context.node, context.exit_code,
                          context.signal, reason, context.stderr_tail)
