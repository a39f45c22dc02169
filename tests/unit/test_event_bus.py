"""The in-process bus: bounded, never blocking, WorkflowFinished never dropped."""

from __future__ import annotations

from datetime import datetime, timezone

import anyio
import pytest

import baton_nb as bn
from baton_nb.events import add_listener, has_subscribers, publish, subscribe

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def step_event(i: int) -> bn.StepUpdated:
    return bn.StepUpdated("r", "w", f"s{i}", "fn", "executing", i, 1, False, None, NOW)


def finished() -> bn.WorkflowFinished:
    return bn.WorkflowFinished("r", "w", "completed", [], NOW)


async def test_delivers_in_order_to_each_subscriber() -> None:
    async with subscribe("t") as one, subscribe("t", "other") as two:
        for i in range(3):
            publish(step_event(i), "t")
        assert [one.get_nowait().job_id for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
        assert [(await two.__anext__()).job_id for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert not has_subscribers("t")


async def test_an_event_on_two_topics_reaches_a_subscriber_once() -> None:
    async with subscribe("a", "b") as both:
        publish(step_event(1), "a", "b")
        assert both.get_nowait() is not None and both.get_nowait() is None


async def test_full_buffer_drops_oldest_and_tells_how_many() -> None:
    async with subscribe("t", maxsize=3) as sub:
        publish(finished(), "t")
        for i in range(10):
            publish(step_event(i), "t")
        first = sub.get_nowait()
        assert isinstance(first, bn.EventsDropped) and first.count == 8
        rest = [sub.get_nowait() for _ in range(3)]
        assert isinstance(rest[0], bn.WorkflowFinished)  # never dropped
        assert [e.job_id for e in rest[1:]] == [8, 9]  # type: ignore[union-attr]


async def test_waiting_subscriber_wakes_on_publish() -> None:
    async with subscribe("t") as sub, anyio.create_task_group() as tg:
        got: list[object] = []

        async def consume() -> None:
            got.append(await sub.__anext__())

        tg.start_soon(consume)
        await anyio.sleep(0.01)
        publish(step_event(7), "t")
    assert got and got[0].job_id == 7  # type: ignore[attr-defined]


async def test_publish_from_another_thread_wakes_subscriber() -> None:
    async with subscribe("t") as sub:
        await anyio.to_thread.run_sync(publish, step_event(3), "t")
        with anyio.fail_after(2):
            event = await sub.__anext__()
    assert event.job_id == 3  # type: ignore[union-attr]


def test_listener_that_raises_is_removed() -> None:
    calls: list[int] = []

    def bad(event: object) -> None:
        calls.append(1)
        raise RuntimeError("bug")

    remove = add_listener("t", bad)
    publish(step_event(1), "t")
    publish(step_event(2), "t")
    assert calls == [1]
    remove()  # removing twice is harmless


def test_subscribe_needs_topics() -> None:
    async def go() -> None:
        async with subscribe():
            pass

    with pytest.raises(ValueError, match="at least one topic"):
        anyio.run(go)
