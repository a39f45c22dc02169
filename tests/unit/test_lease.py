"""The run lease's own clock (``Lease.held``): the fence a coordinator checks before each
commit counts time on the lease's clock, not the event loop's, which stops while the
machine is suspended."""

from __future__ import annotations

import sys
import time
from functools import partial

import pytest

from baton_nb.runtime._lease import Lease, lease_clock


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_held_follows_the_lease_clock_with_a_tenth_to_spare() -> None:
    clock = _Clock()
    lease = Lease(30.0, clock=clock)
    lease.valid_until = clock() + 30.0  # as ``take_lease`` sets it
    clock.now += 26.9
    assert lease.held()
    clock.now += 0.2  # less than a tenth of the time to live left: not surely held
    assert not lease.held()
    clock.now -= 20.0
    lease.lost = True
    assert not lease.held()


def test_a_suspend_counts_on_the_lease_clock_where_the_platform_has_one() -> None:
    """The loop's clock (CLOCK_MONOTONIC on Linux) stops while suspended; the lease's runs on."""
    clock = lease_clock()
    if sys.platform.startswith("linux"):
        expected = time.CLOCK_BOOTTIME
    elif sys.platform == "darwin":
        expected = time.CLOCK_MONOTONIC
    else:
        pytest.skip("no clock known to count suspend on this platform")
    assert isinstance(clock, partial) and clock.args == (expected,)
    assert clock() > 0
