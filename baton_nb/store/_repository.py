"""The repository: everything the runtime, reports and widget ask of the database.

One class for SQLite and Postgres; the dialect differences live in ``_engine`` and in the
few statements that branch on ``self.dialect``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import anyio
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import StorageError
from . import _reporting
from ._engine import make_engine, resolve_url
from ._migrations import ensure_schema
from ._reporting import RunFilter
from ._tables import (
    WorkflowCompletion,
    WorkflowDebugLog,
    WorkflowNode,
    WorkflowRun,
    WorkflowStepStat,
)

__all__ = ["NODE_FIELDS", "NOTIFY_CHANNEL", "Store", "WriteBatch", "utcnow"]

# Postgres: each commit that changes a run notifies this channel with the run id, in the
# same transaction, so ``bn.watch`` in other processes wakes at once (SQLite watchers poll).
NOTIFY_CHANNEL = "baton_nb_runs"

RUNS = cast(sa.Table, WorkflowRun.__table__)  # type: ignore[attr-defined]
NODES = cast(sa.Table, WorkflowNode.__table__)  # type: ignore[attr-defined]
STATS = cast(sa.Table, WorkflowStepStat.__table__)  # type: ignore[attr-defined]
COMPLETIONS = cast(sa.Table, WorkflowCompletion.__table__)  # type: ignore[attr-defined]
LOGS = cast(sa.Table, WorkflowDebugLog.__table__)  # type: ignore[attr-defined]

# Mutable node columns the runtime writes back on every flush.
NODE_FIELDS = (
    "state",
    "attempt",
    "error",
    "result",
    "has_result",
    "remaining_deps",
    "started_at",
    "finished_at",
    "updated_at",
)

_UPDATE_NODE = (
    sa.update(NODES)
    .where(NODES.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(f"b_{name}") for name in NODE_FIELDS})
)


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(timezone.utc)


@dataclass
class WriteBatch:
    """Writes that must commit together (one transaction)."""

    run_id: str | None = None  # the run the nodes belong to
    nodes: list[dict[str, Any]] = field(default_factory=list)  # id + NODE_FIELDS
    run: dict[str, Any] | None = None  # must contain "id"
    completions: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.run or self.completions or self.stats or self.logs)

    def run_ids(self) -> set[str]:
        """Every run these writes touch."""
        ids = {row["run_id"] for rows in (self.completions, self.stats, self.logs) for row in rows}
        if self.run:
            ids.add(self.run["id"])
        if self.run_id is not None and self.nodes:
            ids.add(self.run_id)
        return ids


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else repr(exc)


class Store:
    """An open database. Use ``async with await Store.open(db) as store`` or ``close()``."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    async def open(cls, db: str | None = None) -> Store:
        """Open (and create or upgrade the schema of) the database at ``db``."""
        url = resolve_url(db)
        engine = make_engine(url)
        store = cls(url, engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(ensure_schema, _safe_url(url))
        except StorageError:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            if store.dialect == "sqlite":
                hint = "Check that the file path is right and writable (db= or BATON_NB_DB)."
            else:
                hint = "Check that the server is running and the URL is right (db= or BATON_NB_DB)."
            raise StorageError(
                f"cannot open database {_safe_url(url)!r}: {_describe(exc)}. {hint}"
            ) from exc
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ── runs and nodes ────────────────────────────────────────────────────────

    async def insert_run(self, run: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> None:
        """Insert a run with all its nodes, all or nothing."""
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(RUNS), [dict(run)])
            if nodes:
                await conn.execute(sa.insert(NODES), [dict(n) for n in nodes])
            await self._notify(conn, {run["id"]})

    async def insert_nodes(self, nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Insert nodes of an existing run; returns step name -> node id."""
        if not nodes:
            return {}
        stmt = sa.insert(NODES).returning(NODES.c.step, NODES.c.id, sort_by_parameter_order=True)
        async with self.engine.begin() as conn:
            rows = await conn.execute(stmt, [dict(n) for n in nodes])
            await self._notify(conn, {n["run_id"] for n in nodes})
            return {step: int(node_id) for step, node_id in rows}

    async def node_ids(self, run_id: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(NODES.c.step, NODES.c.id).where(NODES.c.run_id == run_id)
            )
            return {step: int(node_id) for step, node_id in rows}

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            result = await conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id))
            row = result.mappings().first()
            return dict(row) if row else None

    async def get_nodes(self, run_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(NODES).where(NODES.c.run_id == run_id).order_by(NODES.c.id)
            )
            return [dict(r) for r in rows.mappings()]

    async def update_run(self, run_id: str, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(**values))
            await self._notify(conn, {run_id})

    @asynccontextmanager
    async def notifications(self, on_change: Callable[[str], None]) -> AsyncIterator[bool]:
        """Call ``on_change(run_id)`` after each commit that changes a run, from any process.

        Postgres: LISTEN on a connection held for the block; yields True. SQLite has no
        such channel: yields False, and the caller polls.
        """
        if self.dialect != "postgresql":
            yield False
            return

        def deliver(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            on_change(payload)

        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.add_listener(NOTIFY_CHANNEL, deliver)
            try:
                yield True
            finally:
                with anyio.CancelScope(shield=True):
                    await driver.remove_listener(NOTIFY_CHANNEL, deliver)

    # ── lease: one executor per run ───────────────────────────────────────────

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, steal_from: str | None = None
    ) -> bool:
        """Take the run's lease if it is free, expired, or held by ``steal_from`` (a dead owner)."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        free = sa.or_(
            RUNS.c.lease_owner.is_(None),
            RUNS.c.lease_expires_at < now,
            RUNS.c.lease_owner == owner,
        )
        if steal_from is not None:
            free = sa.or_(free, RUNS.c.lease_owner == steal_from)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, free)
                .values(lease_owner=owner, lease_expires_at=expires)
            )
            return bool(result.rowcount == 1)

    async def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        expires = utcnow() + timedelta(seconds=ttl)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.lease_owner == owner)
                .values(lease_expires_at=expires)
            )
            return bool(result.rowcount == 1)

    async def release_lease(self, run_id: str, owner: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    # ── the runtime's group commit ────────────────────────────────────────────

    async def write(self, batch: WriteBatch, conn: AsyncConnection | None = None) -> None:
        """Commit node updates, run status, stored completions, stats and logs together.

        ``conn``: a connection held for many writes (see ``writer_connection``), which
        saves a pool checkout and reset per commit on the runtime's hot path.
        """
        if conn is None:
            async with self.engine.begin() as fresh:
                await self._write(fresh, batch)
            return
        async with conn.begin():
            await self._write(conn, batch)

    def writer_connection(self) -> AsyncConnection:
        """A connection to hold for a run's writes: ``async with store.writer_connection()``."""
        return self.engine.connect()

    async def _write(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        if batch.nodes:
            params = [
                {"b_id": n["id"], **{f"b_{k}": n[k] for k in NODE_FIELDS}} for n in batch.nodes
            ]
            await conn.execute(_UPDATE_NODE, params)
        if batch.run:
            values = {k: v for k, v in batch.run.items() if k != "id"}
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == batch.run["id"]).values(values))
        if batch.completions:
            await conn.execute(sa.insert(COMPLETIONS), batch.completions)
        if batch.stats:
            await conn.execute(sa.insert(STATS), batch.stats)
        if batch.logs:
            await conn.execute(sa.insert(LOGS), batch.logs)
        await self._notify(conn, batch.run_ids())

    async def _notify(self, conn: AsyncConnection, run_ids: set[str]) -> None:
        """Tell watchers (``notifications``) that these runs changed, at commit (Postgres)."""
        if self.dialect != "postgresql":
            return
        # On the driver's connection, inside this transaction: a round trip without
        # SQLAlchemy's statement machinery (a third of a chain step's cost otherwise).
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        for run_id in run_ids:
            await driver.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, run_id)

    # ── replay, stats, logs ───────────────────────────────────────────────────

    async def get_completions(self, run_id: str, step: str) -> dict[int, tuple[str, str]]:
        """Stored responses of a node: call_index -> (request_hash, response JSON)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    COMPLETIONS.c.call_index, COMPLETIONS.c.request_hash, COMPLETIONS.c.response
                ).where(COMPLETIONS.c.run_id == run_id, COMPLETIONS.c.step == step)
            )
            return {int(i): (h, r) for i, h, r in rows}

    async def get_stats(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(STATS).where(STATS.c.run_id.in_(list(run_ids))).order_by(STATS.c.id)
            )
            return [dict(r) for r in rows.mappings()]

    async def get_debug_logs(self, run_id: str, step: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(LOGS).where(LOGS.c.run_id == run_id)
        if step is not None:
            query = query.where(LOGS.c.step == step)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.order_by(LOGS.c.id))
            return [dict(r) for r in rows.mappings()]

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        query = sa.select(RUNS)
        if workflow is not None:
            query = query.where(RUNS.c.workflow == workflow)
        if since is not None:
            query = query.where(RUNS.c.created_at >= since)
        if until is not None:
            query = query.where(RUNS.c.created_at < until)
        if status is not None:
            query = query.where(RUNS.c.status == status)
        query = query.order_by(RUNS.c.created_at.desc(), RUNS.c.id)
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    # ── reports, run listings, pruning (SQL in _reporting) ────────────────────

    async def aggregate_stats(self, where: RunFilter | None = None) -> list[dict[str, Any]]:
        """Stats summed per (run, step, model) in SQL, with workflow and fan-out parent."""
        async with self.engine.connect() as conn:
            where = where or RunFilter()
            return await _reporting.stats_by_run_step_model(conn, self.dialect, where)

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` exist."""
        async with self.engine.connect() as conn:
            return await _reporting.existing_run_ids(conn, run_ids)

    async def run_ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        """Run ids beginning with ``prefix`` (an exact match first), at most ``limit``."""
        async with self.engine.connect() as conn:
            return await _reporting.run_ids_starting_with(conn, prefix, limit)

    async def fanout_children(self, where: RunFilter | None = None) -> list[dict[str, Any]]:
        """Multi-model fan-out child nodes (state, attempt, error) of the runs selected."""
        async with self.engine.connect() as conn:
            return await _reporting.fanout_children(conn, where or RunFilter())

    async def run_summaries(
        self, where: RunFilter | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Runs newest first with step counts, calls, tokens and cost (one query)."""
        async with self.engine.connect() as conn:
            return await _reporting.run_summaries(conn, self.dialect, where or RunFilter(), limit)

    async def prune_runs_batch(self, cutoff: datetime, batch_size: int) -> dict[str, int]:
        """Delete one batch of finished, unleased runs older than ``cutoff`` (one transaction)."""
        async with self.engine.begin() as conn:
            return await _reporting.prune_runs_batch(conn, cutoff, utcnow(), batch_size)

    async def prune_debug_logs_batch(self, cutoff: datetime, batch_size: int) -> int:
        """Delete one batch of debug log rows older than ``cutoff`` (one transaction)."""
        async with self.engine.begin() as conn:
            return await _reporting.prune_debug_logs_batch(conn, cutoff, batch_size)

    async def count_prunable(
        self, cutoff: datetime | None, log_cutoff: datetime | None
    ) -> dict[str, int]:
        """Rows per table that pruning would delete now."""
        async with self.engine.connect() as conn:
            return await _reporting.count_prunable(conn, cutoff, log_cutoff, utcnow())


def _safe_url(url: str) -> str:
    """The URL without a password."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return url
    return parsed.render_as_string(hide_password=True)


def lease_owner_name(token: str) -> str:
    return f"{socket.gethostname()}:{__import__('os').getpid()}:{token}"


def loads_list(text: str | None) -> list[str]:
    return list(json.loads(text)) if text else []


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, DBAPIError, OSError))
