"""The retry policy: which failed runs run again, and with what, by why they failed.

Each run carries the policy it was planned under (`RunSpec.retry`, from
`hpcorch.retry`) and the retries it has used, so a sweep watched by another process
(`hpcorch wait`, a background orchestrator, `hpcorch resume`) decides the same way.
A memory kill raises only the memory, a time-limit kill only the time, both within
the limits the provider read from its engine; a preemption or a node failure runs
again unchanged on a budget of its own; the research code's own errors are not
retried unless the policy says so. A run that reached its time limit with a
checkpoint never gets here: its provider requeues it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from hpcorch.errors import ConfigError
from hpcorch.settings import RetrySettings, parse_settings
from hpcorch.spec import MIN_MEM_GB, FailureClass, ResourceLimits, Resources, RunSpec, RunState
from hpcorch.store.records import RunRecord

#: The budget (a RetrySettings field) each failure class draws on; classes not here are
#: never retried (a cancellation was asked for; OTHER: nothing says a retry would help).
BUDGETS: dict[FailureClass, str] = {
    FailureClass.OOM: "memory",
    FailureClass.TIMEOUT: "time",
    FailureClass.PREEMPTED: "preempted",
    FailureClass.NODE_FAIL: "preempted",
    FailureClass.LOST: "preempted",
    FailureClass.APP_ERROR: "app_error",
}

#: Keys of `RunSpec.retry` that are bookkeeping, not settings.
USED, RETRIED_FOR = "used", "retried_for"


def policy_dict(settings: RetrySettings) -> dict[str, Any]:
    """What a spec carries: the settings, no retries used yet."""
    return {**dataclasses.asdict(settings), USED: {}}


def policy_of(retry: dict[str, Any]) -> RetrySettings:
    """The settings a spec (or record) was planned under; the defaults for one from
    before retries existed."""
    values = {k: v for k, v in retry.items() if k not in (USED, RETRIED_FOR)}
    return parse_settings(RetrySettings, values, "hpcorch.retry")


def classify(record: RunRecord) -> FailureClass | None:
    """Why a run did not succeed: the provider's word when it gave one, else what its
    state and record say. None for a run that succeeded."""
    if record.state.ok:
        return None
    given = record.failure.failure_class if record.failure else None
    if given is not None:
        return given
    if record.state is RunState.TIMEOUT:
        return FailureClass.TIMEOUT
    if record.state is RunState.CANCELLED:
        return FailureClass.CANCELLED
    if record.state is RunState.UNKNOWN:
        return FailureClass.LOST
    if record.error is not None:
        return FailureClass.OOM if record.error.type == "MemoryError" else FailureClass.APP_ERROR
    if record.failure is not None and record.failure.exit_code not in (None, 0):
        return FailureClass.APP_ERROR
    return FailureClass.OTHER


@dataclass(frozen=True)
class Decision:
    """What the policy made of one failed run."""

    failure_class: FailureClass | None
    retry: RunSpec | None
    """The next attempt to submit, or None."""
    why: str
    """For the notice on stderr: what changes, or why it is not retried."""


def decide(spec: RunSpec, record: RunRecord, limits: ResourceLimits | None) -> Decision:
    """The next attempt of a failed run of `spec`, or why there is none."""
    kind = classify(record)
    retry = record.retry or spec.retry
    if kind is None:
        return Decision(kind, None, "succeeded")
    budget = BUDGETS.get(kind)
    if budget is None:
        return Decision(kind, None, f"{kind.value}: not retried")
    try:
        policy = policy_of(retry)
    except ConfigError as exc:  # a record written by another version: say, don't guess
        return Decision(kind, None, f"not retried: its retry policy cannot be read ({exc})")
    used = dict(retry.get(USED) or {})
    allowed = getattr(policy, budget)
    if used.get(budget, 0) >= allowed:
        return Decision(kind, None, f"{kind.value}: not retried (hpcorch.retry.{budget}="
                        f"{allowed}, used {used.get(budget, 0)})")
    was = _resources_of(record, spec)
    resources, change = _escalate(kind, was, record, policy, limits)
    if resources is None:
        return Decision(kind, None, f"{kind.value}: not retried: {change}")
    used[budget] = used.get(budget, 0) + 1
    nxt = dataclasses.replace(
        spec, resources=resources, attempt=max(spec.attempt, record.attempt) + 1,
        retry={**retry, USED: used, RETRIED_FOR: kind.value})
    return Decision(kind, nxt, f"{kind.value}: retry {used[budget]}/{allowed}"
                    + (f" with {change}" if change else " with the same resources"))


def _resources_of(record: RunRecord, spec: RunSpec) -> Resources:
    """What the failed attempt asked for: its record's word, else its spec's."""
    if record.resources:
        try:
            return Resources(**record.resources)
        except TypeError:
            pass
    return spec.resources


def _escalate(kind: FailureClass, was: Resources, record: RunRecord, policy: RetrySettings,
              limits: ResourceLimits | None) -> tuple[Resources | None, str]:
    """(the next attempt's resources, what changed), or (None, why it cannot change)."""
    if kind is FailureClass.OOM:
        peak = record.failure.peak_mem_gb if record.failure else None
        wanted = max(was.mem_gb * policy.memory_factor if was.mem_gb else 0.0,
                     peak * policy.peak_factor if peak else 0.0)
        if was.mem_gb is None and peak:
            wanted = peak * policy.memory_factor
        if wanted <= 0:
            return None, ("no memory request to raise (resources.mem_gb is null) and no "
                          "measured peak")
        wanted = max(MIN_MEM_GB, math.ceil(wanted * 1024) / 1024)  # whole MiB
        cap = limits.max_mem_gb if limits else None
        new = min(wanted, cap) if cap is not None else wanted
        if was.mem_gb is not None and new <= was.mem_gb:
            return None, (f"it already asked {was.mem_gb:g} GiB, the most "
                          f"{limits.where if limits else 'the provider'} allows")
        old = f"{was.mem_gb:g}" if was.mem_gb is not None else "the default"
        return dataclasses.replace(was, mem_gb=new), f"resources.mem_gb {old} -> {new:g}"
    if kind is FailureClass.TIMEOUT:
        wanted_min = math.ceil(was.time_min * policy.time_factor)
        cap_min = limits.max_time_min if limits else None
        new_min = min(wanted_min, cap_min) if cap_min is not None else wanted_min
        if new_min <= was.time_min:
            return None, (f"it already asked {was.time_min} min, the most "
                          f"{limits.where if limits else 'the provider'} allows")
        return (dataclasses.replace(was, time_min=new_min),
                f"resources.time_min {was.time_min} -> {new_min}")
    return was, ""


def backoff_delay(tries: int, policy: RetrySettings, rng: random.Random | None = None) -> float:
    """Seconds before submission try `tries + 1` (`tries` >= 1 failed so far): exponential
    backoff with full jitter, uniform in [0, min(backoff_max_s, backoff_s * 2^(tries-1))]."""
    cap = min(policy.backoff_max_s, policy.backoff_s * 2 ** max(0, tries - 1))
    return (rng or random).uniform(0.0, cap)
