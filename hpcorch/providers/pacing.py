"""When to ask a batch scheduler: the pacing of its status calls (Slurm's sacct/squeue,
Grid Engine's qstat/qacct), kept out of the providers.

The runs' own task-state files answer most questions; the scheduler is asked
for the rest, ONE call for every open job, spaced out:

- not before `query_interval` seconds after a submission (jobs just queued);
- then backing off x1.5 (with +-10% jitter, unless asked for none) up to
  `max_query_interval`;
- while the files show progress, only every `max_query_interval`;
- soon again (`query_interval`) when a file says a run was SIGKILLed: only the
  scheduler can say whether for memory or time, and it should not wait;
- at once after a cancel (briefly fast again), or for a job nobody here knows.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class QueryPacing:
    """Decides whether a status() call may query the scheduler now."""

    def __init__(self, interval: float, max_interval: float,
                 clock: Callable[[], float], jitter: float = 0.1) -> None:
        self.base = interval
        self.jitter = jitter
        self.max_interval = max_interval
        self._clock = clock
        self.interval = interval
        self.next_at = 0.0
        self.last_at = float("-inf")
        self.progress_at = float("-inf")
        self.forced = False
        self._seen: dict[object, object] = {}

    def submitted(self) -> None:
        """Jobs were just queued: the scheduler can only say PENDING; ask it later."""
        self.interval = self.base
        self.last_at = self._clock()
        self.next_at = self.last_at + self.interval

    def cancelled(self) -> None:
        """A cancel should be seen soon: ask at once, then back off from one second."""
        self.interval = min(1.0, self.base)
        self.forced = True

    def observe(self, key: object, observation: object, verdict: bool = False) -> None:
        """A job's own file says `observation` about `key`; a change counts as progress,
        unless only the scheduler can tell how it ended (`verdict`): then ask it soon."""
        if self._seen.get(key) != observation:
            self._seen[key] = observation
            if not verdict:
                self.progress_at = self._clock()
                return
            self.interval = min(self.interval, self.base)
            self.next_at = min(self.next_at, self._clock() + self.interval)

    def due(self, unknown_jobs: bool = False, awaiting: bool = False) -> bool:
        """Whether to query now (`unknown_jobs`: some job was never heard of here;
        `awaiting`: some run's end waits for the scheduler's word, progress or not)."""
        if self.forced or unknown_jobs:
            return True
        now = self._clock()
        if now < self.next_at:
            return False
        if self.progress_at > self.last_at and now - self.last_at < self.max_interval \
                and not awaiting:
            # The jobs report progress themselves: the scheduler can wait a while longer.
            self.next_at = min(now + self.interval, self.last_at + self.max_interval)
            return False
        return True

    def queried(self) -> None:
        """A query was made: schedule the next one, backing off."""
        self.last_at = self._clock()
        self.forced = False
        spread = random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0
        self.next_at = self.last_at + self.interval * spread
        self.interval = min(self.interval * 1.5, self.max_interval)
