"""Events of a run (seed Baton.Events): every transition, both topics, one WorkflowFinished."""

from __future__ import annotations

import logging
from datetime import datetime

import anyio
import pytest

import baton_nb as bn
from baton_nb.events import add_listener, publish, subscribe

pytestmark = pytest.mark.anyio


def _workflow(db: str, name: str) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def fetch(ctx: bn.Context) -> dict[str, int]:
        return {"n": 1}

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def flaky(ctx: bn.Context, fetch: dict[str, int]) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return fetch["n"]

    @wf.step(max_attempts=1)
    async def broken(ctx: bn.Context, fetch: dict[str, int]) -> None:
        raise RuntimeError("broken for good")

    @wf.step()
    async def after(ctx: bn.Context, broken: None) -> None:
        return None

    return wf


async def test_every_transition_on_both_topics(db_url: str, unique: str) -> None:
    wf = _workflow(db_url, f"events-{unique}")
    seen_all: list[object] = []
    seen_run: list[object] = []
    async with subscribe(bn.topic_all()) as everything:
        run = await wf.run(display=False)
        while (event := everything.get_nowait()) is not None:
            if getattr(event, "workflow_id", None) == run.id:
                seen_all.append(event)
    # A run-topic subscriber attached through a listener sees the same sequence.
    assert seen_all, "no events on workflow:all"
    steps = [e for e in seen_all if isinstance(e, bn.StepUpdated)]
    transitions = [(e.step_name, e.state, e.attempt) for e in steps]
    assert transitions[0] == ("fetch", "executing", 1)
    assert ("fetch", "completed", 1) in transitions
    assert [t for t in transitions if t[0] == "flaky"] == [
        ("flaky", "executing", 1),
        ("flaky", "retryable", 1),
        ("flaky", "executing", 2),
        ("flaky", "completed", 2),
    ]
    assert [t[1] for t in transitions if t[0] == "broken"] == ["executing", "discarded"]
    assert [t[1] for t in transitions if t[0] == "after"] == ["cancelled"]
    first = steps[0]
    assert first.workflow_label == wf.name and first.worker.endswith("fetch")
    assert isinstance(first.job_id, int) and isinstance(first.timestamp, datetime)
    done = next(e for e in steps if e.step_name == "fetch" and e.state == "completed")
    assert done.has_result is True and done.error is None
    failed = next(e for e in steps if e.state == "discarded")
    assert failed.error == "RuntimeError: broken for good"
    finished = [e for e in seen_all if isinstance(e, bn.WorkflowFinished)]
    assert len(finished) == 1
    assert finished[0].outcome == "failed"
    assert sorted(finished[0].failed_steps) == ["after", "broken"]
    assert seen_all[-1] is finished[0]
    del seen_run


async def test_steps_settled_as_the_run_is_cancelled_are_published(
    db_url: str, unique: str
) -> None:
    """A step that fails just as the run is cancelled (its settling not committed by the
    writer yet): its terminal state and its dependent's are stored by the run's end and
    published too, before WorkflowFinished (they were stored, never published)."""
    from baton_nb.runtime import active_run

    wf = bn.Workflow(f"settled-on-cancel-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def fails(ctx: bn.Context) -> None:
        live = active_run(ctx.run_id)
        assert live is not None
        live.cancel()
        raise RuntimeError("fails as the run is cancelled")

    @wf.step()
    async def after(ctx: bn.Context, fails: None) -> None:
        return None

    async with subscribe(bn.topic_all()) as stream:
        run = await wf.run(display=False)
        seen = []
        while (event := stream.get_nowait()) is not None:
            if getattr(event, "workflow_id", None) == run.id:
                seen.append(event)
    stored = await bn.Run.load(run.id, db=db_url)
    assert {n: s.state for n, s in stored.steps.items()} == {
        "fails": "discarded",
        "after": "cancelled",
    }
    published = [(e.step_name, e.state) for e in seen if isinstance(e, bn.StepUpdated)]
    assert published == [
        ("fails", "executing"),
        ("fails", "discarded"),
        ("after", "cancelled"),
    ]
    assert isinstance(seen[-1], bn.WorkflowFinished) and seen[-1].outcome == "cancelled"


async def test_run_topic_carries_the_same_events(sqlite_url: str) -> None:
    wf = bn.Workflow("topics", db=sqlite_url)
    wf.add("a", _const)
    on_all: list[object] = []
    on_run: list[object] = []
    remove_all = add_listener(bn.topic_all(), on_all.append)
    try:
        # The run id is only known once the run starts: listen on all, then filter.
        run = await wf.run(display=False)
    finally:
        remove_all()
    ids = {getattr(e, "workflow_id", None) for e in on_all}
    assert run.id in ids
    remove_run = add_listener(bn.topic_workflow(run.id), on_run.append)
    remove_run()
    assert bn.topic_workflow(run.id) == f"workflow:{run.id}"
    assert bn.topic_all() == "workflow:all"


async def test_one_workflow_finished_per_execution(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"finished-once-{unique}", db=db_url)
    flag = {"fail": True}

    async def step(ctx: bn.Context) -> str:
        if flag["fail"]:
            raise RuntimeError("x")
        return "ok"

    wf.add("a", step, max_attempts=1)
    finished: list[bn.WorkflowFinished] = []
    remove = add_listener(
        bn.topic_all(), lambda e: finished.append(e) if isinstance(e, bn.WorkflowFinished) else None
    )
    try:
        run = await wf.run(display=False)
        flag["fail"] = False
        await wf.run(run_id=run.id, display=False)
        await wf.run(run_id=run.id, display=False)  # completed: nothing executes, no event
    finally:
        remove()
    mine = [e for e in finished if e.workflow_id == run.id]
    assert [e.outcome for e in mine] == ["failed", "completed"]


async def test_slow_subscriber_loses_oldest_steps_but_never_finished(
    db_url: str, unique: str
) -> None:
    wf = bn.Workflow(f"slow-sub-{unique}", db=db_url)
    for i in range(50):
        wf.add(f"s{i}", _const)
    async with subscribe(bn.topic_all(), maxsize=10) as stream:
        run = await wf.run(display=False)  # nobody reads while it runs
        events = []
        while (event := stream.get_nowait()) is not None:
            events.append(event)
    dropped = [e for e in events if isinstance(e, bn.EventsDropped)]
    assert dropped and dropped[0].count > 0
    finished = [e for e in events if isinstance(e, bn.WorkflowFinished)]
    assert len(finished) == 1 and finished[0].workflow_id == run.id
    assert run.status == "completed"


async def test_raising_listener_is_dropped_and_run_goes_on(
    db_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def bad(event: object) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("listener bug")

    remove = add_listener(bn.topic_all(), bad)
    wf = bn.Workflow(f"bad-listener-{unique}", db=db_url)
    wf.add("a", _const)
    wf.add("b", _const, deps=["a"])
    with caplog.at_level(logging.ERROR, logger="baton_nb.events"):
        run = await wf.run(display=False)
    remove()
    assert run.status == "completed"
    assert calls == 1
    assert "event listener" in caplog.text


async def test_subscriber_in_another_task_does_not_block(sqlite_url: str) -> None:
    wf = bn.Workflow("blocked-sub", db=sqlite_url)
    for i in range(20):
        wf.add(f"s{i}", _const)
    received: list[object] = []

    async def sleepy_consumer(stream: bn.events.Subscription) -> None:
        async for event in stream:
            received.append(event)
            await anyio.sleep(0.2)  # far slower than the run

    async with subscribe(bn.topic_all(), maxsize=5) as stream, anyio.create_task_group() as tg:
        tg.start_soon(sleepy_consumer, stream)
        with anyio.fail_after(5):
            run = await wf.run(display=False)
        tg.cancel_scope.cancel()
    assert run.status == "completed"


async def test_publish_without_subscribers_is_a_no_op() -> None:
    publish(bn.EventsDropped("workflow:nobody", 1), "workflow:nobody")


async def _const(ctx: bn.Context) -> str:
    return "x"


async def test_followers_of_a_live_run_are_told_its_changes_without_events(
    db_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``Run.follow`` (the widget's and the text line's way): each changed step's name, then
    the end once stored; no event is built for a follower; one that raises is dropped and
    logged, and the run goes on."""
    from baton_nb._run import live_run

    wf = bn.Workflow(f"follow-{unique}", db=db_url)
    changed: list[str] = []
    ended: list[str] = []
    built: list[bool] = []

    def bad(name: str) -> None:
        raise RuntimeError("a follower's bug")

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        live = live_run(ctx.run_id)
        assert live is not None
        live.follow(changed.append, lambda: ended.append(live.status))
        live.follow(bad, lambda: None)
        return 1

    @wf.step(max_attempts=1)
    async def second(ctx: bn.Context, first: int) -> int:
        built.append(bn.events.has_subscribers(bn.topic_workflow(ctx.run_id), bn.topic_all()))
        return first + 1

    with caplog.at_level(logging.ERROR, logger="baton_nb.events"):
        run = await wf.run(display=False)
    assert run.status == "completed" and ended == ["completed"]
    assert changed[0] == "first" and "second" in changed  # first's end, second's start and end
    assert built == [False]  # nobody listens on the bus: no event was built
    assert len(run.followers) == 1  # the one that raised was removed
    assert "run follower" in caplog.text and "a follower's bug" in caplog.text
