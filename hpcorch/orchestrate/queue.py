"""The orchestrator's submission queue: priority order, `max_parallel`, and transient
submission refusals tried again with backoff, all without sleeping.

Runs wait here until the orchestrator's loop hands them to the provider: highest
`priority` first (ties in run order), at most `max_parallel` of a sweep queued or
running at once, and, after a transient refusal (TransientSubmitError), not before
their backoff delay has passed. The loop goes on watching the runs already in the
meantime; a run refused more often than `hpcorch.retry.submit` allows is given up
with its reason. Every delay is written to the sweep's event log.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hpcorch.errors import TransientSubmitError
from hpcorch.orchestrate.retry import backoff_delay, policy_of
from hpcorch.providers.base import Provider
from hpcorch.spec import FailureClass, FailureContext, RunHandle, RunSpec


@dataclass(order=True)
class _Waiting:
    order: tuple[int, int]
    spec: RunSpec = field(compare=False)
    not_before: float = field(default=0.0, compare=False)
    tries: int = field(default=0, compare=False)
    """Transient refusals so far."""


@dataclass(frozen=True)
class Submitted:
    """What one turn of the queue did."""

    runs: list[tuple[RunSpec, RunHandle]]
    """Runs the provider accepted."""
    given_up: list[tuple[RunSpec, FailureContext]]
    """Runs refused more often than their policy allows: they fail with this context."""


class SubmitQueue:
    """Runs waiting to be submitted to one provider (see the module docstring)."""

    def __init__(self, provider: Provider, *, max_parallel: int | None = None,
                 prepare: Callable[[RunSpec], None] = lambda spec: None,
                 event: Callable[[dict[str, object]], None] = lambda data: None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.provider = provider
        self.max_parallel = max_parallel
        self._prepare = prepare
        self._event = event
        self._clock = clock
        self._rng = rng
        self._waiting: list[_Waiting] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def specs(self) -> list[RunSpec]:
        """The runs still waiting, in the order they would be submitted."""
        return [w.spec for w in sorted(self._waiting)]

    def clear(self) -> None:
        """Forget every waiting run (the sweep was interrupted)."""
        self._waiting.clear()

    def add(self, specs: Sequence[RunSpec]) -> None:
        """Queue runs; higher `priority` goes first, then the order given."""
        for spec in specs:
            self._waiting.append(_Waiting((-spec.priority, next(self._seq)), spec))

    def due_in(self) -> float | None:
        """Seconds until the next waiting run may be submitted (0: now); None: none waits."""
        if not self._waiting:
            return None
        return max(0.0, min(w.not_before for w in self._waiting) - self._clock())

    def submit_due(self, in_flight: int) -> Submitted:
        """Submit, as ONE batch, the waiting runs that are due, in priority order, as many
        as `max_parallel` leaves room for beside the `in_flight` ones."""
        now = self._clock()
        room = len(self._waiting) if self.max_parallel is None \
            else max(0, self.max_parallel - in_flight)
        batch = [w for w in sorted(self._waiting) if w.not_before <= now][:room]
        if not batch:
            return Submitted([], [])
        for waiting in batch:
            self._prepare(waiting.spec)
        try:
            handles = self.provider.submit([w.spec for w in batch])
        except TransientSubmitError as exc:
            return self._refused(batch, exc, now)
        for waiting in batch:
            self._waiting.remove(waiting)
        return Submitted([(w.spec, h) for w, h in zip(batch, handles, strict=True)], [])

    def _refused(self, batch: list[_Waiting], exc: TransientSubmitError,
                 now: float) -> Submitted:
        accepted: dict[str, list[RunHandle]] = {}
        for handle in exc.submitted:
            if isinstance(handle, RunHandle):
                accepted.setdefault(handle.run_key, []).append(handle)
        runs, given_up, delayed = [], [], []
        # One delay for the whole refused batch, so it is tried again as one batch.
        tries = max(w.tries for w in batch) + 1
        delay = backoff_delay(tries, policy_of(batch[0].spec.retry), self._rng)
        for waiting in batch:
            got = accepted.get(waiting.spec.run_key)
            if got:
                runs.append((waiting.spec, got.pop(0)))
                self._waiting.remove(waiting)
                continue
            waiting.tries += 1
            policy = policy_of(waiting.spec.retry)
            if waiting.tries > policy.submit:
                self._waiting.remove(waiting)
                given_up.append((waiting.spec, FailureContext(
                    self.provider.name, reason=f"submission refused {waiting.tries} times "
                    f"(hpcorch.retry.submit={policy.submit}): {exc}",
                    failure_class=FailureClass.SUBMIT_TRANSIENT)))
                continue
            waiting.not_before = now + delay
            delayed.append((waiting.spec.num, round(delay, 3), waiting.tries))
        if delayed:
            print(f"hpcorch: {self.provider.name} refused a submission ({_last_line(exc)}): "
                  f"{len(delayed)} run(s) tried again in {delay:.2f} s (try {tries + 1})",
                  file=sys.stderr, flush=True)
            self._event({"event": "submit_retry", "reason": _last_line(exc),
                         "runs": [{"num": n, "delay_s": d, "try": t + 1}
                                  for n, d, t in delayed]})
        return Submitted(runs, given_up)


def _last_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[-1][:300]
