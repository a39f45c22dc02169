"""``Throttle``: many pokes, at most one call per interval; flush, close, other threads."""

from __future__ import annotations

import threading
import time

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


async def test_steady_pokes_are_at_most_one_call_per_interval() -> None:
    fn = Recorder()
    interval = 0.05
    throttle = Throttle(fn, interval)
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        for _ in range(50):
            throttle.poke()
        await anyio.sleep(0.001)
    elapsed = time.monotonic() - start
    await anyio.sleep(interval * 2)  # the last scheduled call, if any
    assert 3 <= throttle.calls <= elapsed / interval + 2
    gaps = [b - a for a, b in zip(fn.times, fn.times[1:], strict=False)]
    assert min(gaps) >= interval * 0.9, gaps  # timer slack only


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

    def hammer() -> None:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            throttle.poke()

    start = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        await anyio.sleep(0.005)
    elapsed = time.monotonic() - start
    await anyio.sleep(0.1)
    assert 2 <= throttle.calls <= elapsed / 0.05 + 3
    assert set(fn.threads) == {loop_thread}


def test_without_a_loop_pokes_call_directly_at_most_once_per_interval() -> None:
    fn = Recorder()
    throttle = Throttle(fn, 60)
    throttle.poke()
    assert throttle.calls == 1
    for _ in range(100):
        throttle.poke()
    assert throttle.calls == 1  # within the interval: dropped
    throttle.flush()  # the final state is never left stale
    assert throttle.calls == 2
    throttle.close()
    throttle.flush()
    assert throttle.calls == 2  # closed: nothing more
