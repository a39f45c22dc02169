"""A run whose execution in this process is taken over by another lease owner mid-step:
what the views of a taken-over run are tested on (test_widget, the browser test)."""

from __future__ import annotations

import anyio

import baton_nb as bn
from baton_nb.store import Store


async def taken_over_run(db: str, name: str, owner: str = "other", **run: object) -> bn.Run:
    """Run ``name`` (steps ``a`` then ``b``) with ``wf.run(**run)``; while ``a`` runs (its
    start committed), ``owner`` takes the run's lease. ``a``'s end is then refused: the
    live Run, ``taken_over`` by ``owner``, is returned (``wf.run`` raised ``RunLocked``)."""
    gate, entered = anyio.Event(), anyio.Event()

    async def step(ctx: bn.Context) -> str:
        entered.set()
        await gate.wait()
        return "done"

    wf = bn.Workflow(name, db=db)
    wf.add("a", step, max_attempts=1)
    wf.add("b", step, deps=["a"])
    raised: list[bn.RunLocked] = []

    async def execute() -> None:
        try:
            await wf.run(**run)  # type: ignore[arg-type]
        except bn.RunLocked as exc:
            raised.append(exc)

    async with await Store.open(db) as store, anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await entered.wait()
        [row] = await store.list_runs(workflow=name)
        with anyio.fail_after(10):  # its start committed (lazily): then taken
            while (await store.get_nodes(row.id))[0].state != "executing":
                await anyio.sleep(0.01)
        assert row.lease_owner is not None
        assert await store.acquire_lease(row.id, owner, 600, steal_from=row.lease_owner)
        gate.set()
    assert len(raised) == 1 and raised[0].owner == owner, raised
    live = wf.last_run
    assert live is not None and live.status == "taken_over"
    return live
