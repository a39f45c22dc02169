"""A map step's children, made as its group opens: one per item of its source's result,
stored and started a chunk at a time, so the first children run while the later ones are
stored (a 100,000-item map starts its first child in milliseconds, not in a second).

Each chunk is stored in its own transaction, ready to run, before any of its children
starts; a process killed in between leaves the chunks stored so far, and the resume stores
the missing children (it reads every stored one first: each item gets exactly one child,
the unique ``(run_id, step)`` index holding it). The group is judged on all its items from
the first chunk on (``Scheduler.plan_children``): it never completes on its first children,
and a chunk stored after it settled (a quorum met, a fail-fast) is stored cancelled. A
process killed after its map completed early (a quorum met) and before its last chunks were
stored leaves a settled group that no resume opens again: the resume stores those children
cancelled (``store_settled_rest``), so every item has its row.
"""

from __future__ import annotations

from builtins import BaseExceptionGroup  # Python 3.11 (ruff's default target predates it)
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel

from .._errors import unwrap_group
from .._run import Run
from .._runview import StepInfo
from .._states import TERMINAL_STATES, NodeKind, State
from ..store import ExecutionStore, NodeRow, utcnow
from ._announce import Announcer
from ._commit import GroupCommit
from ._decisions import GroupOpened
from ._groups import plan_map
from ._node import Node, gc_paused, new_child_rows
from ._scheduler import Scheduler, cancelled_child_reason

__all__ = ["CHUNKS", "expand_map", "store_settled_rest"]

# Children stored per chunk: a small first one (its children start at once), then each
# twice the last (fewer transactions) up to the most (the writer waits while one is stored).
CHUNKS = (1_000, 16_000)
# A chunk's nodes are built this many at a time while the store inserts them.
_BUILD_SLICE = 2_000


async def expand_map(
    group: Node,
    scheduler: Scheduler,
    store: ExecutionStore,
    commit: GroupCommit,
    announce: Announcer,
    run_id: str,
    opened: Callable[[GroupOpened], None],
    *,
    chunks: tuple[int, int] = CHUNKS,
) -> str | None:
    """Store the map's children chunk by chunk, each chunk adopted by the scheduler and
    handed to ``opened`` (children to write, to start, the group's verdict) as soon as it
    is stored; or why the map cannot expand. Returns once every child is stored: the
    caller then counts the expansion settled (``Scheduler.plan_children``)."""
    assert group.spec.map_over is not None
    plan = plan_map(group, scheduler.nodes[group.spec.map_over])
    if isinstance(plan, str):
        announce.unstored(group, 0)  # none to store (a resume read its stored item count)
        return plan
    existing = {c.name: c for c in group.children}
    stale = scheduler.plan_children(group, plan)
    if stale:
        opened(GroupOpened(stale, [], None))
    # Every item counted from the start (totals, progress), stored or not yet.
    unstored = sum(1 for name in plan.names if name not in existing)
    announce.unstored(group, unstored)
    try:
        for start, end in _chunk_bounds(len(plan.names), *chunks):
            names = plan.names[start:end]
            todo = [(i, name) for i, name in enumerate(names, start) if name not in existing]
            await anyio.lowlevel.checkpoint()  # a cancel stops here: a resume stores the rest
            # A chunk stored is a chunk adopted: a cancel waits for both, or the run would end
            # without knowing rows it stored.
            with anyio.CancelScope(shield=True):
                # Stamped and stored with the writer held: no row stamped later commits first.
                async with commit.held():
                    # the item count, with the first chunk: readers elsewhere count the
                    # items not stored yet from it
                    items = (group.id, len(plan.names)) if start == 0 else None
                    if items is not None and not todo:  # a resume: the chunk was stored
                        await store.set_map_items(*items, owner=commit.owner)
                    with gc_paused():
                        rows = new_child_rows(run_id, group.spec, group.name, todo, utcnow())
                        if group.state in TERMINAL_STATES:  # settled meanwhile: stored cancelled
                            _cancelled(rows, cancelled_child_reason(group))
                    new, infos = await _store_children(group, rows, store, commit.owner, items)
                with gc_paused():
                    unstored -= len(infos)
                    announce.unstored(group, unstored)
                    announce.added(infos)
                    chunk = new
                    if existing:  # a resume: stored children and new ones, in item order
                        fresh = iter(new)
                        chunk = [existing.get(name) or next(fresh) for name in names]
                    opened(scheduler.adopt(group, plan, chunk))
    finally:
        announce.unstored(group, 0)  # stored, or a cancel: a resume stores the rest
    if not plan.names:  # no items: the verdict (completed, no value) all the same
        opened(scheduler.adopt(group, plan, []))
    announce.children(group)
    return None


async def store_settled_rest(
    nodes: dict[str, Node], store: ExecutionStore, run: Run, run_id: str, owner: str
) -> None:
    """On a resume, before the scheduler is made: a map that settled (a quorum met) before
    its last chunks were stored gets its missing children stored cancelled, as a chunk
    stored after it settled would have been (nothing settled changes, nothing runs again);
    they join ``nodes``, the group's children (in item order) and ``run``."""
    for group in [n for n in nodes.values() if n.kind is NodeKind.GROUP]:
        source = group.spec.map_over
        if source is None or group.state not in TERMINAL_STATES:
            continue  # a map not settled opens again, and stores its missing children then
        plan = plan_map(group, nodes[source])
        if isinstance(plan, str) or len(group.children) >= len(plan.names):
            continue
        existing = {c.name: c for c in group.children}
        todo = [(i, name) for i, name in enumerate(plan.names) if name not in existing]
        if not todo or len(existing) + len(todo) != len(plan.names):
            continue  # every item stored, or children of another plan: left as they are
        with gc_paused():
            rows = new_child_rows(run_id, group.spec, group.name, todo, utcnow())
            _cancelled(rows, cancelled_child_reason(group))
        new, infos = await _store_children(group, rows, store, owner)
        fresh = {node.name: node for node in new}
        for node in new:
            node.parent = group
            nodes[node.name] = node
        group.children = [existing.get(name) or fresh[name] for name in plan.names]
        for info in infos:
            run.add_step(info)
        run.set_children(group.name, plan.names)
        run.steps[group.name].unstored = 0  # every item stored now


def _chunk_bounds(total: int, first: int, most: int) -> Iterator[tuple[int, int]]:
    start, size = 0, first
    while start < total:
        yield start, min(start + size, total)
        start += size
        size = min(size * 2, most)


def _cancelled(rows: list[NodeRow], reason: str) -> None:
    now = utcnow()
    for row in rows:
        row.state, row.error, row.finished_at = State.CANCELLED, reason, now


async def _store_children(
    group: Node,
    rows: list[NodeRow],
    store: ExecutionStore,
    owner: str | None,
    map_items: tuple[int, int] | None = None,
) -> tuple[list[Node], list[StepInfo]]:
    """Insert a chunk's new child rows (and ``map_items``, the group's item count) and,
    while the store works (SQLite's thread, the Postgres server), build their nodes and
    infos on the loop, a slice at a time; the store's ids set on rows, nodes and infos
    once it answers (nothing reads them before)."""
    ids: dict[str, int] = {}

    async def insert() -> None:  # under the run's lease
        ids.update(await store.insert_nodes(rows, owner=owner, map_items=map_items))

    new: list[Node] = []
    infos: list[StepInfo] = []
    if not rows:
        return new, infos
    try:
        # the GC paused across the slices: a collection after each one cost a quarter
        # of the building at 100,000 items (the insert meanwhile makes few objects; the
        # children already started may run between slices, for this chunk's time only)
        with gc_paused():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(insert)
                for start in range(0, len(rows), _BUILD_SLICE):
                    await anyio.lowlevel.checkpoint()  # the insert goes on between slices
                    for row in rows[start : start + _BUILD_SLICE]:
                        row.id = 0
                        new.append(Node(row, group.spec))
                        infos.append(StepInfo.from_row(row))
            for row, node, info in zip(rows, new, infos, strict=True):
                row.id = node.id = info.job_id = ids[row.step]
    except BaseExceptionGroup as failed:
        raise unwrap_group(failed) from None
    return new, infos
