"""Review of the streamed map expansion: cancel mid-expansion then resume, maps over maps,
an empty map, maps of exactly a chunk's size, progress totals from the first chunk on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
import baton_nb.runtime._driver as driver_module
from baton_nb.runtime import active_run
from baton_nb.store import Store
from baton_nb.widget._state import node_state
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "CHUNKS", (3, 6))


async def _children(db: str, run_id: str, group: str) -> dict[str, str]:
    async with await Store.open(db) as store:
        nodes = await store.get_nodes(run_id)
    return {n.step: n.state for n in nodes if n.parent == group}


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("items", [0, 3, 9, 10])
async def test_a_map_of_chunk_bounds_sizes(db_url: str, unique: str, items: int) -> None:
    wf = bn.Workflow(f"sizes-{unique}", db=db_url)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="src")
    async def each(ctx: bn.Context) -> int:
        return int(ctx.item) + 1

    @wf.step()
    async def total(ctx: bn.Context, each: list[int]) -> int:
        return sum(each)

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert run.results["each"] == [i + 1 for i in range(items)]
    assert run.results["total"] == sum(range(1, items + 1))
    stored = await _children(db_url, run.id, "each")
    assert len(stored) == items
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.counts() == run.counts()


@pytest.mark.usefixtures("small_chunks")
async def test_a_map_over_a_maps_output(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"mapmap-{unique}", db=db_url)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(20))

    @wf.step(map_over="src")
    async def first(ctx: bn.Context) -> int:
        await anyio.sleep(0.001 * (20 - int(ctx.item)))
        return int(ctx.item) * 10

    @wf.step(map_over="first")
    async def second(ctx: bn.Context) -> int:
        return int(ctx.item) + 1

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert run.results["second"] == [i * 10 + 1 for i in range(20)]


async def test_cancelled_mid_expansion_then_resumed(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(driver_module, "CHUNKS", (3, 3))
    items = 30
    run_id = f"cme-{unique}"
    ran: list[int] = []
    wf = bn.Workflow(f"cme-{unique}", db=db_url)
    gate = {"cancel": True}

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="src")
    async def each(ctx: bn.Context) -> int:
        ran.append(int(ctx.item))
        if gate["cancel"] and ctx.item == 4:
            live = active_run(run_id)
            assert live is not None
            live.cancel()
            await anyio.sleep(30)
        return int(ctx.item)

    @wf.step()
    async def total(ctx: bn.Context, each: list[int]) -> int:
        return sum(each)

    run = await wf.run(run_id=run_id, display=False)
    assert run.status == "cancelled"
    stored = await _children(db_url, run_id, "each")
    assert 0 < len(stored) < items
    completed = {n for n, s in stored.items() if s == "completed"}
    cancelled_load = await bn.Run.load(run_id, db=db_url)
    assert cancelled_load.counts() == run.counts()  # the unstored items not counted after
    gate["cancel"] = False
    before = list(ran)
    resumed = await wf.run(run_id=run_id, display=False)
    assert resumed.status == "completed"
    assert resumed.results["each"] == list(range(items))
    assert resumed.results["total"] == sum(range(items))
    again = Counter(ran[len(before) :])
    assert not {f"each[{i}]" for i in again} & completed
    assert all(v == 1 for v in again.values())
    stored = await _children(db_url, run_id, "each")
    assert len(stored) == items and set(stored.values()) == {"completed"}
    loaded = await bn.Run.load(run_id, db=db_url)
    assert loaded.steps["each"].children == [f"each[{i}]" for i in range(items)]
    assert loaded.counts() == resumed.counts()


async def test_progress_total_is_the_maps_size_from_its_first_chunk(
    unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The widget / progress bar's total: every item of the map counted as soon as the
    first children appear, not the stored ones so far (a total that grows chunk by chunk)."""
    monkeypatch.setattr(driver_module, "CHUNKS", (3, 6))
    db = f"sqlite:///{tmp_path / 'p.db'}"
    run_id = f"prog-{unique}"
    wf = bn.Workflow(f"prog-{unique}", db=db)
    totals: list[int] = []
    widget_totals: list[int] = []

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(30))

    @wf.step(map_over="src")
    async def each(ctx: bn.Context) -> int:
        live = active_run(run_id)
        assert live is not None
        totals.append(live.counts().total)
        group = node_state(live.steps["each"])  # the widget's count (dag.js: refresh)
        widget_totals.append(len(live.steps) - 2 + group.get("x", 0))
        await anyio.sleep(0.01)
        return int(ctx.item)

    run = await wf.run(run_id=run_id, display=False)
    assert run.status == "completed"
    assert set(totals) == {31}, totals
    assert set(widget_totals) == {30}, widget_totals  # the children, stored or not yet
    assert "x" not in node_state(run.steps["each"])
    assert run.counts().total == 31


@pytest.mark.parametrize("items", [30, 3000])
async def test_a_resumed_batched_map_whose_open_children_are_in_its_first_chunk(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    items: int,
) -> None:
    """A batched map's round is sent once every open child is parked. Resumed, its first
    chunk's children run again (they failed) while the later chunks' children are
    completed: the round must go once the last chunk is taken, whether the children
    parked before or after."""
    monkeypatch.setattr(driver_module, "CHUNKS", (3, 6))
    failing = {"on": True}
    wf = bn.Workflow(f"bresume-{unique}", db=db_url)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="src", batch=True, max_attempts=1)
    async def label(ctx: bn.Context) -> str:
        if failing["on"] and ctx.item < 3:
            raise RuntimeError("fails the first time")
        answer = await ctx.complete(
            model="openai/gpt-4o-mini", prompt=f"Label {ctx.item}", max_tokens=50
        )
        return answer.text

    run = await wf.run(display=False)
    assert run.status == "failed"
    failing["on"] = False
    with anyio.fail_after(30):
        resumed = await wf.run(run_id=run.id, display=False)
    assert resumed.status == "completed"
    assert len(resumed.results["label"]) == items
    stats = fake_providers.batches.stats()
    assert stats["answered"] == {"openai": items}  # nothing paid twice
