"""The shared scheduler query pacing (hpcorch.providers.pacing) as Grid Engine uses it."""

from __future__ import annotations

from hpcorch.providers.pacing import QueryPacing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_jitter_queries_back_off_exactly_up_to_the_maximum() -> None:
    clock = Clock()
    pacing = QueryPacing(2.0, 4.0, clock, jitter=0.0)
    pacing.submitted()
    assert not pacing.due()
    assert pacing.due(unknown_jobs=True)  # a job nobody here knows: ask at once
    clock.now = 102.0
    assert pacing.due()
    gaps = []
    for _ in range(4):
        pacing.queried()
        gaps.append(pacing.next_at - clock.now)
        clock.now = pacing.next_at
    assert gaps == [2.0, 3.0, 4.0, 4.0]


def test_a_cancel_asks_at_once_then_from_one_second() -> None:
    clock = Clock()
    pacing = QueryPacing(5.0, 30.0, clock, jitter=0.0)
    pacing.submitted()
    pacing.cancelled()
    assert pacing.due()
    pacing.queried()
    assert pacing.next_at == clock.now + 1.0
    assert not pacing.due()
