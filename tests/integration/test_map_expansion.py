"""A map's children stored and started a chunk at a time (``runtime/_expand``): killed
mid-expansion and resumed, each item gets exactly one child and a completed child never
runs again; the group is judged on all its items, whatever chunk its children are in."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
import baton_nb.runtime._driver as driver_module
from baton_nb.runtime._decisions import GroupOpened
from baton_nb.runtime._groups import MapPlan
from baton_nb.runtime._node import Node
from baton_nb.runtime._scheduler import Scheduler
from baton_nb.store import Store
from tests.integration._process import kill9, load_module, wait_for_file, workflow_process

pytestmark = pytest.mark.anyio

ITEMS = 50
CHUNK = 10  # the subprocess stores 10 children per chunk

MAP_MODULE = textwrap.dedent(
    """
    import os, sys
    from contextlib import asynccontextmanager
    from pathlib import Path
    import anyio
    import baton_nb as bn

    MARKS = Path(os.environ["MARKS"])
    ITEMS = int(os.environ.get("ITEMS", "50"))

    def build(db):
        wf = bn.Workflow("chunky", db=db)

        @wf.step()
        async def src(ctx):
            return list(range(ITEMS))

        @wf.step(map_over="src")
        async def each(ctx):
            with open(MARKS / "ran", "a") as fh:
                fh.write(f"{ctx.item}\\n")
            return ctx.item * 2

        @wf.step()
        async def total(ctx, each):
            return sum(each)

        return wf

    def stall_at_chunk(number, where):
        # The expansion waits for ever before (or after) storing chunk `number`, with the
        # writer free: the children of the chunks before it complete and are committed.
        from baton_nb.runtime import _commit, _driver

        _driver.CHUNKS = (10, 10)
        held = _commit.GroupCommit.held
        entered = 0

        @asynccontextmanager
        async def stalling(self):
            nonlocal entered
            entered += 1
            if entered == number and where == "before":
                (MARKS / "stalled").write_text("1")
                await anyio.sleep(120)
            async with held(self):
                yield
            if entered == number and where == "after":
                (MARKS / "stalled").write_text("1")
                await anyio.sleep(120)

        _commit.GroupCommit.held = stalling

    if __name__ == "__main__":
        stall_at_chunk(3, sys.argv[3])
        run = anyio.run(lambda: build(sys.argv[1]).run(run_id=sys.argv[2], display=False))
        print(run.status)
    """
)


async def _children(store: Store, run_id: str) -> dict[str, str]:
    return {n.step: n.state for n in await store.get_nodes(run_id) if n.parent == "each"}


@pytest.mark.slow  # a real subprocess
@pytest.mark.parametrize("where", ["before", "after"])
async def test_killed_mid_expansion_then_resumed_each_item_runs_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str, where: str
) -> None:
    """kill -9 while a map of 50 items is stored 10 at a time: two chunks stored and their
    children completed, the third not stored yet (``before``) or stored but not started
    (``after``). The resume stores the missing children once and runs only those that had
    not completed."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "chunky.py"
    script.write_text(MAP_MODULE)
    run_id = f"chunky-{unique}"
    env = {**os.environ, "MARKS": str(marks), "ITEMS": str(ITEMS)}
    async with workflow_process(script, db_url, run_id, where, env=env) as proc:
        with anyio.fail_after(30):
            await wait_for_file(proc, marks / "stalled")
            async with await Store.open(db_url) as store:  # the first two chunks committed
                while Counter((await _children(store, run_id)).values())["completed"] < 20:
                    await anyio.sleep(0.02)
        kill9(proc)

    async with await Store.open(db_url) as store:
        children = await _children(store, run_id)
    stored = 30 if where == "after" else 20
    assert len(children) == stored  # whole chunks: each one its own transaction
    assert Counter(children.values()) == {
        "completed": 20,
        **({"pending": 10} if stored == 30 else {}),
    }
    ran_before = Counter((marks / "ran").read_text().split())

    monkeypatch.setenv("MARKS", str(marks))
    monkeypatch.setenv("ITEMS", str(ITEMS))
    wf = load_module(script, "chunky_workflow").build(db_url)
    run = await wf.run(run_id=run_id, display=False)  # the dead holder's lease taken over
    assert run.status == "completed", run.failed_steps
    assert run.results["each"] == [i * 2 for i in range(ITEMS)]
    assert run.results["total"] == sum(i * 2 for i in range(ITEMS))
    ran = Counter((marks / "ran").read_text().split())
    assert set(ran) == {str(i) for i in range(ITEMS)}
    # a child completed before the kill never ran again; one that had not, ran once more
    for item in range(ITEMS):
        assert ran[str(item)] == (1 if item < 20 else ran_before[str(item)] + 1), item
    async with await Store.open(db_url) as store:
        nodes = await store.get_nodes(run_id)
    names = [n.step for n in nodes if n.parent == "each"]
    assert sorted(names) == sorted(f"each[{i}]" for i in range(ITEMS))  # one row each
    loaded = await bn.Run.load(run_id, db=db_url)
    assert loaded.steps["each"].children == [f"each[{i}]" for i in range(ITEMS)]
    assert loaded.results["each"] == run.results["each"]


def _map_workflow(db: str, name: str, items: int, fail: set[int], **options: object) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="src", max_attempts=1, **options)  # type: ignore[arg-type]
    async def each(ctx: bn.Context) -> int:
        if ctx.item in fail:
            raise RuntimeError(f"item {ctx.item} fails")
        await anyio.sleep(0.05 if ctx.item > 2 else 0)
        return int(ctx.item)

    return wf


async def _stored_children(db: str, run_id: str) -> list[tuple[str, str]]:
    async with await Store.open(db) as store:
        nodes = await store.get_nodes(run_id)
    return sorted((n.step, n.state) for n in nodes if n.parent == "each")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Chunks of 3, 6, 6...; the group's state and children as each chunk is adopted."""
    monkeypatch.setattr(driver_module, "CHUNKS", (3, 6))
    seen: list[tuple[str, int]] = []
    adopt = Scheduler.adopt

    def spy(self: Scheduler, group: Node, plan: MapPlan, chunk: Sequence[Node]) -> GroupOpened:
        seen.append((group.state.value, len(group.children)))
        return adopt(self, group, plan, chunk)

    monkeypatch.setattr(Scheduler, "adopt", spy)
    return seen


async def test_a_map_in_chunks_completes_with_every_item_in_order(
    db_url: str, unique: str, small_chunks: list[tuple[str, int]]
) -> None:
    wf = _map_workflow(db_url, f"chunks-{unique}", 40, set())
    run = await wf.run(display=False)
    assert run.status == "completed"
    # 3 + 6 * 6 + 1: the first children ran meanwhile, the group waited for the last chunk
    assert small_chunks == [("executing", n) for n in (0, 3, 9, 15, 21, 27, 33, 39)]
    assert run.results["each"] == list(range(40))
    assert run.steps["each"].children == [f"each[{i}]" for i in range(40)]
    stored = await _stored_children(db_url, run.id)
    assert len(stored) == 40 and {state for _, state in stored} == {"completed"}


async def test_fail_fast_on_a_child_of_the_first_chunk(
    db_url: str, unique: str, small_chunks: list[tuple[str, int]]
) -> None:
    """A child of the first chunk (3 items) fails while later chunks are being stored: the
    group fails at once, and the children stored after are stored cancelled; every item
    still has its one row."""
    wf = _map_workflow(db_url, f"ff-{unique}", 40, {0}, fail_fast=True)
    run = await wf.run(display=False)
    assert run.status == "failed"
    assert run.steps["each"].state == "discarded"
    assert (run.steps["each"].error or "").startswith("1 of 40 failed: each[0] (fail_fast:")
    stored = dict(await _stored_children(db_url, run.id))
    assert len(stored) == 40
    assert stored["each[0]"] == "discarded"
    first = {"each[0]", "each[1]", "each[2]"}
    assert small_chunks[0] == ("executing", 0)
    assert small_chunks[-1] == ("discarded", 39)  # failed before its last chunk was stored
    # the other two of the first chunk may have run meanwhile; none after them did
    assert {state for name, state in stored.items() if name not in first} == {"cancelled"}
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.counts() == run.counts()


async def test_quorum_met_in_the_first_chunk(
    db_url: str, unique: str, small_chunks: list[tuple[str, int]]
) -> None:
    wf = _map_workflow(db_url, f"quorum-{unique}", 40, set(), quorum=2)
    run = await wf.run(display=False)
    assert run.status == "completed"
    assert len(run.results["each"]) == 2 and set(run.results["each"]) <= {0, 1, 2}
    stored = dict(await _stored_children(db_url, run.id))
    assert len(stored) == 40  # each item has its row, the unneeded ones cancelled
    assert Counter(stored.values())["cancelled"] >= 30
    assert small_chunks[-1] == ("completed", 39)  # met before its last chunk was stored
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.counts() == run.counts()
    assert loaded.steps["each"].children == [f"each[{i}]" for i in range(40)]


@pytest.mark.usefixtures("small_chunks")
async def test_without_fail_fast_every_chunk_runs_after_a_failure(db_url: str, unique: str) -> None:
    wf = _map_workflow(db_url, f"nff-{unique}", 40, {1})
    run = await wf.run(display=False)
    assert run.status == "failed" and run.steps["each"].state == "discarded"
    stored = dict(await _stored_children(db_url, run.id))
    assert Counter(stored.values()) == {"completed": 39, "discarded": 1}
    resumed = await wf.run(run_id=run.id, display=False)  # item 1 still fails
    assert Counter(dict(await _stored_children(db_url, run.id)).values()) == Counter(
        stored.values()
    )
    assert resumed.steps["each"].state == "discarded"
