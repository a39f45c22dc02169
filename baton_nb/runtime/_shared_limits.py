"""``bn.Limit`` held by all workers together (DESIGN §10): the limiter's rule
(``SlidingWindow.plan``) applied to the grants stored in Postgres (``SqlLimits``), and
concurrency slots leased there, renewed by the worker's heartbeat so that a killed
worker's slots lapse.

A worker waiting for a slot is woken when one of its provider's slots is let go anywhere
(``SLOTS_CHANNEL``, LISTENed to by the worker: ``released``); it polls only as the safety
net (a slot that lapsed, a NOTIFY missed), every ``BATON_NB_SLOT_POLL`` seconds (default 1).

``BATON_NB_LIMIT_WINDOW`` (seconds, default 60) shortens the window for tests: rpm and tpm
then count per that many seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import anyio

from .._errors import ConfigurationError
from ..llm._limits import MARGIN, WINDOW, SlidingWindow
from ..store import SqlLimits

__all__ = ["WorkerLimits", "limit_window", "slot_poll"]

SLOT_POLL = 1.0  # seconds between tries for a slot when no release wakes the waiter


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigurationError(f"{name} must be seconds > 0, got {raw!r}")
    return value


def limit_window() -> float:
    """The seconds rpm and tpm count over (``BATON_NB_LIMIT_WINDOW``, default 60)."""
    return _seconds("BATON_NB_LIMIT_WINDOW", WINDOW)


def slot_poll() -> float:
    """The safety-net poll of a slot waiter (``BATON_NB_SLOT_POLL``, default 1 s)."""
    return _seconds("BATON_NB_SLOT_POLL", SLOT_POLL)


class WorkerLimits:
    """The ``SharedLimits`` of one worker process (``llm._limits.share_limits``)."""

    def __init__(self, store: SqlLimits, worker: str, slot_ttl: float) -> None:
        self.store = store
        self.worker = worker
        self.slot_ttl = slot_ttl
        self.hold = limit_window() + MARGIN
        self.poll = slot_poll()
        self._freed: dict[str, anyio.Event] = {}  # by provider: set when a slot is let go

    async def reserve(
        self, provider: str, kind: str, limit: int, amount: float
    ) -> tuple[int, float]:
        hold = self.hold

        def plan(grants: Sequence[tuple[float, float]], now: float) -> tuple[float, float]:
            return SlidingWindow.plan(limit, hold, grants, now, amount)

        return await self.store.reserve(provider, kind, hold, plan)

    async def correct(self, grant: int, amount: float) -> None:
        await self.store.correct(grant, amount)

    async def take_slot(self, provider: str, limit: int) -> int:
        while True:
            # Waited on if every slot is held: made before the try, so a release between
            # the try and the wait still wakes it.
            freed = self._freed.get(provider)
            if freed is None:
                freed = self._freed[provider] = anyio.Event()
            # shielded: a slot taken in the database is always handed back to be freed
            # (else this worker's heartbeat would renew a slot nobody frees)
            with anyio.CancelScope(shield=True):
                slot = await self.store.take_slot(provider, self.worker, limit, self.slot_ttl)
            if slot is not None:
                return slot
            with anyio.move_on_after(self.poll):
                await freed.wait()

    def released(self, provider: str) -> None:
        """A slot of ``provider`` was let go (a NOTIFY on ``SLOTS_CHANNEL``): its waiters
        here try again."""
        freed = self._freed.pop(provider, None)
        if freed is not None:
            freed.set()

    async def free_slot(self, slot: int) -> None:
        await self.store.free_slot(slot)

    async def renew(self) -> None:
        """The heartbeat: this worker's slots stay held."""
        await self.store.renew_slots(self.worker, self.slot_ttl)

    async def close(self) -> None:
        """The worker stops: its slots go at once (its store is closed by its owner)."""
        await self.store.drop_slots(self.worker)
