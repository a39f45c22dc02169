"""Whole-call deadlines on asyncio without a timer per call.

``asyncio.timeout(seconds)`` arms a timer handle per call (a heap push, a cancel, and
Python-level comparisons in the loop's heap, which at 1,000 calls in flight holds 1,000
of them) and two coroutine levels (``__aenter__``/``__aexit__``). The calls of one
timeout length on one loop start in order, so their deadlines come in that order: a
queue per length, and one timer for the earliest deadline not yet passed, does the same.

On expiry a call's task is cancelled, and the ``CancelledError`` that ends it becomes a
``TimeoutError``, exactly as ``asyncio.timeout`` does (the task's cancel count is taken
back with ``uncancel()``; a cancel from elsewhere stays a cancel).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque

__all__ = ["Deadline", "start_deadline"]

# A timer is due when its time is within the clock's resolution (asyncio's _run_once).
_RESOLUTION = time.get_clock_info("monotonic").resolution

_ENTERED, _EXPIRING, _EXITED = 0, 1, 2


class Deadline:
    """One call's deadline (:func:`start_deadline`); :meth:`end` when the call ends."""

    __slots__ = ("cancelling", "queue", "state", "task", "when")

    def __init__(self, queue: _Queue, task: asyncio.Task[object], when: float) -> None:
        self.queue = queue
        self.task: asyncio.Task[object] | None = task
        self.when = when
        self.state = _ENTERED
        self.cancelling = task.cancelling()

    def end(self, error: BaseException | None) -> None:
        """The call ended (``error``: what ended it, if anything): raises ``TimeoutError``
        from the ``CancelledError`` of its expiry, as ``asyncio.timeout``'s exit does."""
        state = self.state
        self.state = _EXITED
        task, self.task = self.task, None  # an ended call's task (and its result) not kept
        self.queue.drop_ended()  # (only the queue's front leaves: one slow call keeps the rest)
        if state == _EXPIRING and (
            task is not None
            and task.uncancel() <= self.cancelling
            and type(error) is asyncio.CancelledError
        ):
            raise TimeoutError from error


class _Queue:
    """The deadlines of one timeout length on one loop, in start order (so in deadline
    order), and the one timer armed for the first."""

    __slots__ = ("entries", "handle", "loop", "owner", "seconds")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, owner: dict[float, _Queue], seconds: float
    ) -> None:
        self.loop = loop
        self.owner = owner  # the loop's queues, by length: this one leaves when it is idle
        self.seconds = seconds
        self.entries: deque[Deadline] = deque()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, seconds: float) -> Deadline:
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        deadline = Deadline(self, task, self.loop.time() + seconds)
        self.entries.append(deadline)
        if self.handle is None:
            self.handle = self.loop.call_at(deadline.when, self._expire, deadline.when)
        return deadline

    def drop_ended(self) -> None:
        entries = self.entries
        while entries and entries[0].state == _EXITED:
            entries.popleft()

    def _expire(self, armed_for: float = float("-inf")) -> None:
        self.handle = None
        # Due: within the clock's resolution, or the deadline this timer was armed for (a
        # loop may fire a timer early by its clock's step: uvloop's is a millisecond, and
        # re-arming for a time not yet reached would spin).
        due = max(self.loop.time() + _RESOLUTION, armed_for)
        entries = self.entries
        while entries:
            first = entries[0]
            if first.state != _ENTERED:
                entries.popleft()
                continue
            if first.when > due:
                self.handle = self.loop.call_at(first.when, self._expire, first.when)
                return
            entries.popleft()
            assert first.task is not None  # (only an ended deadline has none)
            first.task.cancel()
            first.state = _EXPIRING
        # idle: not kept (timeouts computed per call would otherwise pile up queues)
        if self.owner.get(self.seconds) is self:
            del self.owner[self.seconds]


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Queue]] = (
    weakref.WeakKeyDictionary()
)
# The loop last seen and its queues (no weak-dictionary lookup per call); the loop held
# weakly, so a loop that ended (``asyncio.run`` returned) is freed with its queues.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop] | None, dict[float, _Queue]] = (None, {})
_lock = threading.Lock()  # loops of other threads (a loop's own queues: its thread only)


def start_deadline(seconds: float) -> Deadline:
    """A deadline ``seconds`` from now for the current task (on asyncio): its task is
    cancelled then unless :meth:`Deadline.end` came first."""
    global _last
    loop = asyncio.get_running_loop()
    last_loop, queues = _last
    if last_loop is None or last_loop() is not loop:
        with _lock:
            found = _queues.get(loop)
            if found is None:
                found = _queues[loop] = {}
        queues = found
        _last = (weakref.ref(loop), found)
    queue = queues.get(seconds)
    if queue is None:
        queue = queues[seconds] = _Queue(loop, queues, seconds)
    return queue.add(seconds)
