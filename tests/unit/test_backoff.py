"""The default step backoff (DESIGN §2): exponential with full jitter, base 1 s, cap 60 s."""

from __future__ import annotations

import random

import pytest

import baton_nb as bn
from baton_nb._graph import default_backoff

# attempt (the one that just failed) -> the largest wait before the next one
CEILINGS = {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 16.0, 6: 32.0, 7: 60.0, 8: 60.0, 50: 60.0}


@pytest.mark.parametrize(("attempt", "ceiling"), sorted(CEILINGS.items()))
def test_jitter_range_doubles_per_attempt_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, attempt: int, ceiling: float
) -> None:
    ranges: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        ranges.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", uniform)
    assert default_backoff(attempt) == ceiling
    assert ranges == [(0.0, ceiling)]  # full jitter: anywhere from 0 to the ceiling


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 7, 30])
def test_samples_stay_within_bounds_and_spread_over_them(attempt: int) -> None:
    ceiling = CEILINGS.get(attempt, 60.0)
    samples = [default_backoff(attempt) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter, not "half jitter" or a fixed delay: values near 0 and near the ceiling.
    assert min(samples) < 0.1 * ceiling
    assert max(samples) > 0.9 * ceiling
    assert len(set(samples)) > 1900


@pytest.mark.parametrize("attempt", [100, 1025, 5000, 10**9])
def test_huge_attempt_numbers_stay_at_the_cap(attempt: int) -> None:
    # A step with a very large max_attempts must not overflow 2.0 ** attempt.
    assert 0.0 <= default_backoff(attempt) <= 60.0


@pytest.mark.parametrize("attempt", [0, -3])
def test_out_of_range_attempts_use_the_base(attempt: int) -> None:
    assert all(0.0 <= default_backoff(attempt) <= 1.0 for _ in range(200))


def test_steps_without_backoff_use_the_default() -> None:
    async def step(ctx: bn.Context) -> None:
        return None

    wf = bn.Workflow("default-backoff")
    wf.add("a", step)
    wf.add("b", step, backoff=lambda attempt: 0.0)
    specs = wf.graph().steps
    assert specs["a"].backoff is default_backoff
    assert specs["b"].backoff is not default_backoff
