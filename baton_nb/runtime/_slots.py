"""Concurrency slots: the run's ``concurrency`` and each ``concurrency_key``'s limit, FIFO.

A step holds its key slot (if it has a key) and one run slot while an attempt runs. A
step's task is started only once it holds its slots, so a wide fan-out keeps nodes (not
parked tasks) in these queues: per waiting step no task, coroutine, cancel scope or event
that would outlive the GC's young generations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from .._states import TERMINAL_STATES
from ._node import Node

__all__ = ["Slots"]


class Slots:
    """Who may start now; who waits, in order."""

    def __init__(self, concurrency: int, key_limits: Mapping[str, int]) -> None:
        self.free = concurrency
        self.waiting: deque[Node] = deque()  # hold their key slot (if any), wait for one
        self._key_limits = key_limits
        self._key_free: dict[str, int] = {}
        self._key_waiting: dict[str, deque[Node]] = {}

    def admit(self, node: Node) -> Node | None:
        """``node`` if it may start now (it then holds its slots), else None (queued)."""
        key = node.spec.concurrency_key
        if key is not None:
            free = self._key_free.get(key)
            if free is None:
                free = self._key_limits.get(key, 1)
            if free <= 0:
                self._key_waiting.setdefault(key, deque()).append(node)
                return None
            self._key_free[key] = free - 1
        return self._take_run_slot(node)

    def release(self, node: Node) -> Sequence[Node]:
        """``node``'s attempt ended: its slots pass to the next waiting steps, FIFO; those
        that may start now (a list made only when there are some: one per attempt less
        for the garbage collector to count)."""
        started: list[Node] | None = None
        waiting = self.waiting
        while waiting:
            nxt = waiting.popleft()
            if nxt.state in TERMINAL_STATES:  # cancelled while it waited (e.g. a quorum met)
                started = self._release_key(nxt, started)
                continue
            started = _add(started, nxt)  # the run slot passes to it
            break
        else:
            self.free += 1
        started = self._release_key(node, started)
        return () if started is None else started

    def _take_run_slot(self, node: Node) -> Node | None:
        if self.free > 0:
            self.free -= 1
            return node
        self.waiting.append(node)
        return None

    def _release_key(self, node: Node, started: list[Node] | None) -> list[Node] | None:
        key = node.spec.concurrency_key
        if key is None:
            return started
        waiting = self._key_waiting.get(key)
        while waiting:
            nxt = waiting.popleft()
            if nxt.state not in TERMINAL_STATES:
                got = self._take_run_slot(nxt)  # the key slot passes to it
                return started if got is None else _add(started, got)
        self._key_free[key] += 1
        return started


def _add(started: list[Node] | None, node: Node) -> list[Node]:
    if started is None:
        return [node]
    started.append(node)
    return started
