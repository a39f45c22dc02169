"""Coalesce many pokes into at most one call per interval, on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["CallLater", "Throttle"]


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


# ``call_later(delay, fn)``: run ``fn`` after ``delay`` seconds (the loop's own, by default).
CallLater = Callable[[float, Callable[[], None]], _Cancellable]


class Throttle:
    """Call ``fn`` at most once per ``interval`` seconds, however often ``poke()`` is called.

    Given ``share`` (a fraction of the time, e.g. 0.02), calls are also spaced so that ``fn``
    takes at most that share: a call that took ``d`` seconds is followed by the next no sooner
    than ``d / share`` later (``max_interval`` at most). A cheap ``fn`` keeps the interval; an
    expensive one (a redraw of thousands of changed nodes) is called less often, and more of
    what it does is coalesced into each call.

    ``poke()`` is O(1) and safe from any thread: it only schedules a timer on the event loop
    (the first poke after a quiet period fires on the next loop iteration, later ones wait
    for the interval). Without a running loop each poke calls ``fn`` directly if the interval
    has passed, and ``flush()`` always calls it: the final state is never left stale.

    ``fn`` returning true asks for the next call itself, as a poke after it would (a view
    that reads what nobody tells it of: the widget's tallied maps, whose children are
    quiet).
    """

    def __init__(
        self,
        fn: Callable[[], object],
        interval: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
        share: float | None = None,
        max_interval: float = 1.0,
    ) -> None:
        """``clock`` and ``call_later``: the time and the timer (tests give their own)."""
        self.fn = fn
        self.interval = interval
        self.share = share
        self.max_interval = max(interval, max_interval)
        self._gap = interval  # the wait after the last call: interval, or its cost / share
        self._clock = clock
        self._call_later = call_later
        self.calls = 0
        self._last = float("-inf")
        self._handle: _Cancellable | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Made on a loop: pokes from other threads go to that loop, even the first one.
        self._loop_or_none()

    def poke(self) -> None:
        """Ask for a call soon; returns at once."""
        if self._handle is not None or self._closed:
            return
        if self._call_later is not None:
            with self._lock:
                if self._handle is None:
                    self._handle = self._call_later(self._delay(), self._fire)
            return
        loop = self._loop_or_none()
        if loop is None:
            if self._clock() - self._last >= self._gap:
                self._fire()
            return
        with self._lock:
            if self._handle is not None:
                return
            delay = self._delay()
            if _on_loop_thread(loop):
                self._handle = loop.call_later(delay, self._fire)
            else:
                self._handle = loop.call_soon_threadsafe(self._schedule_from_loop, delay)

    def flush(self) -> None:
        """Call ``fn`` now (cancelling a scheduled call)."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self._fire()

    def close(self) -> None:
        """Drop any scheduled call; later pokes do nothing."""
        self._closed = True
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def _delay(self) -> float:
        """Seconds until the next call may happen (0 after a quiet period)."""
        return max(0.0, self._last + self._gap - self._clock())

    def _schedule_from_loop(self, delay: float) -> None:
        assert self._loop is not None
        with self._lock:
            self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._closed:
            return
        self._last = start = self._clock()
        self.calls += 1
        again = False
        try:
            again = bool(self.fn())
        finally:
            if self.share is not None:
                spent = self._clock() - start
                self._gap = min(self.max_interval, max(self.interval, spent / self.share))
        if again:
            self.poke()

    def _loop_or_none(self) -> asyncio.AbstractEventLoop | None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is not None and (self._loop.is_closed() or not self._loop.is_running()):
                self._loop = None
        return self._loop


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
