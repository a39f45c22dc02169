"""``bn.Limit`` held by all workers together (DESIGN §10): the limiter's rule
(``SlidingWindow.plan``) applied to the grants stored in Postgres (``SqlLimits``), and
concurrency slots leased there, renewed by the worker's heartbeat so that a killed
worker's slots lapse.

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

__all__ = ["WorkerLimits", "limit_window"]

_POLL = (0.01, 0.25)  # seconds between tries for a concurrency slot: first, longest


def limit_window() -> float:
    """The seconds rpm and tpm count over (``BATON_NB_LIMIT_WINDOW``, default 60)."""
    raw = os.environ.get("BATON_NB_LIMIT_WINDOW")
    if not raw:
        return WINDOW
    try:
        window = float(raw)
    except ValueError:
        window = 0.0
    if not window > 0:
        raise ConfigurationError(f"BATON_NB_LIMIT_WINDOW must be seconds > 0, got {raw!r}")
    return window


class WorkerLimits:
    """The ``SharedLimits`` of one worker process (``llm._limits.share_limits``)."""

    def __init__(self, store: SqlLimits, worker: str, slot_ttl: float) -> None:
        self.store = store
        self.worker = worker
        self.slot_ttl = slot_ttl
        self.hold = limit_window() + MARGIN

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
        delay = _POLL[0]
        while True:
            # shielded: a slot taken in the database is always handed back to be freed
            # (else this worker's heartbeat would renew a slot nobody frees)
            with anyio.CancelScope(shield=True):
                slot = await self.store.take_slot(provider, self.worker, limit, self.slot_ttl)
            if slot is not None:
                return slot
            await anyio.sleep(delay)
            delay = min(delay * 1.5, _POLL[1])

    async def free_slot(self, slot: int) -> None:
        await self.store.free_slot(slot)

    async def renew(self) -> None:
        """The heartbeat: this worker's slots stay held."""
        await self.store.renew_slots(self.worker, self.slot_ttl)

    async def close(self) -> None:
        """The worker stops: its slots go at once (its store is closed by its owner)."""
        await self.store.drop_slots(self.worker)
