"""A run on workers: the budgets' rows read for the other processes' calls in flight
(``runtime/_spend_shared.py``), on the memory store, with a short ``stall``."""

from __future__ import annotations

import uuid
from decimal import Decimal

import anyio
import pytest

from baton_nb.runtime import _spend_shared
from baton_nb.runtime._spend_shared import SharedBudgets
from baton_nb.store import RUN_SCOPE, Store

pytestmark = pytest.mark.anyio


async def _shared(monkeypatch: pytest.MonkeyPatch) -> SharedBudgets:
    monkeypatch.setattr(_spend_shared, "stall", lambda: 0.5)
    monkeypatch.setattr(_spend_shared, "POLL", 0.02)
    store = await Store.open(f"memory://{uuid.uuid4().hex}")
    await store.open_budgets("r", {RUN_SCOPE: Decimal(1)}, {})
    return SharedBudgets(store, "r")


async def test_room_waits_for_other_processes_and_says_what_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = await _shared(monkeypatch)
    store = shared.store
    assert await shared.room([RUN_SCOPE]) is False  # none held anywhere: refused
    assert await store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None  # another process

    async def settle() -> None:
        await anyio.sleep(0.1)
        await store.settle("r", [RUN_SCOPE], Decimal("0.5"), Decimal("0.4"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(settle)
        with anyio.fail_after(5):
            assert await shared.room([RUN_SCOPE]) is True  # it settled: try again
    assert await store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None
    await store.budget_reached("r", RUN_SCOPE, "budget reached: elsewhere")
    assert await shared.room([RUN_SCOPE]) == "budget reached: elsewhere"


async def test_a_dead_process_reservation_is_waited_for_stall_seconds_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = await _shared(monkeypatch)
    assert await shared.store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None  # never settled
    with anyio.fail_after(5):
        assert await shared.room([RUN_SCOPE]) is False
        await shared.landed()
    with anyio.fail_after(0.2):
        await shared.landed()  # waited once per process


async def test_landed_returns_once_every_reservation_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = await _shared(monkeypatch)
    monkeypatch.setattr(_spend_shared, "stall", lambda: 60.0)
    store = shared.store
    assert await store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None
    ended: list[float] = []

    async def land() -> None:
        await shared.landed()
        ended.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(land)
        await anyio.sleep(0.2)
        assert not ended  # still in flight in another process
        settled = anyio.current_time()
        await store.settle("r", [RUN_SCOPE], Decimal("0.5"), Decimal("0.3"))
    assert ended and ended[0] >= settled


async def test_a_stop_after_a_stalled_wait_does_not_wait_a_second_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead process's reservation: the refused call's wait gave up after ``stall()``;
    the stop that follows (``landed``) does not wait another one (it did: twice the
    default timeout, 22 minutes, with the run's lease held)."""
    shared = await _shared(monkeypatch)
    monkeypatch.setattr(_spend_shared, "stall", lambda: 0.3)
    assert await shared.store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None  # never settled
    assert await shared.room([RUN_SCOPE]) is False
    monkeypatch.setattr(_spend_shared, "stall", lambda: 60.0)  # a second stall would hang
    with anyio.fail_after(5):
        await shared.landed()


async def test_nothing_held_asks_the_store_again_once_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call that settled between a refusal and the first read: nothing is held any more,
    but the room it freed may be enough: ``again`` says to ask the store once more."""
    shared = await _shared(monkeypatch)
    assert await shared.room([RUN_SCOPE], again=True) is True
    assert await shared.room([RUN_SCOPE]) is False


async def test_a_negative_reservation_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows reset by a takeover while a worker's call was in flight: its settlement leaves
    ``reserved`` below 0, which holds nothing (a stop waited a whole stall for it)."""
    shared = await _shared(monkeypatch)
    store = shared.store
    monkeypatch.setattr(_spend_shared, "stall", lambda: 60.0)
    assert await store.reserve("r", [RUN_SCOPE], Decimal("0.5")) is None
    await store.open_budgets("r", {RUN_SCOPE: Decimal(1)}, {})  # what a takeover does
    await store.settle("r", [RUN_SCOPE], Decimal("0.5"), Decimal("0.4"))
    (row,) = await store.get_budgets("r")
    assert row.reserved < 0
    with anyio.fail_after(5):
        assert await shared.room([RUN_SCOPE]) is False
        await shared.landed()
