"""Token bucket arithmetic (the integration tests measure real concurrency)."""

from __future__ import annotations

import pytest

from baton_nb.llm._limits import Clock, TokenBucket


class Now(list[float]):
    """A clock the test moves: ``clock[0] += 2.0``."""

    def clock(self) -> Clock:
        return Clock(now=lambda: self[0])


@pytest.fixture
def clock() -> Now:
    return Now([1000.0])


def test_bucket_allows_a_minute_then_paces(clock: Now) -> None:
    bucket = TokenBucket(60, clock.clock())  # one per second
    assert all(bucket.reserve(1) == 0 for _ in range(60))
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(1) == pytest.approx(2.0)
    clock[0] += 2.0
    assert bucket.reserve(1) == pytest.approx(1.0)


def test_bucket_caps_a_huge_reservation(clock: Now) -> None:
    bucket = TokenBucket(1000, clock.clock())
    assert bucket.reserve(10**9) == 0.0  # capped at one minute's allowance
    assert bucket.reserve(500) == pytest.approx(30.0)


def test_bucket_adjust_corrects_estimates(clock: Now) -> None:
    bucket = TokenBucket(600, clock.clock())
    bucket.reserve(600)
    bucket.adjust(+300)  # used 300 fewer than reserved
    assert bucket.reserve(300) == 0.0
    bucket.adjust(-600)  # used 600 more than reserved
    assert bucket.reserve(1) == pytest.approx(601 / 10)
