"""The SQL store's runs and nodes: creating them, reading them, the lease of a run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ._rows import NodeRow, RunRow, utcnow
from ._sql_base import driver_connection
from ._sql_rows import (
    COMPLETIONS,
    NODES,
    RUNS,
    node_from_columns,
    run_from_columns,
    run_to_columns,
)
from ._sql_write import SqlWrites, guard_lease, insert_nodes_unnest

__all__ = ["SqlRuns"]


async def _read_new_ids(conn: AsyncConnection, run_ids: set[str], before: int) -> dict[str, int]:
    """SQLite: the ids of the nodes of ``run_ids`` above ``before`` (those just inserted),
    read on the driver (SQLAlchemy's result rows cost 2 us each, 100,000 for a big map)."""
    marks = ", ".join("?" * len(run_ids))
    cursor = await (await driver_connection(conn)).execute(
        f"SELECT step, id FROM {NODES.name} WHERE run_id IN ({marks}) AND id > ?",
        (*run_ids, before),
    )
    ids = {step: int(node_id) for step, node_id in await cursor.fetchall()}
    await cursor.close()
    return ids


class SqlRuns(SqlWrites):
    """What a driver executing a run reads and creates, and its lease."""

    async def insert_run(self, run: RunRow, nodes: Sequence[NodeRow]) -> dict[str, int]:
        """Insert a run with all its nodes, all or nothing; returns step name -> node id."""
        async with self.begin() as conn:
            await conn.execute(sa.insert(RUNS), [run_to_columns(run)])
            if nodes:
                await self.insert_node_rows(conn, nodes)
            ids = await conn.execute(
                sa.select(NODES.c.step, NODES.c.id).where(NODES.c.run_id == run.id)
            )
            await self.notify(conn, {run.id})
            return {step: int(node_id) for step, node_id in ids}

    async def set_map_items(self, node_id: int, items: int, *, owner: str | None = None) -> None:
        update = (
            sa.update(NODES)
            .where(NODES.c.id == node_id)
            .values(map_items=items, updated_at=utcnow())
            .returning(NODES.c.run_id)
        )
        async with self.begin() as conn:
            if owner is not None:
                run_id = await conn.scalar(sa.select(NODES.c.run_id).where(NODES.c.id == node_id))
                await guard_lease(conn, run_id, owner)
            run_ids = set((await conn.execute(update)).scalars())
            await self.notify(conn, run_ids)

    async def insert_nodes(
        self,
        nodes: Sequence[NodeRow],
        *,
        owner: str | None = None,
        map_items: tuple[int, int] | None = None,
    ) -> dict[str, int]:
        """Insert nodes of an existing run; returns step name -> node id. ``owner``: only
        while it holds the run's lease (``guard_lease``, in the insert's transaction);
        ``map_items``: the group's ``set_map_items`` in the same transaction."""
        if not nodes:
            return {}
        run_ids = {n.run_id for n in nodes}
        async with self.begin() as conn:
            for run_id in sorted(run_ids):
                await guard_lease(conn, run_id, owner)
            if map_items is not None:
                group, items = map_items
                await conn.execute(
                    sa.update(NODES)
                    .where(NODES.c.id == group)
                    .values(map_items=items, updated_at=utcnow())
                )
            if self.dialect == "sqlite":
                # SQLite would insert with RETURNING one row per statement (no sentinel for
                # sort_by_parameter_order): one statement (or executemany), then the ids.
                before = await conn.scalar(sa.select(sa.func.max(NODES.c.id))) or 0
                await self.insert_node_rows(conn, nodes)
                after = await conn.scalar(sa.select(sa.func.max(NODES.c.id))) or 0
                if after == before + len(nodes):
                    # Each row took the largest id + 1, in the rows' order (the transaction
                    # holds the write lock since the insert; nobody inserted between the
                    # two reads, or the largest would be further): computed, not read.
                    ids = {n.step: before + i for i, n in enumerate(nodes, 1)}
                else:
                    ids = await _read_new_ids(conn, run_ids, before)
            else:
                ids = await insert_nodes_unnest(conn, nodes)
            await self.notify(conn, run_ids)
            return ids

    async def get_run(self, run_id: str) -> RunRow | None:
        async with self.connect() as conn:
            result = await conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id))
            row = result.mappings().first()
            return run_from_columns(row) if row else None

    async def get_nodes(self, run_id: str) -> list[NodeRow]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(NODES).where(NODES.c.run_id == run_id).order_by(NODES.c.id)
            )
            return [node_from_columns(r) for r in rows.mappings()]

    async def get_completions(self, run_id: str, step: str) -> dict[int, tuple[str, str]]:
        """Stored responses of a node: call_index -> (request_hash, response JSON)."""
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    COMPLETIONS.c.call_index, COMPLETIONS.c.request_hash, COMPLETIONS.c.response
                ).where(COMPLETIONS.c.run_id == run_id, self.step_is(COMPLETIONS.c.step, step))
            )
            return {int(i): (h, r) for i, h, r in rows}

    # ── lease: one executor per run ───────────────────────────────────────────

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, steal_from: str | None = None
    ) -> bool:
        """Take the run's lease if it is free, expired, or held by ``steal_from`` (a dead owner)."""
        now = utcnow()
        free = sa.or_(
            RUNS.c.lease_owner.is_(None),
            RUNS.c.lease_expires_at < now,
            RUNS.c.lease_owner == owner,
        )
        if steal_from is not None:
            free = sa.or_(free, RUNS.c.lease_owner == steal_from)
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, free)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl))
            )
            return bool(result.rowcount == 1)

    async def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        expires = utcnow() + timedelta(seconds=ttl)
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.lease_owner == owner)
                .values(lease_expires_at=expires)
            )
            return bool(result.rowcount == 1)
