"""The store side of ``bn.Limit`` held across workers (``SqlLimits``, Postgres): grants
planned by the limiter's own rule under a per-provider lock, slots that lapse unless
renewed. Real workers are in test_workers.py (test_limits_hold_across_three_workers)."""

from __future__ import annotations

import uuid

import anyio
import pytest

from baton_nb import ConfigurationError
from baton_nb.llm._limits import SlidingWindow
from baton_nb.runtime._shared_limits import WorkerLimits, slot_poll
from baton_nb.store import SLOTS_CHANNEL, SqlLimits, open_worker_store
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def pg() -> str:
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    return POSTGRES_URL


def test_plan_is_the_sliding_window_rule() -> None:
    window = SlidingWindow(2, hold=10.0)
    grants = [(g.at, g.amount) for g in (window.reserve(1, 0.0), window.reserve(1, 1.0))]
    assert SlidingWindow.plan(2, 10.0, grants, 2.0, 1) == (10.0, 1.0)  # the oldest's end
    assert SlidingWindow.plan(2, 10.0, grants[1:], 2.0, 1) == (2.0, 1.0)
    assert SlidingWindow.plan(2, 10.0, [], 2.0, 5) == (2.0, 2.0)  # capped at the limit


async def test_grants_are_shared_and_waits_follow_the_window(pg: str) -> None:
    provider = f"p-{uuid.uuid4().hex[:8]}"
    hold = 3600.0

    def plan(amount: float):  # type: ignore[no-untyped-def]
        return lambda grants, now: SlidingWindow.plan(2, hold, grants, now, amount)

    async with await SqlLimits.open(pg) as one, await SqlLimits.open(pg) as two:
        _, wait1 = await one.reserve(provider, "rpm", hold, plan(1))
        _, wait2 = await two.reserve(provider, "rpm", hold, plan(1))
        third, wait3 = await one.reserve(provider, "rpm", hold, plan(1))
        assert wait1 == wait2 == 0.0
        assert wait3 > hold - 60  # the third waits until the first leaves the window
        await two.correct(third, 0)  # cancelled: counts nothing


async def test_slots_are_shared_and_lapse_unless_renewed(pg: str) -> None:
    provider = f"p-{uuid.uuid4().hex[:8]}"
    async with await SqlLimits.open(pg) as limits:
        first = await limits.take_slot(provider, "w1", 2, 3600)
        second = await limits.take_slot(provider, "w2", 2, 3600)
        assert first is not None and second is not None
        assert await limits.take_slot(provider, "w3", 2, 3600) is None  # 2 held, by anyone
        await limits.free_slot(first)
        assert await limits.take_slot(provider, "w3", 2, 3600) is not None
        await limits.drop_slots("w2")  # a stopping worker lets go of its slots
        assert await limits.take_slot(provider, "w4", 2, 3600) is not None
        assert await limits.take_slot(provider, "w5", 2, 3600) is None
        # a killed worker's slots lapse: w3's expired at once (ttl 0 on renewal)
        await limits.renew_slots("w3", 0)
        assert await limits.take_slot(provider, "w5", 2, 3600) is not None


async def test_a_freed_or_lapsed_slot_notifies_its_provider(pg: str) -> None:
    """Letting a slot go (or a killed worker's slot lapsing) NOTIFYs ``SLOTS_CHANNEL`` with
    the provider, so waiters on other workers try again at once instead of polling."""
    provider = f"p-{uuid.uuid4().hex[:8]}"
    heard: list[str] = []
    got = anyio.Event()

    def on_notify(channel: str, payload: str) -> None:
        if payload == provider:
            heard.append(channel)
            got.set()

    async with (
        await SqlLimits.open(pg) as limits,
        await open_worker_store(pg) as workers,
        workers.listen([SLOTS_CHANNEL], on_notify),
    ):
        slot = await limits.take_slot(provider, "w1", 1, 3600)
        assert slot is not None
        await limits.free_slot(slot)
        with anyio.fail_after(10):
            await got.wait()
        got = anyio.Event()
        assert await limits.take_slot(provider, "w2", 1, 0.001) is not None  # lapses at once
        await anyio.sleep(0.01)
        await limits.renew_slots("w3", 3600)  # any worker's heartbeat drops lapsed slots
        with anyio.fail_after(10):
            await got.wait()
    assert heard == [SLOTS_CHANNEL, SLOTS_CHANNEL]


class _OneSlot:
    """A ``SqlLimits`` stand-in: every slot held until ``free``."""

    def __init__(self) -> None:
        self.free = False
        self.tries = 0

    async def take_slot(self, provider: str, worker: str, limit: int, ttl: float) -> int | None:
        self.tries += 1
        return 7 if self.free else None


async def test_a_slot_waiter_is_woken_by_a_release_not_by_its_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATON_NB_SLOT_POLL", "3600")  # the safety net would never come
    store = _OneSlot()
    limits = WorkerLimits(store, "w1", 60.0)  # type: ignore[arg-type]
    got: list[int] = []

    async def waiter() -> None:
        got.append(await limits.take_slot("openai", 1))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            while store.tries == 0:
                await anyio.sleep(0)
            limits.released("anthropic")  # another provider's slot: no retry
            await anyio.sleep(0.01)
            assert store.tries == 1
            store.free = True
            limits.released("openai")
    assert got == [7] and store.tries == 2


def test_slot_poll_must_be_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_NB_SLOT_POLL", "soon")
    with pytest.raises(ConfigurationError, match="BATON_NB_SLOT_POLL"):
        slot_poll()
