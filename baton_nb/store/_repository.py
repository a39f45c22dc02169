"""The repository: everything the runtime, reports and widget ask of the database.

One class for SQLite and Postgres; the dialect differences live in ``_engine`` and in the
few statements that branch on ``self.dialect``.
"""

from __future__ import annotations

import json
import operator
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import anyio
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._dburl import safe_url
from .._errors import StorageError
from . import _reporting
from ._engine import is_memory_url, make_engine, resolve_url
from ._failures import driver_errors, storage_error
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
# WriteBatch.nodes rows are tuples in this order; these are their _UPDATE_NODE parameters.
_UPDATE_NODE_PARAMS = tuple(f"b_{name}" for name in (*NODE_FIELDS, "id"))
_INSERT_NODE = sa.insert(NODES)
_INSERT_COMPLETION = sa.insert(COMPLETIONS)
_INSERT_STAT = sa.insert(STATS)
_UNSEEN: Any = object()


def _one_shape(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Every row has the same keys (one executemany on the driver serves them all)."""
    return all(r.keys() == rows[0].keys() for r in rows[1:]) if rows else True


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for SQLite, run as one executemany on the aiosqlite connection.

    For the runtime's bulk writes (node inserts and updates): one round trip to aiosqlite's
    thread instead of three (cursor, executemany, close) and no per-row parameter dict or
    statement machinery. ``params(row)`` gives the statement's positional parameters through
    SQLAlchemy's own bind processors, so the database gets exactly the values that
    ``conn.execute(statement, rows)`` would send.
    """

    sql: str
    order: Callable[[Any], Any]  # row -> its values in the statement's parameter order
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def compile(
        cls,
        statement: sa.Insert | sa.Update,
        dialect: sa.Dialect,
        keys: Sequence[str],
        *,
        tuples: bool,
    ) -> _DriverStatement:
        """``keys``: the parameters the rows have; ``tuples``: rows are tuples holding them
        in that order (else mappings of those keys)."""
        compiled = statement.compile(dialect=dialect, column_keys=None if tuples else list(keys))
        names = compiled.positiontup
        assert names is not None and len(names) > 1 and dialect.paramstyle == "qmark"
        if not set(names) <= set(keys):
            raise ValueError(f"rows lack parameters of {compiled.string!r}")
        processors = []
        for position, name in enumerate(names):
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((position, processor))
        where = [list(keys).index(name) for name in names] if tuples else names
        return cls(compiled.string, operator.itemgetter(*where), tuple(processors))

    def params(self, rows: Sequence[Any]) -> list[list[Any]]:
        order, processors = self.order, self.processors
        # Rows of one batch share many values (one updated_at, None, True/False): each
        # processor remembers its last value and result (they are pure functions).
        seen: list[Any] = [_UNSEEN] * len(processors)
        done: list[Any] = [None] * len(processors)
        out = []
        for row in rows:
            values = list(order(row))
            for i, (position, processor) in enumerate(processors):
                value = values[position]
                if value is not seen[i]:
                    seen[i], done[i] = value, processor(value)
                values[position] = done[i]
            out.append(values)
        return out

    async def executemany(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """In ``conn``'s transaction: sqlite3 begins it before the first write, and the
        transaction's commit or rollback ends it."""
        await (await _driver(conn)).executemany(self.sql, self.params(rows))


async def _insert_nodes_unnest(
    conn: AsyncConnection, nodes: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Postgres: node rows (one shape) as one ``INSERT ... SELECT ... FROM unnest(...)``
    on the driver, in ``conn``'s transaction; returns step name -> node id.

    SQLAlchemy's insertmanyvalues builds parameters row by row in Python (1.7 s of CPU and
    100 round trips for a 100,000-item map). Here: one statement, one round trip; a column
    whose rows all hold the same value is one parameter, the others one array each (map
    children differ only in step and item_index), through the same bind processors.
    """
    dialect = conn.dialect
    selected: list[str] = []
    arrays: list[str] = []
    params: list[Any] = []
    names = list(nodes[0])
    getter = operator.itemgetter(*names)
    rows = map(getter, nodes) if len(names) > 1 else ((getter(row),) for row in nodes)
    columns = zip(*rows, strict=True)  # rows -> columns
    for name, column in zip(names, columns, strict=True):
        kind = NODES.c[name].type.dialect_impl(dialect)
        pg_type = kind.compile(dialect=dialect)
        process = kind.bind_processor(dialect)
        values = list(column)
        first = values[0]
        if name != "step" and values.count(first) == len(values):
            params.append(first if process is None else process(first))
            selected.append(f"${len(params)}::{pg_type}")
            continue
        params.append(values if process is None else _processed(values, process))
        arrays.append(f"${len(params)}::{pg_type}[]")
        selected.append(f"u.c{len(arrays)}")
    aliases = ", ".join(f"c{i + 1}" for i in range(len(arrays)))
    sql = (
        f"INSERT INTO {NODES.name} ({', '.join(nodes[0])}) SELECT {', '.join(selected)} "
        f"FROM unnest({', '.join(arrays)}) AS u({aliases}) RETURNING step, id"
    )
    rows = await (await _driver(conn)).fetch(sql, *params)
    return {step: int(node_id) for step, node_id in rows}


def _processed(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``process`` over ``values``, once per run of the same object (rows share values)."""
    out = []
    last: Any = _UNSEEN
    done: Any = None
    for value in values:
        if value is not last:
            last, done = value, process(value)
        out.append(done)
    return out


async def _driver(conn: AsyncConnection) -> Any:
    """The DBAPI driver's own connection under ``conn`` (aiosqlite's, asyncpg's)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(timezone.utc)


@dataclass
class WriteBatch:
    """Writes that must commit together (one transaction)."""

    run_id: str | None = None  # the run the nodes belong to
    nodes: list[tuple[Any, ...]] = field(default_factory=list)  # NODE_FIELDS values, then id
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


class Store:
    """An open database. Use ``async with await Store.open(db) as store`` or ``close()``."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.dialect = engine.dialect.name
        self._driver_statements: dict[Any, _DriverStatement] = {}
        # sqlite:///:memory: is one connection shared by every checkout (StaticPool): two
        # transactions must not interleave on it (a reader's close rolls back what the
        # writer has open), so each transaction and each read takes this lock.
        self._serial = anyio.Lock() if is_memory_url(url) else None

    @asynccontextmanager
    async def _serialised(self) -> AsyncIterator[None]:
        if self._serial is None:
            yield
            return
        async with self._serial:
            yield

    @asynccontextmanager
    async def _failures(self, doing: str) -> AsyncIterator[None]:
        """Database failures in the block raise ``StorageError`` (no SQL text, advice)."""
        try:
            yield
        except StorageError:
            raise
        except driver_errors() as exc:
            raise storage_error(exc, self.url, doing) from exc

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (``async with store.connect() as conn``)."""
        async with self._failures("read"), self._serialised(), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed at the end of the block."""
        async with self._failures("write to"), self._serialised(), self.engine.begin() as conn:
            yield conn

    @classmethod
    async def open(cls, db: str | None = None) -> Store:
        """Open (and create or upgrade the schema of) the database at ``db``."""
        url = resolve_url(db)
        engine = make_engine(url)
        store = cls(url, engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(ensure_schema, safe_url(url))
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await engine.dispose()
            if isinstance(exc, driver_errors()) and not isinstance(exc, StorageError):
                raise storage_error(exc, url, "open") from exc
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ── runs and nodes ────────────────────────────────────────────────────────

    async def insert_run(
        self, run: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]
    ) -> dict[str, int]:
        """Insert a run with all its nodes, all or nothing; returns step name -> node id."""
        async with self.begin() as conn:
            await conn.execute(sa.insert(RUNS), [dict(run)])
            if nodes:
                await self._insert_rows(conn, _INSERT_NODE, nodes)
            ids = await conn.execute(
                sa.select(NODES.c.step, NODES.c.id).where(NODES.c.run_id == run["id"])
            )
            await self._notify(conn, {run["id"]})
            return {step: int(node_id) for step, node_id in ids}

    async def insert_nodes(self, nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Insert nodes of an existing run; returns step name -> node id."""
        if not nodes:
            return {}
        run_ids = {n["run_id"] for n in nodes}
        async with self.begin() as conn:
            if self.dialect == "sqlite":
                # SQLite would insert with RETURNING one row per statement (no sentinel for
                # sort_by_parameter_order): one executemany, then the ids, is ~10x faster.
                # Only ids above the largest before the insert are read back: the new rows
                # (a map of 100,000 items reads 100,000 rows, not the run's every node).
                before = await conn.scalar(sa.select(sa.func.max(NODES.c.id)))
                await self._insert_rows(conn, _INSERT_NODE, nodes)
                rows = await conn.execute(
                    sa.select(NODES.c.step, NODES.c.id).where(
                        NODES.c.run_id.in_(run_ids), NODES.c.id > (before or 0)
                    )
                )
                ids = {step: int(node_id) for step, node_id in rows.all()}
            elif _one_shape(nodes):
                ids = await _insert_nodes_unnest(conn, nodes)
            else:
                stmt = _INSERT_NODE.returning(
                    NODES.c.step, NODES.c.id, sort_by_parameter_order=True
                )
                rows = await conn.execute(stmt, [dict(n) for n in nodes])
                ids = {step: int(node_id) for step, node_id in rows}
            await self._notify(conn, run_ids)
            return ids

    async def node_ids(self, run_id: str) -> dict[str, int]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(NODES.c.step, NODES.c.id).where(NODES.c.run_id == run_id)
            )
            return {step: int(node_id) for step, node_id in rows}

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        async with self.connect() as conn:
            result = await conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id))
            row = result.mappings().first()
            return dict(row) if row else None

    async def get_nodes(self, run_id: str) -> list[dict[str, Any]]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(NODES).where(NODES.c.run_id == run_id).order_by(NODES.c.id)
            )
            return [dict(r) for r in rows.mappings()]

    async def update_run(self, run_id: str, **values: Any) -> None:
        async with self.begin() as conn:
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

        async with self.connect() as conn:
            driver = await _driver(conn)
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
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id == run_id, free)
                .values(lease_owner=owner, lease_expires_at=expires)
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

    async def release_lease(self, run_id: str, owner: str) -> None:
        async with self.begin() as conn:
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
            async with self.begin() as fresh:
                await self._write(fresh, batch)
            return
        async with self._failures("write to"), self._serialised():
            if self._driver_commit_fits(conn, batch):
                await self._write_sqlite_driver(conn, batch)
                return
            async with conn.begin():
                await self._write(conn, batch)

    def _driver_commit_fits(self, conn: AsyncConnection, batch: WriteBatch) -> bool:
        """The runtime's usual SQLite batch: node updates, stored completions and call
        stats, each rows of one shape; no run row, no logs, no transaction open."""
        return (
            self.dialect == "sqlite"
            and bool(batch.nodes or batch.completions or batch.stats)
            and not (batch.run or batch.logs)
            and _one_shape(batch.completions)
            and _one_shape(batch.stats)
            and not conn.in_transaction()
        )

    async def _write_sqlite_driver(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """Most runtime commits, on aiosqlite directly.

        sqlite3 begins the transaction before the first statement; committed (or rolled
        back) here on the driver, where SQLAlchemy, which has no transaction open on
        ``conn``, would only forward the same call: a chain step's commit, or an LLM
        answer with its stats, in a few round trips to aiosqlite's thread with no
        statement or transaction machinery around them.
        """
        driver = await _driver(conn)
        try:
            await self._write_step_rows(conn, batch)
            await driver.commit()
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(Exception):  # keep the first error
                await driver.rollback()
            raise

    @asynccontextmanager
    async def writer_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection to hold for a run's writes: ``async with store.writer_connection()``."""
        async with self._failures("write to"), self.engine.connect() as conn:
            yield conn  # its transactions are serialised in ``write``

    async def _write_step_rows(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """Node updates, stored completions and call stats: what most commits hold."""
        if batch.nodes:
            await self._update_nodes(conn, batch.nodes)
        if batch.completions:
            await self._insert_rows(conn, _INSERT_COMPLETION, batch.completions)
        if batch.stats:
            await self._insert_rows(conn, _INSERT_STAT, batch.stats)

    async def _write(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        await self._write_step_rows(conn, batch)
        if batch.run:
            values = {k: v for k, v in batch.run.items() if k != "id"}
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == batch.run["id"]).values(values))
        if batch.logs:
            await conn.execute(sa.insert(LOGS), batch.logs)
        await self._notify(conn, batch.run_ids())

    def _driver_statement(
        self,
        statement: sa.Insert | sa.Update,
        dialect: sa.Dialect,
        keys: Sequence[str],
        tuples: bool,
    ) -> _DriverStatement:
        """``_DriverStatement.compile``, once per statement and row shape for this store."""
        cache_key = (id(statement), tuple(keys), tuples)
        found = self._driver_statements.get(cache_key)
        if found is None:
            found = _DriverStatement.compile(statement, dialect, keys, tuples=tuples)
            self._driver_statements[cache_key] = found
        return found

    async def _update_nodes(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """``WriteBatch.nodes`` rows (tuples): on SQLite one executemany on the driver."""
        if self.dialect == "sqlite":
            names = _UPDATE_NODE_PARAMS
            statement = self._driver_statement(_UPDATE_NODE, conn.dialect, names, True)
            await statement.executemany(conn, rows)
            return
        params = [dict(zip(_UPDATE_NODE_PARAMS, row, strict=True)) for row in rows]
        await conn.execute(_UPDATE_NODE, params)

    async def _insert_rows(
        self, conn: AsyncConnection, insert: sa.Insert, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Bulk inserts of the runtime (nodes, stored completions, call stats): on SQLite one
        executemany on the driver (the values through SQLAlchemy's bind processors, as
        ``conn.execute`` sends them), without the statement machinery per commit and row."""
        if self.dialect == "sqlite" and _one_shape(rows):
            statement = self._driver_statement(insert, conn.dialect, list(rows[0].keys()), False)
            await statement.executemany(conn, rows)
            return
        await conn.execute(insert, [dict(r) for r in rows])

    async def _notify(self, conn: AsyncConnection, run_ids: set[str]) -> None:
        """Tell watchers (``notifications``) that these runs changed, at commit (Postgres)."""
        if self.dialect != "postgresql":
            return
        # On the driver's connection, inside this transaction: a round trip without
        # SQLAlchemy's statement machinery (a third of a chain step's cost otherwise).
        driver = await _driver(conn)
        for run_id in run_ids:
            await driver.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, run_id)

    # ── replay, stats, logs ───────────────────────────────────────────────────

    def _step_is(self, column: sa.ColumnElement[str], step: str) -> sa.ColumnElement[bool]:
        """``column == step``, in a form that uses the step indexes (md5 on Postgres)."""
        if self.dialect == "postgresql":
            return sa.and_(sa.func.md5(column) == sa.func.md5(step), column == step)
        return column == step

    async def get_completions(self, run_id: str, step: str) -> dict[int, tuple[str, str]]:
        """Stored responses of a node: call_index -> (request_hash, response JSON)."""
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    COMPLETIONS.c.call_index, COMPLETIONS.c.request_hash, COMPLETIONS.c.response
                ).where(COMPLETIONS.c.run_id == run_id, self._step_is(COMPLETIONS.c.step, step))
            )
            return {int(i): (h, r) for i, h, r in rows}

    async def get_stats(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(STATS).where(STATS.c.run_id.in_(list(run_ids))).order_by(STATS.c.id)
            )
            return [dict(r) for r in rows.mappings()]

    async def get_debug_logs(self, run_id: str, step: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(LOGS).where(LOGS.c.run_id == run_id)
        if step is not None:
            query = query.where(self._step_is(LOGS.c.step, step))
        async with self.connect() as conn:
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
        async with self.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    # ── reports, run listings, pruning (SQL in _reporting) ────────────────────

    async def aggregate_stats(self, where: RunFilter | None = None) -> list[dict[str, Any]]:
        """Stats summed per (run, step, model) in SQL, with workflow and fan-out parent."""
        async with self.connect() as conn:
            where = where or RunFilter()
            return await _reporting.stats_by_run_step_model(conn, self.dialect, where)

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` exist."""
        async with self.connect() as conn:
            return await _reporting.existing_run_ids(conn, run_ids)

    async def run_ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        """Run ids beginning with ``prefix`` (an exact match first), at most ``limit``."""
        async with self.connect() as conn:
            return await _reporting.run_ids_starting_with(conn, prefix, limit)

    async def fanout_children(self, where: RunFilter | None = None) -> list[dict[str, Any]]:
        """Multi-model fan-out child nodes (state, attempt, error) of the runs selected."""
        async with self.connect() as conn:
            return await _reporting.fanout_children(conn, where or RunFilter())

    async def run_summaries(
        self, where: RunFilter | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Runs newest first with step counts, calls, tokens and cost (one query)."""
        async with self.connect() as conn:
            return await _reporting.run_summaries(conn, self.dialect, where or RunFilter(), limit)

    async def prune_runs_batch(self, cutoff: datetime, batch_size: int) -> dict[str, int]:
        """Delete one batch of finished, unleased runs older than ``cutoff`` (one transaction)."""
        async with self.begin() as conn:
            return await _reporting.prune_runs_batch(conn, cutoff, utcnow(), batch_size)

    async def prune_debug_logs_batch(self, cutoff: datetime, batch_size: int) -> int:
        """Delete one batch of debug log rows older than ``cutoff`` (one transaction)."""
        async with self.begin() as conn:
            return await _reporting.prune_debug_logs_batch(conn, cutoff, batch_size)

    async def count_prunable(
        self, cutoff: datetime | None, log_cutoff: datetime | None
    ) -> dict[str, int]:
        """Rows per table that pruning would delete now."""
        async with self.connect() as conn:
            return await _reporting.count_prunable(conn, cutoff, log_cutoff, utcnow())


def lease_owner_name(token: str) -> str:
    return f"{socket.gethostname()}:{__import__('os').getpid()}:{token}"


def loads_list(text: str | None) -> list[str]:
    if not text or text == "[]":  # most nodes (every fan-out child) have no deps
        return []
    return list(json.loads(text))


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, DBAPIError, OSError))
