"""A driver whose clock says its lease is held, while the database says another owner
took the run over: its next commit is refused in the database (``WriteBatch.owner``), it
commits nothing more and stops, saying the run was taken over by that owner (not
cancelled); the run then completes under the new owner, every paid call made once at the
fake provider server (docs/workers.md "Failures")."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb._states import RunStatus, State
from baton_nb.runtime._coordinator import _fence
from baton_nb.runtime._lease import Lease, take_lease
from baton_nb.runtime._start import _prepare
from baton_nb.store import Store
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o-mini"


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'guard.db'}"
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    return POSTGRES_URL


async def test_a_driver_whose_clock_says_held_commits_nothing_once_the_run_was_taken(
    fake_providers: FakeProviderServer, url: str, unique: str
) -> None:
    healthy = False
    entered, gate = anyio.Event(), anyio.Event()
    ran: list[str] = []

    async def ask(ctx: bn.Context) -> str:
        if not healthy:
            raise RuntimeError("down")
        answer = await ctx.complete(model=MODEL, prompt="hello")  # paid, its answer stored
        entered.set()
        await gate.wait()  # meanwhile: the run taken over in the database
        ran.append("ask")
        return answer.text

    async def after(ctx: bn.Context, ask: str) -> str:
        ran.append("after")
        return ask.upper()

    wf = bn.Workflow(f"guard-{unique}", db=url)
    wf.add("ask", ask, max_attempts=1)
    wf.add("after", after)
    failed = await wf.run(display=False)
    assert failed.status == "failed" and fake_providers.request_count == 0
    healthy = True
    graph = wf.graph()
    async with await Store.open(url) as store:
        # A coordinator's driver (``coordinate``) whose clock never lets its lease lapse:
        # the clock fence says "held" all along.
        with Lease(600, clock=lambda: 0.0) as lease:
            await take_lease(store, failed.id, lease, None)
            driver = await _prepare(store, graph, failed.id, lease, 4, dict(graph.models), None)
            driver.commit.fence = partial(_fence, lease)
            outcome: list[BaseException] = []
            events: list[object] = []
            remove = bn.events.add_listener(bn.topic_workflow(failed.id), events.append)

            async def execute() -> None:
                try:
                    await driver.execute()
                except bn.RunLocked as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(execute)
                await entered.wait()
                # Another worker took the run over (its lease lapsed for the database);
                # lapsed again at once, for the resume below to take it.
                assert await store.acquire_lease(failed.id, "other", -1, steal_from=lease.owner)
                assert lease.held()  # by the clock
                gate.set()
            remove()
        [error] = outcome
        assert isinstance(error, bn.RunLocked) and error.owner == "other", outcome
        assert f"run {failed.id} of workflow {wf.name!r} is being continued by other" in str(error)
        assert lease.lost
        # What this execution tells: taken over by the new owner, no step cancelled (its
        # step's end was refused; its dependent never started here).
        live = driver.run
        assert (live.status, live.taken_over_by) == ("taken_over", "other")
        assert live.steps["after"].state == "pending"
        assert "cancelled" not in {s.state for s in live.steps.values()}
        ends = [e for e in events if isinstance(e, bn.WorkflowFinished)]
        assert [(e.outcome, e.taken_over_by) for e in ends] == [("taken_over", "other")]
        assert not [e for e in events if isinstance(e, bn.StepUpdated) and e.state == "cancelled"]
        nodes = {n.step: n for n in await store.get_nodes(failed.id)}
        row = await store.get_run(failed.id)
        stats = await store.get_stats([failed.id])
    # Nothing of the stopped execution after the takeover: its step's end, its dependent,
    # the run's end; the paid call's answer and stats, committed before, stay.
    assert ran == ["ask"]
    assert nodes["ask"].state is State.EXECUTING and nodes["after"].state is State.PENDING
    assert row is not None and row.lease_owner == "other" and row.status is RunStatus.RUNNING
    assert [(s.step, s.replayed) for s in stats] == [("ask", False)]
    assert fake_providers.request_count == 1

    done = await wf.run(run_id=failed.id, display=False)  # the new owner
    assert done.status == "completed" and done.results["after"] == done.results["ask"].upper()
    assert fake_providers.request_count == 1  # the paid call replayed, not sent again
    assert ran == ["ask", "ask", "after"]


async def test_a_coordinator_whose_clock_says_its_lease_lapsed_leaves_the_run(
    url: str, unique: str
) -> None:
    """A coordinator's clock says its lease lapsed (it stalled past it) before anybody
    took the run over: it commits nothing more and stops, its live Run ``taken_over`` by
    nobody known yet; its ``RunLocked`` says the run is left for another process to take
    over. The run's row is untouched: still running, the lease still naming it (lapsed
    for the next one to take)."""
    healthy = False
    entered, gate = anyio.Event(), anyio.Event()

    async def step(ctx: bn.Context) -> str:
        if not healthy:
            raise RuntimeError("down")
        entered.set()
        await gate.wait()
        return "done"

    wf = bn.Workflow(f"lapsed-{unique}", db=url)
    wf.add("a", step, max_attempts=1)
    failed = await wf.run(display=False)
    healthy = True
    graph = wf.graph()
    now = [0.0]
    async with await Store.open(url) as store:
        with Lease(600, clock=lambda: now[0]) as lease:
            await take_lease(store, failed.id, lease, None)
            driver = await _prepare(store, graph, failed.id, lease, 4, dict(graph.models), None)
            driver.commit.fence = partial(_fence, lease)
            outcome: list[BaseException] = []

            async def execute() -> None:
                try:
                    await driver.execute()
                except bn.RunLocked as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(execute)
                await entered.wait()
                now[0] = 601.0  # the lease's time to live passed, by its clock
                gate.set()
        row = await store.get_run(failed.id)
        nodes = {n.step: n.state for n in await store.get_nodes(failed.id)}
    [error] = outcome
    assert isinstance(error, bn.RunLocked) and error.owner is None
    assert "is left for another process to take over: its lease lapsed here" in str(error)
    assert f"bn.watch({failed.id!r}" in str(error)
    live = driver.run
    assert (live.status, live.taken_over_by, repr(live).count("taken over")) == (
        "taken_over",
        None,
        1,
    )
    assert row is not None and row.status is RunStatus.RUNNING and row.lease_owner == lease.owner
    assert nodes["a"] != "completed"
