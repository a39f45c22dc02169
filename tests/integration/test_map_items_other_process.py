"""A map's item count stored as its expansion begins (migration 13): a reader in another
process than the one expanding it (``bn.watch``, ``Run.load``) counts the items with no
child stored yet as pending, so the map's total is its size from the first chunk on."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.store import Store
from baton_nb.store._engine import make_engine
from tests.integration._process import kill9, wait_for_file, workflow_process
from tests.integration.test_map_expansion import MAP_MODULE

pytestmark = pytest.mark.anyio

ITEMS = 50
# The source waits for a "go" file: the watcher's snapshot is taken before the expansion.
GATED_MODULE = MAP_MODULE.replace(
    "        return list(range(ITEMS))",
    "        while not (MARKS / 'go').exists():\n"
    "            await anyio.sleep(0.02)\n"
    "        return list(range(ITEMS))",
)


@pytest.mark.slow  # a real subprocess
async def test_a_watcher_elsewhere_counts_a_maps_unstored_items_pending(
    db_url: str, tmp_path: Path, unique: str
) -> None:
    assert GATED_MODULE != MAP_MODULE
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "gated.py"
    script.write_text(GATED_MODULE)
    run_id = f"gated-{unique}"
    env = {**os.environ, "MARKS": str(marks), "ITEMS": str(ITEMS)}
    # it stalls before its third chunk: 20 of 50 children stored
    async with workflow_process(script, db_url, run_id, "before", env=env) as proc:
        with anyio.fail_after(30):
            while True:
                try:
                    await bn.Run.load(run_id, db=db_url)
                    break
                except bn.RunNotFound:
                    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                    await anyio.sleep(0.02)
            async with bn.watch(run_id, db=db_url, poll_interval=0.05) as live:
                assert live.run.steps["each"].unstored == 0  # not expanding yet
                (marks / "go").write_text("1")
                await wait_for_file(proc, marks / "stalled")
                seen_totals = set()
                async for _ in live:  # every update read; the map's total its size meanwhile
                    if live.run.steps["each"].unstored:
                        seen_totals.add(live.run.counts().total)
                    children = [s for s in live.run.steps.values() if s.parent == "each"]
                    if len(children) == 20 and live.run.counts()["completed"] == 21:
                        break
                assert live.run.steps["each"].unstored == ITEMS - 20
                assert seen_totals == {ITEMS + 2}  # src, total and every item
                counts = live.run.counts()
                assert counts.total == ITEMS + 2 and counts["pending"] == ITEMS - 20 + 1
            loaded = await bn.Run.load(run_id, db=db_url)  # a fresh read: the same
            assert loaded.steps["each"].unstored == ITEMS - 20
            assert loaded.counts() == counts
        kill9(proc)


async def test_migration_13_adds_the_map_items_column_to_an_older_database(
    db_url: str, unique: str
) -> None:
    """A database made before migration 13 (its column and version taken away again):
    reopened, it gets the column; its runs load, and new maps store their item count."""
    wf = bn.Workflow(f"m13-{unique}", db=db_url)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return [1, 2, 3]

    @wf.step(map_over="src")
    async def each(ctx: bn.Context) -> int:
        return int(ctx.item)

    old = await wf.run(display=False)
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM baton_schema_version WHERE version = 13"))
            await conn.execute(sa.text("ALTER TABLE workflow_nodes DROP COLUMN map_items"))
    finally:
        await engine.dispose()
    loaded = await bn.Run.load(old.id, db=db_url)  # migrates
    assert loaded.status == "completed" and loaded.results["each"] == [1, 2, 3]
    new = await wf.run(display=False)
    async with await Store.open(db_url) as store:
        for run_id, items in ((old.id, None), (new.id, 3)):
            group = {n.step: n for n in await store.get_nodes(run_id)}["each"]
            assert group.map_items == items
