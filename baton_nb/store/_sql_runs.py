"""The SQL store's runs and nodes: creating them, reading them, the lease of a run."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .._errors import lease_not_held
from .._states import RunStatus
from ._rows import NodeRow, RunRow, utcnow
from ._sql_base import NOTIFY_CHANNEL, driver_connection
from ._sql_rows import (
    COMPLETIONS,
    NODES,
    RUNS,
    node_from_columns,
    run_from_columns,
    run_to_columns,
)
from ._sql_write import (
    SqlWrites,
    guard_lease,
    insert_nodes_unnest,
    lease_cte,
    nodes_unnest,
    pg_param,
    sqlite_lease_held,
)
from ._tables import sqlite_text

__all__ = ["SqlRuns"]

_INSERT_RUN = sa.insert(RUNS)
_SET_MAP_ITEMS = f"UPDATE {NODES.name} SET map_items = ?, updated_at = ? WHERE id = ?"


def _insert_nodes_sqlite(
    connection: sqlite3.Connection,
    run_ids: Sequence[str],
    owner: str | None,
    first: Sequence[tuple[str, Sequence[Any]]],
    insert: tuple[str, list[Any], bool],
    steps: Sequence[str],
) -> dict[str, int]:
    """On aiosqlite's thread, in one round trip (there were ~10 through SQLAlchemy for a
    run's rows, ~13 for a map's chunk: docs/performance.md, "Sixth round"): the transaction
    begun IMMEDIATE, the lease guard of each run (``owner``), the statements ``first`` (a
    new run's row, a group's item count), the nodes' ``insert``; step name -> node id.
    Committed or rolled back by the caller's ``begin()``.

    SQLite would insert with RETURNING one row per statement (no sentinel for
    sort_by_parameter_order): one statement (or executemany), then the ids: each row took
    the largest id + 1, in the rows' order, unless somebody inserted between the two reads
    of the largest (it would be further then): computed, else read.
    """
    if not connection.in_transaction:
        connection.execute("BEGIN IMMEDIATE")
    if owner is not None:
        for run_id in run_ids:
            if not sqlite_lease_held(connection, run_id, owner):
                raise lease_not_held(run_id, owner)
    for sql, params in first:
        connection.execute(sql, params)
    largest = f"SELECT max(id) FROM {NODES.name}"
    before = connection.execute(largest).fetchone()[0] or 0
    sql, params, many = insert
    if many:
        connection.executemany(sql, params)
    else:
        connection.execute(sql, params)
    after = connection.execute(largest).fetchone()[0] or 0
    if after == before + len(steps):
        return {step: before + i for i, step in enumerate(steps, 1)}
    marks = ", ".join("?" * len(run_ids))
    rows = connection.execute(
        f"SELECT step, id FROM {NODES.name} WHERE run_id IN ({marks}) AND id > ?",
        (*run_ids, before),
    )
    return {step: int(node_id) for step, node_id in rows}


class SqlRuns(SqlWrites):
    """What a driver executing a run reads and creates, and its lease."""

    async def insert_run(self, run: RunRow, nodes: Sequence[NodeRow]) -> dict[str, int]:
        """Insert a run with all its nodes, all or nothing; returns step name -> node id."""
        if self.dialect == "postgresql" and nodes:
            return await self._insert_run_pg(run, nodes)
        async with self.begin() as conn:
            if self.dialect == "sqlite" and nodes:
                columns = run_to_columns(run)
                statement = self._driver_statement(
                    _INSERT_RUN, conn.dialect, list(columns), "mapping"
                )
                first = [(statement.sql, statement.params([columns])[0])]
                return await self._insert_on_driver(conn, nodes, [run.id], None, first)
            await conn.execute(_INSERT_RUN, [run_to_columns(run)])
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
        run_ids = sorted({n.run_id for n in nodes})
        if self.dialect == "postgresql" and len(run_ids) == 1:
            return await self._insert_nodes_pg(nodes, run_ids[0], owner, map_items)
        async with self.begin() as conn:
            if self.dialect == "sqlite":
                first = []
                if map_items is not None:
                    update = (map_items[1], sqlite_text(utcnow()), map_items[0])
                    first.append((_SET_MAP_ITEMS, update))
                return await self._insert_on_driver(conn, nodes, run_ids, owner, first)
            for run_id in run_ids:
                await guard_lease(conn, run_id, owner)
            if map_items is not None:
                group, items = map_items
                await conn.execute(
                    sa.update(NODES)
                    .where(NODES.c.id == group)
                    .values(map_items=items, updated_at=utcnow())
                )
            ids = await insert_nodes_unnest(conn, nodes)
            await self.notify(conn, set(run_ids))
            return ids

    async def _insert_run_pg(self, run: RunRow, nodes: Sequence[NodeRow]) -> dict[str, int]:
        """Postgres: ``insert_run`` as ONE statement on asyncpg (its own transaction): the
        run's row, its nodes (``nodes_unnest``) and the NOTIFY; it took six round trips
        (BEGIN, the run, the nodes, their ids, NOTIFY, COMMIT). The nodes' foreign key to
        the run is checked at the statement's end, once both rows are in."""
        async with self.failures("write to"), self.engine.connect() as conn:
            dialect = conn.dialect
            params: list[Any] = []
            insert = nodes_unnest(dialect, nodes, params)
            columns = run_to_columns(run)
            values = ", ".join(pg_param(dialect, RUNS.c[k], v, params) for k, v in columns.items())
            params += [NOTIFY_CHANNEL, run.id]
            n = len(params)
            sql = (
                f"WITH r AS (INSERT INTO {RUNS.name} ({', '.join(columns)}) VALUES ({values})), "
                f"ins AS ({insert} RETURNING step, id), "
                f"n AS (SELECT pg_notify(${n - 1}, ${n}) AS k) "
                "SELECT ins.step, ins.id FROM ins, n"
            )
            found = await (await driver_connection(conn)).fetch(sql, *params)
        return {step: int(node_id) for step, node_id in found}

    async def _insert_nodes_pg(
        self,
        nodes: Sequence[NodeRow],
        run_id: str,
        owner: str | None,
        map_items: tuple[int, int] | None,
    ) -> dict[str, int]:
        """Postgres: ``insert_nodes`` of one run as ONE statement on asyncpg (its own
        transaction): the lease guard (``lease_cte``, which every part depends on), the
        group's item count, the nodes and the NOTIFY; it took six round trips or more
        (BEGIN, the guard, the count, the nodes, NOTIFY, COMMIT)."""
        held = "EXISTS (SELECT 1 FROM lease)"
        async with self.failures("write to"), self.engine.connect() as conn:
            dialect = conn.dialect
            params: list[Any] = []
            insert = nodes_unnest(dialect, nodes, params)
            ctes = []
            if owner is not None:
                params += [run_id, owner]
                ctes.append(lease_cte(f"${len(params) - 1}", f"${len(params)}"))
                insert += f" WHERE {held}"
            if map_items is not None:
                group, items = map_items
                sets = (
                    f"map_items = {pg_param(dialect, NODES.c.map_items, items, params)}, "
                    f"updated_at = {pg_param(dialect, NODES.c.updated_at, utcnow(), params)}"
                )
                where = f"id = {pg_param(dialect, NODES.c.id, group, params)}"
                if owner is not None:
                    where += f" AND {held}"
                ctes.append(f"m AS (UPDATE {NODES.name} SET {sets} WHERE {where})")
            ctes.append(f"ins AS ({insert} RETURNING step, id)")
            params += [NOTIFY_CHANNEL, run_id]
            n = len(params)
            notify = f"SELECT pg_notify(${n - 1}, ${n}) AS k"
            if owner is not None:
                notify += f" WHERE {held}"
            ctes.append(f"n AS ({notify})")
            sql = f"WITH {', '.join(ctes)} SELECT ins.step, ins.id FROM ins, n"
            found = await (await driver_connection(conn)).fetch(sql, *params)
        if not found and owner is not None:  # nodes were given: none written, not held
            raise lease_not_held(run_id, owner)
        return {step: int(node_id) for step, node_id in found}

    async def _insert_on_driver(
        self,
        conn: AsyncConnection,
        nodes: Sequence[NodeRow],
        run_ids: Sequence[str],
        owner: str | None,
        first: Sequence[tuple[str, Sequence[Any]]],
    ) -> dict[str, int]:
        """SQLite: ``_insert_nodes_sqlite`` on aiosqlite's thread, in ``conn``'s transaction
        (a new run's rows, a map's chunk); step name -> node id."""
        driver = await driver_connection(conn)
        insert = self.sqlite_node_insert(conn.dialect, nodes)
        steps = [n.step for n in nodes]
        return await driver._execute(  # type: ignore[no-any-return]
            _insert_nodes_sqlite, driver._conn, run_ids, owner, first, insert, steps
        )

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
        self,
        run_id: str,
        owner: str,
        ttl: float,
        *,
        steal_from: str | None = None,
        count_execution: bool = False,
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
        values: dict[str, Any] = {
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=ttl),
        }
        if count_execution:
            values["executions"] = RUNS.c.executions + 1
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS).where(RUNS.c.id == run_id, free).values(**values)
            )
            return bool(result.rowcount == 1)

    async def end_failed_start(self, run_id: str, owner: str) -> None:
        running = RUNS.c.status == RunStatus.RUNNING.value
        ended = {  # each SET reads the row as it was: the status before this update
            "status": sa.case((running, RunStatus.CANCELLED.value), else_=RUNS.c.status),
            "stopped_by": sa.case((running, owner), else_=RUNS.c.stopped_by),
            "finished_at": sa.case(
                (running, sa.literal(utcnow(), RUNS.c.finished_at.type)),
                else_=RUNS.c.finished_at,
            ),
        }
        async with self.begin() as conn:
            await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, **ended)
            )

    async def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        expires = utcnow() + timedelta(seconds=ttl)
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.lease_owner == owner)
                .values(lease_expires_at=expires)
            )
            return bool(result.rowcount == 1)
