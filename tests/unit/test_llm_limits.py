"""Token bucket arithmetic (the integration tests measure real concurrency)."""

from __future__ import annotations

import pytest

from baton_nb.llm import _limits
from baton_nb.llm._limits import TokenBucket


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(_limits.time, "monotonic", lambda: now[0])
    return now


def test_bucket_allows_a_minute_then_paces(clock: list[float]) -> None:
    bucket = TokenBucket(60)  # one per second
    assert all(bucket.reserve(1) == 0 for _ in range(60))
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(1) == pytest.approx(2.0)
    clock[0] += 2.0
    assert bucket.reserve(1) == pytest.approx(1.0)


def test_bucket_caps_a_huge_reservation(clock: list[float]) -> None:
    bucket = TokenBucket(1000)
    assert bucket.reserve(10**9) == 0.0  # capped at one minute's allowance
    assert bucket.reserve(500) == pytest.approx(30.0)


def test_bucket_adjust_corrects_estimates(clock: list[float]) -> None:
    bucket = TokenBucket(600)
    bucket.reserve(600)
    bucket.adjust(+300)  # used 300 fewer than reserved
    assert bucket.reserve(300) == 0.0
    bucket.adjust(-600)  # used 600 more than reserved
    assert bucket.reserve(1) == pytest.approx(601 / 10)
