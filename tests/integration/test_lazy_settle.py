"""A settled step nobody waits for (no dependent starts, no callback runs, the run does not
end on it) rides with the next commit instead of a commit of its own (``GroupCommit.settle``
when nothing waits for it); whatever waits for it hurries it. Here the lazy commit's delay
(``LAZY_FLUSH``) is a minute: a run that waited for it would hit the test's timeout."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import baton_nb as bn
from baton_nb.runtime import _commit
from baton_nb.runtime._commit import GroupCommit
from baton_nb.runtime._decisions import Settled
from baton_nb.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def slow_lazy_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_commit, "LAZY_FLUSH", 60.0)


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


@pytest.mark.usefixtures("slow_lazy_commits")
async def test_a_lazy_settle_waits_for_the_next_commit_somebody_needs() -> None:
    committed: list[Settled] = []
    commit = GroupCommit("r", committed.append)
    async with await Store.open("memory://lazy-settle") as store:

        async def write() -> None:
            async with store.writer() as writer:
                await commit.run(writer)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            lazy, urgent, later = Settled(), Settled(), Settled()
            commit.settle(lazy, 10)
            await _turns()
            assert committed == []  # waits for company
            commit.settle(urgent, 0)  # nothing else to settle: the run ends on it
            with anyio.fail_after(10):
                while len(committed) < 2:
                    await anyio.lowlevel.checkpoint()
            assert committed == [lazy, urgent]  # one commit, in order
            commit.settle(later, 10)
            await _turns()
            assert committed == [lazy, urgent]
            commit.hurry(0)  # the run's end waits for it after all
            with anyio.fail_after(10):
                while len(committed) < 3:
                    await anyio.lowlevel.checkpoint()
            assert committed[-1] is later
            commit.stop()


@pytest.mark.usefixtures("slow_lazy_commits")
async def test_many_lazy_settles_commit_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``LAZY_MOST`` settled nodes the commit goes out as they come (a burst of short
    steps is committed as it goes)."""
    monkeypatch.setattr(_commit, "LAZY_MOST", 0)
    committed: list[Settled] = []
    commit = GroupCommit("r", committed.append)
    async with await Store.open("memory://lazy-most") as store:

        async def write() -> None:
            async with store.writer() as writer:
                await commit.run(writer)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            lazy = Settled()
            commit.settle(lazy, 10)
            with anyio.fail_after(10):
                while not committed:
                    await anyio.lowlevel.checkpoint()
            assert committed == [lazy]
            commit.stop()


@pytest.mark.usefixtures("slow_lazy_commits")
async def test_runs_whose_last_steps_nobody_waits_for_end_at_once(db_url: str, unique: str) -> None:
    """Leaves that settle one after the other, a map whose group no step depends on, an
    ``on_dep_discarded`` callback that ends after them: the run ends without waiting for a
    lazy commit, and every step's end is stored."""
    wf = bn.Workflow(f"lazy-ends-{unique}", db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(30))

    @wf.step(map_over="items")
    async def each(ctx: bn.Context) -> int:
        await anyio.sleep(0.001 * (ctx.item % 3))
        return int(ctx.item)

    @wf.step()
    async def quick(ctx: bn.Context) -> str:
        return "q"

    @wf.step()
    async def slow(ctx: bn.Context) -> str:
        await anyio.sleep(0.05)
        return "s"

    @wf.step(max_attempts=1)
    async def broken(ctx: bn.Context) -> None:
        raise ValueError("no")

    seen: list[str] = []

    async def noted(reason: str, ctx: bn.Context) -> None:
        await anyio.sleep(0.2)  # the other steps settle meanwhile: the callback ends last
        seen.append(reason)

    @wf.step(deps=["broken"], on_dep_discarded=noted)
    async def after(ctx: bn.Context) -> None:
        return None

    with anyio.fail_after(30):
        run = await wf.run(display=False)
    assert run.status == "failed" and run.failed_steps == ["broken", "after"]
    assert seen and run.results["each"] == list(range(30))
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.status == "failed"
    assert {name: info.state for name, info in stored.steps.items()} == {
        name: info.state for name, info in run.steps.items()
    }
    assert stored.steps["each[29]"].state == "completed" and stored.steps["slow"].has_result
