"""The SQL store's foundation: opening the engine, connections, Postgres NOTIFY."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._dburl import safe_url
from .._errors import StorageError
from ._engine import is_memory_url, make_engine
from ._failures import connection_lost, driver_errors, storage_error
from ._migrations import MIGRATIONS, SCHEMA_VERSION, ensure_schema
from ._shared_engines import release, renew, shared_engine

__all__ = ["NOTIFY_CHANNEL", "SqlBase", "driver_connection"]

# Postgres: each commit that changes a run notifies this channel with the run id, in the
# same transaction, so ``bn.watch`` in other processes wakes at once (SQLite watchers poll).
NOTIFY_CHANNEL = "baton_nb_runs"

S = TypeVar("S", bound="SqlBase")


async def driver_connection(conn: AsyncConnection) -> Any:
    """The DBAPI driver's own connection under ``conn`` (aiosqlite's, asyncpg's)."""
    sync = conn.sync_connection
    if sync is not None and not (sync.closed or sync.invalidated):
        # Read at once: ``get_raw_connection`` reads the same attribute through a
        # greenlet, which it needs only to reconnect an invalidated connection (~0.05 ms
        # a commit under cProfile, measured 2026-12-06).
        driver = sync.connection.driver_connection
    else:
        driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


async def _pg_schema_is_current(engine: AsyncEngine) -> bool:
    """Postgres: whether the database records every migration this baton_nb knows and none
    newer, read in one statement outside any transaction. Then ``ensure_schema`` has
    nothing to do; its transaction (BEGIN, the advisory lock, SQLAlchemy's table
    reflection, the versions, COMMIT: eight round trips on every ``Store.open``) is for a
    database that lacks some (or holds newer ones: refused there). Versions are only ever
    added, so one seen complete stays complete."""
    import asyncpg  # the Postgres driver, installed with it

    async with engine.connect() as conn:
        driver = await driver_connection(conn)
        try:
            rows = await driver.fetch("SELECT version FROM baton_schema_version")
        except asyncpg.UndefinedTableError:  # a new database
            return False
    applied = {int(version) for (version,) in rows}
    return applied >= {version for version, _ in MIGRATIONS} and max(applied) <= SCHEMA_VERSION


class SqlBase:
    """An open SQLite or Postgres database (SQLAlchemy async engine)."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.owns_engine = True  # ``close`` disposes of it (not a shared one: ``open``)
        self.dialect = engine.dialect.name
        # sqlite:///:memory: is one connection shared by every checkout (StaticPool): two
        # transactions must not interleave on it (a reader's close rolls back what the
        # writer has open), so each transaction and each read takes this lock.
        self._serial = anyio.Lock() if is_memory_url(url) else None

    @classmethod
    async def open(cls: type[S], url: str, *, shared: bool = False) -> S:
        """Open (and create or upgrade the schema of) the database at a resolved ``url``.

        ``shared``: on Postgres, through the running loop's engine for ``url`` unless
        another store has it (``_shared_engines``: its connections kept for the next
        run), which ``close`` leaves open; the schema checked all the same."""
        engine = await shared_engine(url) if shared else None
        owned = engine is None
        if engine is None:
            engine = make_engine(url)
        store = cls(url, engine)
        store.owns_engine = owned
        try:
            try:
                await store._check_schema()
            except driver_errors() as exc:
                # A pooled connection of the shared engine the server ended unseen by the
                # driver (``_shared_engines``): once more, on a new engine.
                if owned or not connection_lost(exc):
                    raise
                store.engine = engine = await renew(url, engine)
                await store._check_schema()
        except BaseException as exc:
            if owned:
                with anyio.CancelScope(shield=True):
                    await engine.dispose()
            else:
                release(url)
            if isinstance(exc, driver_errors()) and not isinstance(exc, StorageError):
                raise storage_error(exc, url, "open") from exc
            raise
        return store

    async def _check_schema(self) -> None:
        if self.dialect != "postgresql" or not await _pg_schema_is_current(self.engine):
            async with self.engine.begin() as conn:
                await conn.run_sync(ensure_schema, safe_url(self.url))

    async def close(self) -> None:
        if self.owns_engine:
            await self.engine.dispose()
        else:  # the loop's shared engine: the next run has it
            release(self.url)

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def serialised(self) -> AsyncIterator[None]:
        """Hold the shared in-memory SQLite connection (a no-op for other databases)."""
        if self._serial is None:
            yield
            return
        async with self._serial:
            yield

    @asynccontextmanager
    async def failures(self, doing: str) -> AsyncIterator[None]:
        """Database failures in the block raise ``StorageError`` (no SQL text, advice):
        ``cannot {doing} database URL: ...``."""
        try:
            yield
        except StorageError:
            raise
        except driver_errors() as exc:
            raise storage_error(exc, self.url, doing) from exc

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (``async with store.connect() as conn``)."""
        async with self.failures("read"), self.serialised(), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed at the end of the block."""
        async with self.failures("write to"), self.serialised(), self.engine.begin() as conn:
            yield conn

    def step_is(self, column: sa.ColumnElement[str], step: str) -> sa.ColumnElement[bool]:
        """``column == step``, in a form that uses the step indexes: on Postgres they index
        ``md5(step)`` (migration 4: a btree entry holds at most 2704 bytes)."""
        if self.dialect == "postgresql":
            return sa.and_(sa.func.md5(column) == sa.func.md5(step), column == step)
        return column == step

    async def notify(self, conn: AsyncConnection, run_ids: set[str]) -> None:
        """Tell watchers (``notifications``) that these runs changed, at commit (Postgres)."""
        if self.dialect != "postgresql":
            return
        # On the driver's connection, inside this transaction: a round trip without
        # SQLAlchemy's statement machinery (a third of a chain step's cost otherwise).
        driver = await driver_connection(conn)
        for run_id in run_ids:
            await driver.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, run_id)
