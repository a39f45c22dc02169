"""Sliding-window arithmetic: no 60 s window ever holds more than the limit.

The integration tests (tests/integration/test_llm_limits.py) check the same at the fake
server; here the grants themselves, with times given (no clock, no waiting).
"""

from __future__ import annotations

import random

import pytest

from baton_nb.llm._limits import MARGIN, WINDOW, Grant, SlidingWindow


def busiest_window(grants: list[Grant]) -> float:
    """The largest sum of amounts in any window (t - 60, t]; the busiest window ends at a
    grant, so checking those is checking every window."""
    return max(
        sum(g.amount for g in grants if t - WINDOW < g.at <= t) for t in {g.at for g in grants}
    )


def test_a_burst_up_to_the_limit_then_the_next_minute() -> None:
    window = SlidingWindow(10)
    grants = [window.reserve(1, now=100.0) for _ in range(25)]
    later = 100.0 + WINDOW + MARGIN
    assert [g.at for g in grants] == [100.0] * 10 + [later] * 10 + [later + 60.25] * 5
    assert busiest_window(grants) == 10  # a token bucket starting full let 20 through


def test_requests_spread_out_keep_their_times() -> None:
    window = SlidingWindow(3)
    assert [window.reserve(1, now=t).at for t in (0.0, 10.0, 20.0, 30.0, 65.0)] == [
        0.0,
        10.0,
        20.0,
        60.25,  # the 4th waits for the 1st to leave the window (and the margin)
        70.25,  # arrival order: not before 60.25; the one at 10 stops counting then
    ]


def test_a_huge_reservation_is_capped_at_the_limit() -> None:
    window = SlidingWindow(1000)
    assert window.reserve(10**9, now=0.0).at == 0.0
    assert window.reserve(500, now=0.0).at == WINDOW + MARGIN


def test_corrections_give_back_or_take_more() -> None:
    window = SlidingWindow(600)
    first = window.reserve(600, now=0.0)
    window.correct(first, 300)  # the call used 300 fewer than reserved
    assert window.reserve(300, now=1.0).at == 1.0
    window.correct(first, 900)  # ... or more than reserved: later calls wait longer
    assert window.reserve(1, now=2.0).at == WINDOW + MARGIN


def test_a_cancelled_reservation_frees_its_place() -> None:
    window = SlidingWindow(2)
    window.reserve(1, now=0.0)
    waiting = window.reserve(1, now=0.0)
    window.correct(waiting, 0)  # cancelled before it was sent
    assert window.reserve(1, now=0.5).at == 0.5


@pytest.mark.parametrize("seed", range(20))
def test_no_window_exceeds_the_limit_whatever_the_arrivals(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([5, 60, 1000, 200_000])
    window = SlidingWindow(limit)
    now = 0.0
    grants = []
    for _ in range(400):
        now += rng.expovariate(1.0) * rng.choice([0.01, 1, 10])
        estimate = rng.randint(1, max(1, limit // 3))
        grant = window.reserve(estimate, now=now)
        assert grant.at >= now
        if rng.random() < 0.7:  # answered: the reported usage is at most the estimate
            window.correct(grant, rng.randint(0, estimate))
        grants.append(grant)
    assert busiest_window(grants) <= limit
    assert [g.at for g in grants] == sorted(g.at for g in grants)  # arrival order


def test_grants_wait_no_longer_than_the_window_requires() -> None:
    window = SlidingWindow(4)
    times = [window.reserve(1, now=float(t)).at for t in range(12)]
    # 4 per minute: each waits for the one 4 places before it to leave the window
    hold = WINDOW + MARGIN
    first = [0.0, 1.0, 2.0, 3.0]
    assert times == first + [t + hold for t in first] + [t + 2 * hold for t in first]
