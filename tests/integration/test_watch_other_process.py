"""``bn.watch`` of a run executing in another process: Postgres wakes on NOTIFY, SQLite polls."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb._errors import RunNotFound

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHILD = """
import sys, anyio, baton_nb as bn
db, run_id, name = sys.argv[1:4]
wf = bn.Workflow(name, db=db)

@wf.step()
async def a(ctx):
    await anyio.sleep(0.3)
    return 1

@wf.step()
async def b(ctx, a):
    await anyio.sleep(0.3)
    return a + 1

anyio.run(lambda: wf.run(run_id=run_id, display=False))
"""


async def _wait_for_run(run_id: str, db: str) -> None:
    with anyio.fail_after(20):
        while True:
            try:
                await bn.Run.load(run_id, db=db)
                return
            except RunNotFound:
                await anyio.sleep(0.02)


async def test_watch_follows_a_run_in_another_process(
    db_url: str, tmp_path: Path, unique: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_id = uuid.uuid4().hex
    child = subprocess.Popen([sys.executable, str(script), db_url, run_id, f"watched_{unique}"])
    try:
        await _wait_for_run(run_id, db_url)
        # A poll interval far longer than the run: on Postgres only NOTIFY can keep it live.
        interval = 60.0 if db_url.startswith("postgresql") else 0.05
        seen: list[tuple[str, str]] = []
        finished = []
        async with bn.watch(run_id, db=db_url, poll_interval=interval) as live:
            assert live.listening == db_url.startswith("postgresql")
            # Well under the 60 s poll interval: on Postgres, only NOTIFY can end it in time.
            with anyio.fail_after(30):
                async for update in live:
                    if isinstance(update, bn.StepUpdated):
                        seen.append((update.step_name, update.state))
                    elif isinstance(update, bn.WorkflowFinished):
                        finished.append(update.outcome)
    finally:
        assert child.wait(timeout=30) == 0

    assert finished == ["completed"]
    assert ("b", "executing") in seen, "live, not only the end state"
    assert live.run.results == {"a": 1, "b": 2}
    for step in ("a", "b"):
        states = [state for name, state in seen if name == step]
        assert states[-1] == "completed" and states.count("completed") == 1, seen
        order = ["pending", "executing", "completed"]
        assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), seen
    stored = await bn.Run.load(run_id, db=db_url)
    assert {n: s.state for n, s in stored.steps.items()} == {
        n: s.state for n, s in live.run.steps.items()
    }


async def test_watch_sees_the_children_of_a_map_expanded_while_it_reads(
    db_url: str, unique: str
) -> None:
    """bn.watch reads the rows updated since the newest ``updated_at`` it has seen. A big
    map's children are inserted on a connection of their own; on Postgres the group's
    ``executing`` row, stamped later, used to commit first: a watcher reading it in between
    never saw the children that had not started (here: cancelled before they could).
    The watcher runs in this process; one in another process reads the same rows."""
    from baton_nb.runtime import active_run

    items = 20_000
    run_id = f"big-map-{unique}"
    wf = bn.Workflow(f"watch-map-{unique}", db=db_url, limits={"one": 1})

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="src", concurrency_key="one")
    async def work(ctx: bn.Context) -> None:
        await anyio.sleep(60)  # the first child runs until the run is cancelled

    async def cancel_once_the_first_child_runs() -> None:
        while True:
            live = active_run(run_id)
            child = live.steps.get("work[0]") if live is not None else None
            if live is not None and child is not None and child.state == "executing":
                await anyio.sleep(0.2)  # a few more polls
                live.cancel()
                return
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: wf.run(run_id=run_id, display=False))
        await _wait_for_run(run_id, db_url)
        async with bn.watch(run_id, db=db_url, poll_interval=0.01) as watched:
            tg.start_soon(cancel_once_the_first_child_runs)
            with anyio.fail_after(60):
                async for _update in watched:
                    pass
    stored = await bn.Run.load(run_id, db=db_url)
    assert stored.status == "cancelled"
    assert watched.run.counts() == stored.counts()
    # every stored child seen; a cancel during the expansion stores no further chunk (a
    # resume stores them), so up to every item has its child, the first ones first
    assert watched.run.steps.keys() == stored.steps.keys()
    children = stored.steps["work"].children
    assert 1 < len(children) <= items
    assert children == [f"work[{i}]" for i in range(len(children))]
