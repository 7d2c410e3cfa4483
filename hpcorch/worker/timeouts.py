"""What an array task does with the signal that comes before a run's time limit.

As submitit does it: a run that reaches its time limit is requeued only when it
can resume from a checkpoint (hpcorch.checkpoint), at most `max_requeues`
times; `provider.requeue_on_timeout` widens (`always`) or closes (`never`)
that. Preemption is not decided here: a preempted job is always requeued.
"""

from __future__ import annotations

from enum import Enum

from hpcorch import checkpoint

#: `provider.requeue_on_timeout` values (SlurmSettings validates them).
REQUEUE_ON_TIMEOUT = ("checkpointed", "always", "never")


class TimeoutAction(str, Enum):
    """What the array task does with the signal that comes before the time limit."""

    EXPIRE = "expire"
    """Neither forward nor requeue: the run goes on until the limit ends it (TIMEOUT)."""
    REQUEUE = "requeue"
    """Forward the signal to the run, then requeue the task."""
    REQUEUE_IF_SAVED = "requeue_if_saved"
    """Forward the signal; requeue only if the run then saved a checkpoint or stopped to
    be resumed (`checkpoint.stop()`), else let the limit end the task."""


def timeout_decision(policy: str, timeouts: int, max_requeues: int,
                     usage: checkpoint.Usage) -> tuple[TimeoutAction, str]:
    """The action for a run whose task got the time-limit signal, and why (for stderr).

    As submitit: a run is requeued on its time limit only when it can resume from a
    checkpoint (or `policy` is `always`), and at most `max_requeues` times (`timeouts`:
    its time-limit requeues so far; requeues after preemption do not count)."""
    if timeouts >= max_requeues:
        return TimeoutAction.EXPIRE, f"no requeue left ({timeouts} of {max_requeues} done)"
    if policy == "never":
        return TimeoutAction.EXPIRE, "not requeued (provider.requeue_on_timeout=never)"
    if policy == "always":
        return TimeoutAction.REQUEUE, "requeue_on_timeout=always"
    if usage.saved:
        return TimeoutAction.REQUEUE, "it saved a checkpoint"
    if usage.handles_signals:
        return TimeoutAction.REQUEUE_IF_SAVED, "it catches the signal to save a checkpoint"
    return TimeoutAction.EXPIRE, ("it saved no checkpoint, so it would start from zero again: "
                                  "not requeued (hpcorch.checkpoint; or set "
                                  "provider.requeue_on_timeout=always)")
