"""A map step's children, made as its group opens: one per item of its source's result,
stored ready to run, then handed to the scheduler. Linear in the items: a 100,000-item map
builds its nodes on the loop while the store inserts their rows."""

from __future__ import annotations

from builtins import BaseExceptionGroup  # Python 3.11 (ruff's default target predates it)

import anyio
import anyio.lowlevel

from .._errors import unwrap_group
from .._runview import StepInfo
from ..store import ExecutionStore, NodeRow, utcnow
from ._announce import Announcer
from ._commit import GroupCommit
from ._groups import plan_map
from ._node import Node, gc_paused, new_child_rows
from ._scheduler import Scheduler

__all__ = ["expand_map"]

# A map's children are built this many at a time while the store inserts them.
_BUILD_SLICE = 2_000


async def expand_map(
    group: Node,
    scheduler: Scheduler,
    store: ExecutionStore,
    commit: GroupCommit,
    announce: Announcer,
    run_id: str,
) -> list[Node] | str:
    """The map's new children stored (ready to run) and adopted by the scheduler; returns
    the children of an earlier execution whose item is gone (settled: to be written), or
    why the map cannot expand."""
    assert group.spec.map_over is not None
    plan = plan_map(group, scheduler.nodes[group.spec.map_over])
    if isinstance(plan, str):
        return plan
    existing = {c.name for c in group.children}
    todo = [(index, name) for index, name in enumerate(plan.names) if name not in existing]
    # Stamped and stored with the writer held: no row stamped later commits first.
    async with commit.held():
        with gc_paused():
            rows = new_child_rows(run_id, group.spec, group.name, todo, utcnow())
        new, infos, ids = await _store_children(group, rows, store)
    with gc_paused():
        for row, node, info in zip(rows, new, infos, strict=True):
            row.id = node.id = info.job_id = ids[row.step]
        stale = scheduler.adopt(group, plan, new)
        announce.added(infos)
        announce.children(group)
    return stale


async def _store_children(
    group: Node, rows: list[NodeRow], store: ExecutionStore
) -> tuple[list[Node], list[StepInfo], dict[str, int]]:
    """Insert a map's new child rows and, while the store works (SQLite's thread, the
    Postgres server), build their nodes and infos on the loop, a slice at a time: a
    100,000-item map spends about as long on each. The ids are the store's: set on rows,
    nodes and infos by the caller (0 until then; nothing reads them before)."""
    ids: dict[str, int] = {}

    async def insert() -> None:
        ids.update(await store.insert_nodes(rows))

    new: list[Node] = []
    infos: list[StepInfo] = []
    try:
        # the GC paused across the slices: a collection after each one cost a quarter
        # of the building at 100,000 items; the insert meanwhile makes few objects
        with gc_paused():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(insert)
                for start in range(0, len(rows), _BUILD_SLICE):
                    await anyio.lowlevel.checkpoint()  # the insert goes on between slices
                    for row in rows[start : start + _BUILD_SLICE]:
                        row.id = 0
                        new.append(Node(row, group.spec))
                        infos.append(StepInfo.from_row(row))
    except BaseExceptionGroup as failed:
        raise unwrap_group(failed) from None
    return new, infos, ids
