"""Coalesce many pokes into at most one call per interval, on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Call ``fn`` at most once per ``interval`` seconds, however often ``poke()`` is called.

    ``poke()`` is O(1) and safe from any thread: it only schedules a timer on the event loop
    (the first poke after a quiet period fires on the next loop iteration, later ones wait
    for the interval). Without a running loop each poke calls ``fn`` directly if the interval
    has passed, and ``flush()`` always calls it: the final state is never left stale.
    """

    def __init__(self, fn: Callable[[], None], interval: float = 0.1) -> None:
        self.fn = fn
        self.interval = interval
        self.calls = 0
        self._last = float("-inf")
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Made on a loop: pokes from other threads go to that loop, even the first one.
        self._loop_or_none()

    def poke(self) -> None:
        """Ask for a call soon; returns at once."""
        if self._handle is not None or self._closed:
            return
        loop = self._loop_or_none()
        if loop is None:
            if time.monotonic() - self._last >= self.interval:
                self._fire()
            return
        with self._lock:
            if self._handle is not None:
                return
            delay = max(0.0, self._last + self.interval - time.monotonic())
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

    def _schedule_from_loop(self, delay: float) -> None:
        assert self._loop is not None
        with self._lock:
            self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._closed:
            return
        self._last = time.monotonic()
        self.calls += 1
        self.fn()

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
