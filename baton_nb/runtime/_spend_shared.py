"""A run on workers: its budgets shared by processes (DESIGN §10, §11).

In process, a call a cap refuses waits while calls of the run are in flight, and a stop
waits for them to land and be stored (they are paid: never lost) before the run is
cancelled. On workers the calls in flight are spread over processes: a process knows its
own (``InFlight``), the others' only through the budgets' rows (``reserved``). This reads
them: a refused call with none in flight here waits while other processes hold
reservations (their settlement may free enough), and a stop waits for every reservation
of the run to be settled before the run's cancel is asked (which cancels the steps on
every worker): the calls sent anywhere land and are stored first; the calls not sent are
refused (``reserve`` refuses every call of a run a budget stopped).

A process that died holding a reservation leaves it in the row until the run is resumed:
the waits end once the rows have not changed for ``stall()`` seconds (an attempt in flight
ends within its timeout, and every settlement or retry changes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio

from ..store import ExecutionStore

if TYPE_CHECKING:
    from ._spend import InFlight

__all__ = ["SharedBudgets"]

POLL = 0.2  # seconds between two reads of the rows while waiting


def stall() -> float:
    """How long rows that do not change are waited for (a dead process's reservation)."""
    from ..llm._config import default_timeout

    return default_timeout() + 60.0


class SharedBudgets:
    """The budgets' rows of one run on workers, as all its processes hold them."""

    def __init__(self, store: ExecutionStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._landing = anyio.Lock()
        self._landed = False
        self._stalled = False  # a wait gave up on rows that did not change: not waited again

    async def _read(self) -> tuple[str | None, dict[str, tuple[Decimal, Decimal]]]:
        with anyio.CancelScope(shield=True):
            rows = await self.store.get_budgets(self.run_id)
        reason = next((row.reason for row in rows if row.reason), None)
        return reason, {row.scope: (row.spent, row.reserved) for row in rows}

    async def wait(
        self, flight: InFlight, scopes: Sequence[str], *, again: bool = False
    ) -> str | bool:
        """A call refused with none of this process's holding a reservation: ``room``,
        read by one call of this process at a time (the others wait for their turn, then
        try again). ``again``: when nothing is held, ask the store once more (a call that
        settled between the refusal and the first read may have left enough)."""
        if flight.watching:
            await flight.turn()
            return True
        flight.watching = True
        try:
            return await self.room(scopes, again=again)
        finally:
            flight.watching = False
            flight.wake_one()

    async def room(self, scopes: Sequence[str], *, again: bool = False) -> str | bool:
        """After a refusal with no call of this process holding a reservation: wait while
        other processes hold some in ``scopes``. The reason of a stop another process
        declared; True once the rows changed (a call settled: try again); False when none
        is held (or nothing changed for ``stall()`` seconds): the call is refused."""
        previous: dict[str, tuple[Decimal, Decimal]] | None = None
        since = anyio.current_time()
        while True:
            reason, rows = await self._read()
            if reason is not None:
                return reason
            state = {scope: rows[scope] for scope in scopes if scope in rows}
            if not _held(state):
                return again or (previous is not None and state != previous)
            if previous is not None and state != previous:
                return True
            if previous is None:
                previous = state
            elif anyio.current_time() - since > stall():
                self._stalled = True  # the stop that follows does not wait a second stall
                return False
            await anyio.sleep(POLL)

    async def landed(self) -> None:
        """Until no process holds a reservation in the run's budgets (the calls sent
        anywhere answered and settled), or nothing changed for ``stall()`` seconds."""
        async with self._landing:
            previous: dict[str, tuple[Decimal, Decimal]] | None = None
            since = anyio.current_time()
            while not self._landed:
                _, rows = await self._read()
                stalled = rows == previous and anyio.current_time() - since > stall()
                if stalled or self._stalled or not _held(rows):
                    self._landed = True  # waited once, for every call of this process
                    break
                if rows != previous:
                    previous, since = rows, anyio.current_time()
                await anyio.sleep(POLL)


def _held(rows: dict[str, tuple[Decimal, Decimal]]) -> bool:
    """Some process holds a reservation (a negative figure, a reservation released after
    the rows were reset by a takeover, holds nothing)."""
    return any(reserved > 0 for _, reserved in rows.values())
