"""``Throttle``: many pokes, at most one call per interval; flush, close, other threads."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import anyio
import pytest

from baton_nb.widget._throttle import Throttle

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.threads: list[int] = []

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.threads.append(threading.get_ident())


async def test_a_burst_of_pokes_is_one_call() -> None:
    fn = Recorder()
    throttle = Throttle(fn, 0.1)
    for _ in range(10_000):
        throttle.poke()
    assert throttle.calls == 0  # poke never calls inline on the loop
    await anyio.sleep(0.02)
    assert throttle.calls == 1 == len(fn.times)
    await anyio.sleep(0.15)
    assert throttle.calls == 1  # nothing new was asked for


class FakeTimer:
    """Time that moves when the test says, and the timer callbacks due by then."""

    class Handle:
        def __init__(self) -> None:
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 100.0
        self.due: list[tuple[float, Callable[[], None], FakeTimer.Handle]] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None]) -> FakeTimer.Handle:
        handle = FakeTimer.Handle()
        self.due.append((self.now + delay, fn, handle))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            ready = [d for d in self.due if d[0] <= end]
            if not ready:
                break
            when, fn, handle = min(ready, key=lambda d: d[0])
            self.due.remove((when, fn, handle))
            self.now = max(self.now, when)
            if not handle.cancelled:
                fn()
        self.now = end


def test_steady_pokes_are_at_most_one_call_per_interval() -> None:
    timer = FakeTimer()
    times: list[float] = []
    interval = 0.05
    throttle = Throttle(
        lambda: times.append(timer.now), interval, clock=timer.clock, call_later=timer.call_later
    )
    for _ in range(500):  # 50 pokes every millisecond for half a second
        for _ in range(50):
            throttle.poke()
        timer.advance(0.001)
    timer.advance(interval)  # the last scheduled call, if any
    assert times[0] == pytest.approx(100.0)  # the first poke after a quiet period: at once
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= interval - 1e-9 for gap in gaps), gaps
    assert throttle.calls == len(times) == 11  # at 0, 0.05, ... 0.5 s


def test_a_poke_after_a_quiet_period_is_called_at_once() -> None:
    timer = FakeTimer()
    throttle = Throttle(lambda: None, 0.1, clock=timer.clock, call_later=timer.call_later)
    throttle.poke()
    timer.advance(0)
    timer.advance(1.0)
    throttle.poke()
    assert timer.due[-1][0] == timer.now  # due now, not an interval later
    throttle.poke()  # already scheduled: nothing more
    assert len([d for d in timer.due if not d[2].cancelled]) == 1


def test_a_call_that_returns_true_asks_for_the_next_after_its_gap() -> None:
    """``fn`` returning true is called again after the interval (or its cost's share)
    with no poke, until it returns false; close stops it."""
    timer = FakeTimer()
    times: list[float] = []
    left = [3]

    def fn() -> bool:
        times.append(timer.now)
        timer.now += 0.02  # each call costs 20 ms: at a 10 % share, 0.2 s apart
        left[0] -= 1
        return left[0] > 0

    throttle = Throttle(fn, 0.1, clock=timer.clock, call_later=timer.call_later, share=0.1)
    throttle.poke()
    timer.advance(5.0)
    assert [round(t - times[0], 6) for t in times] == [0, 0.2, 0.4]  # then it said enough
    left[0] = 100
    throttle.poke()
    timer.advance(0.5)
    throttle.close()
    calls = throttle.calls
    timer.advance(5.0)
    assert throttle.calls == calls  # closed: no call asked for by the last one runs


async def test_flush_calls_now_and_replaces_the_scheduled_call() -> None:
    fn = Recorder()
    throttle = Throttle(fn, 0.1)
    throttle.poke()
    await anyio.sleep(0.01)
    assert throttle.calls == 1
    throttle.poke()  # scheduled ~0.1 s after the first call
    throttle.flush()
    assert throttle.calls == 2
    await anyio.sleep(0.15)
    assert throttle.calls == 2  # the scheduled call was cancelled, not run as well
    throttle.flush()  # flush with nothing scheduled still calls
    assert throttle.calls == 3


async def test_close_drops_the_scheduled_call_and_later_pokes() -> None:
    fn = Recorder()
    throttle = Throttle(fn, 0.05)
    throttle.poke()
    throttle.close()
    await anyio.sleep(0.1)
    assert throttle.calls == 0
    throttle.poke()
    await anyio.sleep(0.1)
    assert throttle.calls == 0 and fn.times == []


async def test_pokes_from_other_threads_run_fn_on_the_loop() -> None:
    fn = Recorder()
    throttle = Throttle(fn, 0.05)  # made on the loop; the first poke comes from a thread
    loop_thread = threading.get_ident()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            throttle.poke()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    with anyio.fail_after(10):
        while throttle.calls < 3:
            await anyio.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    assert set(fn.threads) == {loop_thread}


def test_an_expensive_call_is_followed_by_a_longer_wait() -> None:
    """With ``share``, a call that took d seconds is followed no sooner than d / share
    later (at most ``max_interval``); a cheap one keeps the interval."""
    timer = FakeTimer()
    times: list[float] = []
    cost = {"seconds": 0.0}

    def fn() -> None:
        times.append(timer.now)
        timer.now += cost["seconds"]  # the call takes that long on the throttle's clock

    throttle = Throttle(
        fn, 0.1, clock=timer.clock, call_later=timer.call_later, share=0.02, max_interval=1.0
    )

    def gap(seconds: float) -> float:
        """A call taking ``seconds`` after a quiet period, and the wait until the next."""
        cost["seconds"] = seconds
        throttle.poke()
        timer.advance(0)  # the first poke after a quiet period: called at once
        throttle.poke()
        timer.advance(2.0)
        return times[-1] - times[-2]

    assert gap(0.01) == pytest.approx(0.5)  # 0.01 s at 2 %: 0.5 s apart
    assert gap(0.1) == pytest.approx(1.0)  # 5 s at 2 %: at most a second apart
    assert gap(0.0) == pytest.approx(0.1)  # cheap again: the interval
