"""Database URLs and async engines: SQLite through aiosqlite (WAL), Postgres through asyncpg."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .._dburl import DEFAULT_URL, resolve_url, server_connect
from .._errors import ConfigurationError

__all__ = [
    "DEFAULT_URL",
    "is_memory_url",
    "make_engine",
    "on_sqlite_thread",
    "resolve_url",
]

T = TypeVar("T")

_MEMORY_URI = "file:baton_nb_memory_{pid}?mode=memory&cache=shared"
_memory_keeper: dict[int, sqlite3.Connection] = {}
_memory_lock = threading.Lock()


def _driver_url(url: str) -> str:
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    return url


def is_memory_url(url: str) -> bool:
    """True for an in-memory SQLite URL (``sqlite:///:memory:``)."""
    return url.startswith("sqlite") and _is_memory(url)


def _is_memory(url: str) -> bool:
    # Only sqlite:///:memory:; "sqlite://" and "sqlite:///" are refused by resolve_url.
    return url.endswith(":memory:")


def _memory_uri() -> str:
    # A shared-cache in-memory database lives as long as one connection is open: keep one
    # open for the life of the process so runs in ``sqlite:///:memory:`` can be resumed.
    pid = os.getpid()
    uri = _MEMORY_URI.format(pid=pid)
    with _memory_lock:
        if pid not in _memory_keeper:
            _memory_keeper[pid] = sqlite3.connect(uri, uri=True, check_same_thread=False)
    return uri


class _DecimalSum:
    """Exact SUM over decimal strings for SQLite, registered as ``decimal_sum``."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            return
        self.total = amount if self.total is None else self.total + amount

    def finalize(self) -> str | None:
        return None if self.total is None else format(self.total, "f")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """A new SQLite connection's settings, in one call on its own thread (aiosqlite's: a
    round trip to that thread per statement and per cursor was ~20 of them per connection,
    a run opening two; docs/performance.md, "Sixth round")."""
    switched = on_sqlite_thread(dbapi_conn, _prepare_sqlite)
    if not switched:  # WAL could not be switched on in time: SQLAlchemy's usual error
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(_WAL)  # raises the error, wrapped like any other
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()


def on_sqlite_thread(dbapi_conn: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(connection)`` on a DBAPI connection's own ``sqlite3.Connection``: plain sqlite3
    at once; SQLAlchemy's aiosqlite adapter (``dbapi_connection`` of a pooled connection)
    on the connection's thread, in one round trip, from SQLAlchemy's greenlet (a connect
    event, a ``run_sync`` body)."""
    if isinstance(dbapi_conn, sqlite3.Connection):  # plain sqlite3
        return fn(dbapi_conn)
    result: T = dbapi_conn.run_async(lambda conn: conn._execute(fn, conn._conn))
    return result


# WAL + NORMAL survives a killed process (kill -9); only an OS crash can lose the last
# commits, which resume handles like any other interruption.
_WAL = "PRAGMA journal_mode=WAL"
_WAL_WAIT = 10.0  # seconds, like busy_timeout
_WAL_PAUSE = 0.02


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower()


def _prepare_sqlite(conn: sqlite3.Connection) -> bool:
    """On the connection's thread: busy timeout, foreign keys, WAL and NORMAL sync for a
    file database, the ``decimal_sum`` aggregate. False: WAL could not be switched on.

    Switching to WAL needs the database to itself, and SQLite answers "database is locked"
    at once, without its busy handler, while another connection uses it: several runs or
    processes opening a new file together would fail here. Retried for up to ``_WAL_WAIT``
    seconds (once one connection switched, the mode is stored in the file), sleeping on
    this connection's own thread (the event loop goes on).
    """
    conn.execute("PRAGMA busy_timeout=10000").close()
    conn.execute("PRAGMA foreign_keys=ON").close()
    cursor = conn.execute("PRAGMA journal_mode")
    mode = cursor.fetchone()
    cursor.close()
    conn.create_aggregate("decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]  # any value
    if not mode or str(mode[0]).lower() == "memory":
        return True
    deadline = time.monotonic() + _WAL_WAIT
    while True:
        try:
            conn.execute(_WAL).close()
        except sqlite3.Error as exc:
            if _is_locked(exc) and time.monotonic() < deadline:
                time.sleep(_WAL_PAUSE)
                continue
            return False
        break
    conn.execute("PRAGMA synchronous=NORMAL").close()
    return True


# sqlite3 binds an int, float or str as it is, but sends every other value, None included,
# through its adapters: with none registered for the type it asks the protocol for an
# ``__adapt__`` attribute, and the AttributeError it makes (its message formatted) and
# drops costs ~2,000 instructions a None; the runtime binds 5 a call (docs/performance.md,
# "Ninth round: instructions a call"). An adapter registered for NoneType answers first,
# with the same None (bound as NULL, as before). An empty dict's ``get`` returns None for
# any value, as a C function (no Python frame). Registered once, process-wide (sqlite3's
# adapters are), and only where nobody registered one for NoneType already.
_NO_VALUES: dict[object, None] = {}
_NONE_ADAPTER = _NO_VALUES.get


def _adapt_none_cheaply() -> None:
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _NONE_ADAPTER)


class _SqliteCompiled(dict[Any, Any]):
    """SQLAlchemy's cache of compiled statements, one for every SQLite engine of the
    process. An engine's own cache keys each statement by the engine's dialect object, so
    each run's store (an engine of its own on SQLite: ``_shared_engines``) compiled every
    statement it ran again (~1 ms of a run's fixed CPU; docs/performance.md, "Tenth
    round"). Every SQLite engine is made alike here (``make_engine``: no dialect options)
    on the one sqlite3 library of the process, so a statement compiles the same on any of
    them: the key's dialect object is replaced by its class, parameter style and library
    version. Bounded as an engine's own (``query_cache_size``, 500): emptied when full."""

    _SIZE = 500

    @staticmethod
    def _key(key: Any) -> Any:
        dialect = key[0]
        signature = (type(dialect), dialect.paramstyle, dialect.server_version_info)
        return (signature, *key[1:])

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self._SIZE:
            self.clear()
        super().__setitem__(self._key(key), value)


_SQLITE_COMPILED = _SqliteCompiled()


def make_engine(url: str) -> AsyncEngine:
    """An AsyncEngine for a resolved URL (see ``resolve_url``)."""
    engine = _make_engine(url)
    if engine.dialect.name == "sqlite":
        engine.sync_engine._compiled_cache = _SQLITE_COMPILED
    return engine


def _make_engine(url: str) -> AsyncEngine:
    driver_url = _driver_url(url)
    if driver_url.startswith("sqlite+aiosqlite"):
        _adapt_none_cheaply()
        if _is_memory(url):
            engine = create_async_engine(
                "sqlite+aiosqlite:///" + _memory_uri() + "&uri=true",
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
                # The one connection is every checkout's: the pool's rollback when one is
                # given back (after the store's lock is released) would undo another
                # task's open transaction. Each Connection rolls back its own on close.
                pool_reset_on_return=None,
            )
        else:
            path = driver_url.split(":///", 1)[1] if ":///" in driver_url else ""
            if not path:
                raise ConfigurationError(f"sqlite URL {url!r} has no path; use sqlite:///runs.db")
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigurationError(
                    f"cannot open {url!r}: folder {parent!r} does not exist; create it first"
                )
            engine = create_async_engine(driver_url, pool_size=4, max_overflow=4)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    # The query's libpq names (connect_timeout, sslmode, ...) as asyncpg takes them: out of
    # the URL SQLAlchemy reads (it would pass each as an argument asyncpg does not have).
    server = server_connect(url)
    server_url = sa.engine.make_url(driver_url).difference_update_query(server.taken)
    return create_async_engine(
        server_url,
        pool_size=5,
        max_overflow=10,
        connect_args={**server.arguments, "connection_class": _pg_connection_class()},
    )


# Postgres's own types have the same oids on every server (user types start here).
_FIRST_USER_OID = 16384
_pg_class: list[type] = []


def _pg_connection_class() -> type:
    """asyncpg's connection, which looks up the built-in types it has no codec for (arrays
    of int, bool, timestamptz: the store's ``unnest`` statements) once per process and
    server version, not once per connection: that lookup (a recursive catalog query, with
    ``jit`` switched off and on around it) cost ~7 ms of wall on each of the two
    connections every run opens (docs/performance.md, "Seventh round: the run on
    Postgres"). Types of the database's own (oid 16384 up) are looked up as before."""
    if _pg_class:
        return _pg_class[0]
    import asyncpg

    known: dict[Any, dict[int, Any]] = {}  # server version -> oid -> its row

    class _Cached:
        name = "baton_nb_known_types"  # not anonymous: asyncpg re-prepares nothing for it

    class Connection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
        __slots__ = ()

        async def _introspect_types(self, typeoids: Any, *args: Any, **kwargs: Any) -> Any:
            oids = {int(oid) for oid in typeoids}
            if not oids or max(oids) >= _FIRST_USER_OID:
                return await super()._introspect_types(typeoids, *args, **kwargs)
            rows = known.setdefault(self.get_server_version()[:2], {})
            if oids <= rows.keys():
                # every type seen so far (those asked for, the types they are made of)
                return list(rows.values()), _Cached()
            result = await super()._introspect_types(typeoids, *args, **kwargs)
            if isinstance(result, tuple) and len(result) == 2:
                rows.update((int(row["oid"]), row) for row in result[0])
            return result

    _pg_class.append(Connection)
    return Connection
