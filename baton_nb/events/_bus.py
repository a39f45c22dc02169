"""In-process publish/subscribe that never blocks the publisher.

Each subscriber owns a bounded buffer. When it is full the oldest droppable event
(anything but WorkflowFinished) is dropped and the subscriber is later told how many
were lost with an EventsDropped item. Listeners (plain callbacks, used by the widget)
are called inline; one that raises is removed and logged, and the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from ._types import Event, EventsDropped, WorkflowFinished

__all__ = [
    "DEFAULT_BUFFER",
    "Subscription",
    "add_listener",
    "has_subscribers",
    "publish",
    "subscribe",
]

logger = logging.getLogger("baton_nb.events")
DEFAULT_BUFFER = 10_000
Listener = Callable[[Any], None]


class Subscription:
    """An async iterator over the events of some topics. Use through ``subscribe``."""

    def __init__(self, topics: tuple[str, ...], maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.topics = topics
        self.maxsize = maxsize
        self._buffer: deque[Event] = deque()
        self._dropped = 0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def _push(self, event: Event) -> None:
        with self._lock:
            if len(self._buffer) >= self.maxsize:
                self._drop_oldest()
            self._buffer.append(event)
            waiter = self._waiter
        if waiter is not None:
            self._wake(waiter)

    def _drop_oldest(self) -> None:
        for i, old in enumerate(self._buffer):
            if not isinstance(old, WorkflowFinished):
                del self._buffer[i]
                self._dropped += 1
                return
        # Only WorkflowFinished events are buffered: keep them all, they are never dropped.

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        def set_result() -> None:
            if not waiter.done():
                waiter.set_result(None)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            set_result()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(set_result)

    def _take(self) -> Event | None:
        with self._lock:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                return EventsDropped(self.topics[0], dropped)
            if self._buffer:
                return self._buffer.popleft()
            self._waiter = self._loop.create_future()
            return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            event = self._take()
            if event is not None:
                return event
            assert self._waiter is not None
            await self._waiter

    def pending(self) -> int:
        """Number of buffered events not yet consumed."""
        return len(self._buffer)

    def get_nowait(self) -> Event | None:
        """The next event if one is buffered, else None (never waits)."""
        event = self._take()
        if event is None:
            with self._lock:
                self._waiter = None
        return event


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscriptions: dict[str, list[Subscription]] = {}
        self.listeners: dict[str, list[Listener]] = {}

    def targets(self, topics: Iterable[str]) -> tuple[list[Subscription], list[Listener]]:
        subs: list[Subscription] = []
        listeners: list[Listener] = []
        with self.lock:
            for topic in topics:
                for sub in self.subscriptions.get(topic, ()):
                    if sub not in subs:
                        subs.append(sub)
                for fn in self.listeners.get(topic, ()):
                    if fn not in listeners:
                        listeners.append(fn)
        return subs, listeners

    def remove_listener(self, fn: Listener) -> None:
        with self.lock:
            for fns in self.listeners.values():
                if fn in fns:
                    fns.remove(fn)


_registry = _Registry()


def has_subscribers(*topics: str) -> bool:
    """True if anything listens on any of the topics (lets publishers skip building events)."""
    # A loop, not any() over a generator: asked twice per step of a run, mostly with
    # nobody listening (the generator cost more than the lookups).
    subscriptions, listeners = _registry.subscriptions, _registry.listeners
    if not subscriptions and not listeners:  # nobody listens at all (a topic's last one
        return False  # leaving removes it): the usual case, without a lookup per topic
    for topic in topics:  # noqa: SIM110
        if subscriptions.get(topic) or listeners.get(topic):
            return True
    return False


def publish(event: Event, *topics: str) -> None:
    """Deliver ``event`` to every subscriber and listener of ``topics``. Never blocks."""
    subs, listeners = _registry.targets(topics)
    for sub in subs:
        sub._push(event)
    for fn in listeners:
        try:
            fn(event)
        except Exception:
            logger.exception("event listener %r raised; it was removed", fn)
            _registry.remove_listener(fn)


@asynccontextmanager
async def subscribe(*topics: str, maxsize: int = DEFAULT_BUFFER) -> AsyncIterator[Subscription]:
    """Subscribe to topics for the duration of the ``async with`` block.

    >>> async with bn.events.subscribe(bn.topic_workflow(run_id)) as stream:
    ...     async for event in stream: ...
    """
    if not topics:
        raise ValueError("subscribe() needs at least one topic, e.g. bn.topic_all()")
    sub = Subscription(tuple(topics), maxsize)
    with _registry.lock:
        for topic in topics:
            _registry.subscriptions.setdefault(topic, []).append(sub)
    try:
        yield sub
    finally:
        sub._closed = True
        with _registry.lock:
            for topic in topics:
                subs = _registry.subscriptions.get(topic, [])
                if sub in subs:
                    subs.remove(sub)
                if not subs:
                    _registry.subscriptions.pop(topic, None)


def add_listener(topic: str, fn: Listener) -> Callable[[], None]:
    """Call ``fn(event)`` inline for each event on ``topic``; returns a function that removes it.

    Listeners must be cheap and must not block: they run in the publisher's thread.
    """
    with _registry.lock:
        _registry.listeners.setdefault(topic, []).append(fn)

    def remove() -> None:
        with _registry.lock:
            fns = _registry.listeners.get(topic, [])
            if fn in fns:
                fns.remove(fn)
            if not fns:
                _registry.listeners.pop(topic, None)

    return remove
