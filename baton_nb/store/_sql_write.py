"""The SQL store's write path: a run's group commits, and bulk inserts.

Most commits of a run are node updates, stored completions and call stats. On SQLite they
go to aiosqlite's connection directly, as one ``executemany`` per table through statements
compiled once (``_DriverStatement``); on Postgres through SQLAlchemy, with the NOTIFY that
wakes watchers sent in the same transaction.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, NamedTuple

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _jsonutil
from .._errors import StorageError, lease_not_held
from ._failures import driver_errors, storage_error
from ._rows import NODE_UPDATE_FIELDS, NodeRow, RunUpdate, WriteBatch
from ._sql_base import NOTIFY_CHANNEL, SqlBase, driver_connection
from ._sql_rows import (
    ATTEMPTS,
    COMPLETIONS,
    LOGS,
    NODES,
    RUNS,
    STATS,
    STEP_WORKERS,
    attempt_to_columns,
    call_to_columns,
    completion_to_columns,
    deps_text,
    log_to_columns,
    node_to_columns,
    step_worker_to_columns,
)

__all__ = [
    "SqlWrites",
    "guard_lease",
    "insert_nodes_unnest",
    "json_each_insert",
    "lease_cte",
    "nodes_unnest",
    "pg_param",
    "sqlite_lease_held",
]

_UPDATE_NODE = (
    sa.update(NODES)
    .where(NODES.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(f"b_{name}") for name in NODE_UPDATE_FIELDS})
)
# WriteBatch.nodes rows are tuples in this order; these are their _UPDATE_NODE parameters.
_UPDATE_NODE_PARAMS = tuple(f"b_{name}" for name in (*NODE_UPDATE_FIELDS, "id"))
# The same update for many nodes in one Postgres statement (``_write_pg_statement``, its
# first part): the columns of ``WriteBatch.nodes`` with their types; ``_update_nodes_pg``.
_UPDATE_NODES_PG_TYPES = (
    "text", "int", "text", "text", "bool", "int", "timestamptz", "timestamptz", "timestamptz", "int"
)  # fmt: skip
_INSERT_NODE = sa.insert(NODES)
_INSERT_COMPLETION = sa.insert(COMPLETIONS)
_INSERT_STAT = sa.insert(STATS)
_UNSEEN: Any = object()
# Parameters that hold a str enum (State, NodeKind): sqlite3 binds a str subclass through
# its adaptation protocol, twice the cost of a str; the driver gets the plain value.
_ENUM_PARAMS = frozenset({"state", "kind", "b_state"})
_JSON_ATTRS = frozenset({"deps"})  # NodeRow.deps: a list, stored as JSON text
_NODE_COLUMNS = tuple(c.name for c in NODES.columns if c.name != "id")


def _enum_text(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


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
    # The same statement for many rows at once: ``head + ", ".join([row] * n) + tail``
    # (``_multi_row``); None where SQLite cannot (UPDATE ... FROM before 3.33).
    multi: tuple[str, str, str] | None = None

    @classmethod
    def compile(
        cls,
        statement: sa.Insert | sa.Update,
        dialect: sa.Dialect,
        keys: Sequence[str],
        *,
        shape: str,
    ) -> _DriverStatement:
        """``keys``: the parameters the rows have; ``shape``: ``tuple`` (rows hold them in
        that order), ``mapping`` (rows are mappings of those keys) or ``attrs`` (rows are
        objects with those attributes: typed rows, no dict made per row)."""
        tuples = shape == "tuple"
        compiled = statement.compile(dialect=dialect, column_keys=None if tuples else list(keys))
        names = compiled.positiontup
        assert names is not None and len(names) > 1 and dialect.paramstyle == "qmark"
        if not set(names) <= set(keys):
            raise ValueError(f"rows lack parameters of {compiled.string!r}")
        processors = []
        for position, name in enumerate(names):
            impl = compiled.binds[name].type.dialect_impl(dialect)
            processor: Callable[[Any], Any] | None = impl.bind_processor(dialect)
            if processor is None and name in _ENUM_PARAMS:
                processor = _enum_text
            if shape == "attrs" and name in _JSON_ATTRS:  # lists of the typed row, as JSON
                processor = deps_text
            if processor is not None:
                processors.append((position, processor))
        if shape == "attrs":
            order: Callable[[Any], Any] = operator.attrgetter(*names)
        else:
            order = operator.itemgetter(
                *([list(keys).index(n) for n in names] if tuples else names)
            )
        return cls(
            compiled.string, order, tuple(processors), _multi_sql(statement, compiled.string, names)
        )

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
        await (await driver_connection(conn)).executemany(self.sql, self.params(rows))


# Parameters in one multi-row statement (SQLite's default SQLITE_MAX_VARIABLE_NUMBER since
# 3.32, else 999), and rows in one (a VALUES list is not bound by the compound-select limit
# since 3.8.8; kept well below it anyway).
_MAX_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
_MAX_ROWS = 500
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM

# (sql, parameters, executemany?): what one commit runs on aiosqlite's thread
_Statement = tuple[str, list[Any], bool]


def _multi_sql(
    statement: sa.Insert | sa.Update, sql: str, names: Sequence[str]
) -> tuple[str, str, str] | None:
    """``head``, ``row`` and ``tail`` of ``statement`` (compiled: ``sql``, its parameters
    ``names`` in order) for many rows: an INSERT's VALUES list, or an UPDATE of nodes by
    id (``b_`` parameters) from a VALUES list."""
    row = "(" + ", ".join("?" * len(names)) + ")"
    if isinstance(statement, sa.Insert):
        head, values, one = sql.partition(" VALUES ")
        assert values and one == row, sql
        return head + values, row, ""
    if not _UPDATE_FROM:
        return None
    table = statement.table
    aliases = [f"c{i}" for i in range(len(names))]
    pairs = zip(names, aliases, strict=True)
    sets = ", ".join(f"{table.c[n[2:]].name} = v.{a}" for n, a in pairs if n != "b_id")
    where = aliases[list(names).index("b_id")]
    head = f"WITH v({', '.join(aliases)}) AS (VALUES "
    name = table.name  # type: ignore[union-attr]
    return head, row, f") UPDATE {name} SET {sets} FROM v WHERE {name}.id = v.{where}"


def _multi_row(statement: _DriverStatement, rows: Sequence[Any]) -> list[_Statement]:
    """``statement`` for ``rows``: a few multi-row statements (one step each), or one
    executemany where SQLite has no multi-row form of it."""
    params = statement.params(rows)
    if statement.multi is None:
        return [(statement.sql, params, True)]
    head, row, tail = statement.multi
    width = len(params[0])
    size = max(1, min(_MAX_ROWS, _MAX_PARAMS // width))
    out: list[_Statement] = []
    for start in range(0, len(params), size):
        chunk = params[start : start + size]
        sql = head + ", ".join([row] * len(chunk)) + tail
        out.append((sql, list(itertools.chain.from_iterable(chunk)), False))
    return out


class _NotHeld(Exception):
    """The lease guard of a commit on aiosqlite's thread found the lease not held."""


def sqlite_lease_held(connection: sqlite3.Connection, run_id: str | None, owner: str) -> bool:
    """On aiosqlite's thread, in a transaction begun IMMEDIATE: whether ``owner`` holds
    ``run_id``'s lease (``guard_lease``'s check, there)."""
    return connection.execute(_GUARD_SQLITE, (run_id, owner)).fetchone() is not None


def _execute_and_commit(
    connection: sqlite3.Connection,
    statements: Sequence[_Statement],
    guard: tuple[str | None, str] | None = None,
) -> None:
    """On aiosqlite's thread: the statements and the commit, in one transaction (a
    failure leaves it open: the caller rolls it back). Begun here: sqlite3 begins one by
    itself only before a statement that starts with INSERT, UPDATE, DELETE or REPLACE,
    not before ``WITH ... UPDATE``, which would commit on its own. ``guard`` (run id,
    lease owner): begun IMMEDIATE, then the lease guard (``_GUARD_SQLITE``); not held,
    ``_NotHeld``."""
    if not connection.in_transaction:
        connection.execute("BEGIN" if guard is None else "BEGIN IMMEDIATE")
    if guard is not None and not sqlite_lease_held(connection, *guard):
        raise _NotHeld
    for sql, params, many in statements:
        if many:
            connection.executemany(sql, params)
        else:
            connection.execute(sql, params)
    connection.commit()


class _NodeColumn(NamedTuple):
    """A node column's values for one bulk insert, through its bind processor: one value if
    every row holds the same (``constant``), else one per row."""

    name: str
    type_sql: str  # the column's type for the dialect, as SQL
    constant: bool
    value: Any


_Bind = tuple[Callable[[Any], Any] | None, str]  # a column's bind processor, its SQL type


def _column_bind(dialect: sa.Dialect, column: sa.Column[Any]) -> _Bind:
    """``column``'s bind processor and type as SQL for ``dialect``, looked up once per
    column (of the module's tables, kept for the process: an id is not reused) and
    dialect: a run's rows and its end (~20 columns each), each map chunk and new run
    looked them up at every statement (~0.3 ms a chunk on Postgres)."""
    key = (id(column), dialect.name)  # a Column's == makes SQL, not a bool
    found = _BINDS.get(key)
    if found is None:
        kind = column.type.dialect_impl(dialect)
        found = _BINDS[key] = (kind.bind_processor(dialect), kind.compile(dialect=dialect))
    return found


_BINDS: dict[tuple[int, str], _Bind] = {}


def _node_kinds(dialect: sa.Dialect) -> Iterator[tuple[str, Callable[[Any], Any] | None, str]]:
    """Each node column's name, what makes its values parameters, and its type as SQL."""
    for name in _NODE_COLUMNS:
        process, type_sql = _column_bind(dialect, NODES.c[name])
        if name in _JSON_ATTRS:  # NodeRow.deps: a list, stored as JSON text
            process = deps_text
        elif name in _ENUM_PARAMS:
            process = _enum_text
        yield name, process, type_sql


def _node_columns(dialect: sa.Dialect, nodes: Sequence[NodeRow]) -> Iterator[_NodeColumn]:
    """The columns of new node rows for the two bulk inserts (unnest, json_each). ``step``
    is never constant: its values make the rows (a single row is still one row)."""
    for name, process, type_sql in _node_kinds(dialect):
        # one column at a time: 5x faster than transposing rows of 20 values with zip
        values = list(map(operator.attrgetter(name), nodes))
        first = values[0]
        if name != "step" and values.count(first) == len(values):
            value = first if process is None else process(first)
            yield _NodeColumn(name, type_sql, True, value)
        else:
            processed = values if process is None else _processed(values, process)
            yield _NodeColumn(name, type_sql, False, processed)


async def insert_nodes_unnest(conn: AsyncConnection, nodes: Sequence[NodeRow]) -> dict[str, int]:
    """Postgres: new node rows as one ``INSERT ... SELECT ... FROM unnest(...)`` on the
    driver (``nodes_unnest``), in ``conn``'s transaction; returns step name -> node id."""
    params: list[Any] = []
    sql = nodes_unnest(conn.dialect, nodes, params) + " RETURNING step, id"
    found = await (await driver_connection(conn)).fetch(sql, *params)
    return {step: int(node_id) for step, node_id in found}


def nodes_unnest(dialect: sa.Dialect, nodes: Sequence[NodeRow], params: list[Any]) -> str:
    """Postgres: new node rows as one ``INSERT ... SELECT ... FROM unnest(...) AS u(...)``
    (no RETURNING: the caller adds it, or a condition first), its parameters appended to
    ``params``.

    SQLAlchemy's insertmanyvalues builds parameters row by row in Python (1.7 s of CPU and
    100 round trips for a 100,000-item map). Here: one statement, one round trip; a column
    whose rows all hold the same value is one parameter, the others one array each (map
    children differ only in step and item_index), through the same bind processors.
    """
    selected: list[str] = []
    arrays: list[str] = []
    for column in _node_columns(dialect, nodes):
        pg_type = column.type_sql
        params.append(column.value)
        if column.constant:
            selected.append(f"${len(params)}::{pg_type}")
        else:
            arrays.append(f"${len(params)}::{pg_type}[]")
            selected.append(f"u.c{len(arrays)}")
    aliases = ", ".join(f"c{i + 1}" for i in range(len(arrays)))
    # The ids read back (RETURNING): computing them instead, once the server checked that
    # the rows took consecutive ids in their order (a join of the rows with the names'
    # array), cost the server more than the client saved decoding them (16,000 rows:
    # 0.21-0.32 s against 0.13-0.21 s, measured 2026-12-06).
    return (
        f"INSERT INTO {NODES.name} ({', '.join(_NODE_COLUMNS)}) SELECT {', '.join(selected)} "
        f"FROM unnest({', '.join(arrays)}) AS u({aliases})"
    )


def pg_param(dialect: sa.Dialect, column: sa.Column[Any], value: Any, params: list[Any]) -> str:
    """Postgres: ``value`` for ``column`` appended to ``params`` through the column's bind
    processor; its typed parameter marker (``$n::type``)."""
    process, type_sql = _column_bind(dialect, column)
    params.append(value if process is None else process(value))
    return f"${len(params)}::{type_sql}"


# Below this many rows an executemany costs less than building one JSON document.
_JSON_EACH_FROM = 256


def json_each_insert(dialect: sa.Dialect, nodes: Sequence[NodeRow]) -> tuple[str, list[Any]]:
    """SQLite: many new node rows as one ``INSERT ... SELECT ... FROM json_each(?)``, and
    its parameters (the twin of ``insert_nodes_unnest``).

    An executemany binds every column of every row from Python (0.6 s of CPU for a
    100,000-item map, before SQLite's own work). Here a column whose rows all hold the same
    value is one parameter, and the others (map children: step and item_index) one JSON
    array of rows that SQLite reads itself, through the same bind processors; ids are given
    in the array's order, as with the executemany.
    """
    selected: list[str] = []
    constants: list[Any] = []
    varying: list[list[Any]] = []
    for column in _node_columns(dialect, nodes):
        if column.constant:
            constants.append(column.value)
            selected.append("?")
        else:
            selected.append(f"json_extract(value, '$[{len(varying)}]')")
            varying.append(column.value)
    document = _jsonutil.dumps(list(zip(*varying, strict=True)))
    sql = (
        f"INSERT INTO {NODES.name} ({', '.join(_NODE_COLUMNS)}) "
        f"SELECT {', '.join(selected)} FROM json_each(?) ORDER BY key"
    )
    return sql, [*constants, document]


def _update_nodes_pg(rows: Sequence[Any], params: list[Any]) -> str:
    """Postgres: ``WriteBatch.nodes`` rows as one ``UPDATE ... FROM unnest(...)``, its
    parameters appended to ``params`` (a column every row holds the same value in: one
    parameter, ``_fold``); ends in its WHERE."""
    columns = list(zip(*rows, strict=True))
    first = len(params) + 1
    folded = _fold(columns, params, keep=len(columns) - 1)  # id: the rows' join key
    sql = _UPDATE_NODES_SQL.get(folded)
    if sql is None:
        values, source = _unnest_source(_UPDATE_NODES_PG_TYPES, folded)
        sets = ", ".join(f"{n} = {v}" for n, v in zip(NODE_UPDATE_FIELDS, values[:-1], strict=True))
        sql = f"UPDATE {NODES.name} n SET {sets} FROM {source} WHERE n.id = {values[-1]}"
        _UPDATE_NODES_SQL[folded] = sql
    return sql.format(*range(first, first + len(columns)))


def _unnest_source(types: Sequence[str], folded: tuple[bool, ...]) -> tuple[list[str], str]:
    """Each column's value in a statement over many rows (``_fold``'s parameters numbered
    from 0, for ``str.format``): ``$n::type`` if folded, else ``u.cN`` read from the
    ``unnest(...) AS u(...)`` of the arrays, which is returned too."""
    values, arrays, aliases = [], [], []
    for i, (kind, one) in enumerate(zip(types, folded, strict=True)):
        marker = "${" + str(i) + "}::" + kind  # names and types hold no braces
        if one:
            values.append(marker)
        else:
            arrays.append(marker + "[]")
            aliases.append(f"c{i}")
            values.append(f"u.c{i}")
    return values, f"unnest({', '.join(arrays)}) AS u({', '.join(aliases)})"


# which columns of ``_update_nodes_pg`` are folded -> its SQL (parameter numbers to fill in)
_UPDATE_NODES_SQL: dict[tuple[bool, ...], str] = {}
# Values that compare equal but are stored differently (Decimal 0.0 and 0.00, float 0.0 and
# -0.0): folded only when the rows hold the same object.
_INEXACT = (float, Decimal)


def _fold(columns: Sequence[Sequence[Any]], params: list[Any], keep: int) -> tuple[bool, ...]:
    """Each column's parameter appended to ``params``: its one value if every row holds the
    same (folded: sent once, not once per row), else its values as an array; which were
    folded. Column ``keep`` is never folded: the statement makes one row per element of
    its array (identical rows are still so many rows).

    Why: asyncpg encodes an array element by element in Python (each checked against
    ``collections.abc``, docs/performance.md, "Eighth round: the run on Postgres") and the
    server parses each; most columns of an answer's stats row, and some of its node
    update's, hold the same value in every row of a commit (the run, the model, the
    prices, zero token counts)."""
    folded = []
    for i, values in enumerate(columns):
        first = values[0]
        same = (
            i != keep
            and values.count(first) == len(values)
            and (
                all(v is first for v in values)
                if isinstance(first, _INEXACT)
                else len(set(map(type, values))) == 1
            )
        )
        params.append(first if same else values)
        folded.append(same)
    return tuple(folded)


def _unnest_insert(
    dialect: sa.Dialect, table: sa.Table, rows: Sequence[Mapping[str, Any]], params: list[Any]
) -> str:
    """Postgres: ``rows`` (column -> value) as one ``INSERT ... SELECT ... FROM unnest``,
    through the bind processors: one array parameter per column, or one value for a column
    every row holds the same value in (``_fold``), appended to ``params``."""
    keys = tuple(rows[0])
    shape = _unnest_shape(dialect, table, keys)
    columns = []
    for key, process in zip(keys, shape.processors, strict=True):
        values = [row.get(key) for row in rows]
        columns.append(values if process is None else _processed(values, process))
    first = len(params) + 1
    folded = _fold(columns, params, keep=shape.keep)
    sql = shape.sql.get(folded)
    if sql is None:
        selected, source = _unnest_source(shape.types, folded)
        sql = f"INSERT INTO {table.name} ({', '.join(keys)}) SELECT {', '.join(selected)} "
        sql += f"FROM {source}"
        shape.sql[folded] = sql
    return sql.format(*range(first, first + len(keys)))


class _UnnestShape(NamedTuple):
    """A table's ``_unnest_insert`` for one set of columns: each column's SQL type and bind
    processor, the column never folded (``_fold``: one that varies most), and its SQL per
    set of folded columns, with the parameter numbers left to fill in (``str.format``)."""

    types: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    keep: int
    sql: dict[tuple[bool, ...], str]


# (dialect, table, columns) -> shape: the column types compiled and their bind processors
# made once, not on every commit (~0.06 ms a commit of three tables otherwise).
_UNNEST_SHAPES: dict[tuple[str, str, tuple[str, ...]], _UnnestShape] = {}


def _unnest_shape(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> _UnnestShape:
    cache_key = (dialect.name, table.name, keys)
    found = _UNNEST_SHAPES.get(cache_key)
    if found is not None:
        return found
    types = []
    processors = []
    for key in keys:
        kind = table.c[key].type.dialect_impl(dialect)
        processors.append(kind.bind_processor(dialect))
        types.append(kind.compile(dialect=dialect))
    keep = keys.index("step") if "step" in keys else 0
    found = _UnnestShape(tuple(types), tuple(processors), keep, {})
    _UNNEST_SHAPES[cache_key] = found
    return found


def _update_run_pg(dialect: sa.Dialect, update: RunUpdate, params: list[Any]) -> str:
    """Postgres: the run row's UPDATE for ``update`` (``_run_values``), its parameters
    appended to ``params`` through the columns' bind processors; ends in its WHERE."""
    sets = ", ".join(
        f"{name} = {pg_param(dialect, RUNS.c[name], value, params)}"
        for name, value in _run_values(update).items()
    )
    params.append(update.id)
    return f"UPDATE {RUNS.name} SET {sets} WHERE id = ${len(params)}"


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


def _guarded_statement(parts: Sequence[str], n: int) -> str:
    """``_write_pg_statement``'s statement under the lease guard (parameters ``$n-3``,
    ``$n-2``: run id and owner; ``$n-1``, ``$n``: the NOTIFY's), still one round trip.

    The ``lease`` CTE locks the run's row FOR SHARE while ``owner`` holds its lease (a
    takeover's UPDATE waits for this statement's transaction; one that committed while
    this waited is seen: the row re-checked, no row). Every write depends on it (a
    data-modifying CTE always runs, referenced or not): nothing is written, nor notified,
    without it, and the statement returns whether it held."""
    held = "EXISTS (SELECT 1 FROM lease)"
    lease = lease_cte(f"${n - 3}", f"${n - 2}")
    guarded = []
    for i, part in enumerate(parts):
        # _update_nodes_pg ends in its WHERE; _unnest_insert in ``FROM unnest(...) AS u(...)``
        joiner = "AND" if part.startswith("UPDATE") else "WHERE"
        guarded.append(f"w{i} AS ({part} {joiner} {held})")
    return (
        f"WITH {lease}, {', '.join(guarded)} SELECT {held} AS held, (SELECT count(pg_notify("
        f"${n - 1}, k)) FROM unnest(${n}::text[]) AS k WHERE {held}) AS notified"
    )


class _ConnectionWriter:
    """A run's writer: one connection held for all its commits (no pool checkout each)."""

    def __init__(self, store: SqlWrites, conn: AsyncConnection) -> None:
        # ``write_on`` itself, bound: no coroutine of its own around each commit
        self.write: Callable[[WriteBatch], Coroutine[Any, Any, None]] = partial(
            store.write_on, conn
        )


# The run row's UPDATE on the driver (``_write_sqlite_driver``), per set of parameters
# (``b_id`` and ``b_`` + each column of ``_run_values``): made once each.
_RUN_UPDATES: dict[tuple[str, ...], sa.Update] = {}


def _run_update(names: tuple[str, ...]) -> sa.Update:
    found = _RUN_UPDATES.get(names)
    if found is None:
        values: dict[str, Any] = {name[2:]: sa.bindparam(name) for name in names if name != "b_id"}
        found = sa.update(RUNS).where(RUNS.c.id == sa.bindparam("b_id")).values(values)
        _RUN_UPDATES[names] = found
    return found


def _run_values(update: RunUpdate) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": update.status.value,
        "failed_steps": _jsonutil.dumps(list(update.failed_steps)),
        "finished_at": update.finished_at,
        "stopped_by": update.stopped_by,
    }
    if update.executions is not None:
        values["executions"] = update.executions
    if update.resume_key is not None:
        values["resume_key"] = update.resume_key
    if update.started_at is not None:
        values["started_at"] = update.started_at
    if update.release_lease:
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    return values


# The lease guard of a commit (``WriteBatch.owner``), the first statement of its
# transaction. SQLite: the transaction begun IMMEDIATE (it takes the database's write
# lock at once: no takeover commits between the check and the writes, and the read is
# of the newest data) and the run's row read; Postgres: FOR SHARE, which makes a
# takeover's UPDATE of the row wait for this commit, and which re-reads the row (READ
# COMMITTED) when a takeover committed while it waited (no row then: not held).
def _lease_row(run_id: str, owner: str, *, or_finished: bool = False) -> str:
    """The run's row while ``owner`` holds its lease (``or_finished``: or once the run is
    finished, its end having given the lease back), with these parameter markers."""
    held = f"lease_owner = {owner}"
    if or_finished:
        held = f"({held} OR (lease_owner IS NULL AND status NOT IN ('pending', 'running')))"
    return f"SELECT 1 FROM workflow_runs WHERE id = {run_id} AND {held}"


def lease_cte(run_id: str, owner: str, *, or_finished: bool = False) -> str:
    """A Postgres CTE ``lease``: ``_lease_row`` locked FOR SHARE, which a statement's writes
    depend on (``_guarded_statement``, the workers' queue changes)."""
    return f"lease AS ({_lease_row(run_id, owner, or_finished=or_finished)} FOR SHARE)"


_GUARD_SQLITE = _lease_row("?", "?")
_GUARD_PG = f"{_lease_row('$1', '$2')} FOR SHARE"


async def guard_lease(conn: AsyncConnection, run_id: str | None, owner: str | None) -> None:
    """In ``conn``'s transaction, before its writes: ``RunLocked`` unless ``owner`` holds
    ``run_id``'s lease (the transaction is then rolled back: nothing of it written). Held
    until the transaction ends: a takeover waits for it."""
    if owner is None:
        return
    if conn.dialect.name == "sqlite":
        driver = await driver_connection(conn)
        # sqlite3 has begun no transaction yet (it does so before the first write): begun
        # here, IMMEDIATE; SQLAlchemy's commit or rollback ends it as it would have.
        if not driver.in_transaction:
            await driver.execute("BEGIN IMMEDIATE")
        held = bool(await driver.execute_fetchall(_GUARD_SQLITE, (run_id, owner)))
    else:
        # Through SQLAlchemy, which sends BEGIN before its first statement: on the driver's
        # own connection the check ran before that BEGIN, in a transaction of its own, and
        # its row lock ended before the writes it guards.
        result = await conn.exec_driver_sql(_GUARD_PG, (run_id, owner))
        held = result.first() is not None
    if not held:
        raise lease_not_held(run_id, owner)


# ``_DriverStatement``s of the process, by statement, row shape and SQLite dialect: each
# store has an engine of its own on SQLite (``_shared_engines``), so a per-store cache
# compiled the runtime's ~6 statements again on every run, ~3 ms of CPU of a run's fixed
# cost (docs/performance.md, "Tenth round: the fixed cost of a run"). Every SQLite engine
# is made alike (``make_engine``: no dialect options) on the one sqlite3 library of the
# process, so a statement compiles to the same SQL and bind processors on any of them:
# the key holds the dialect's class, parameter style and library version, and the
# statement itself (the module's statements, kept for the process: its id is not reused).
_COMPILED: dict[tuple[Any, ...], tuple[sa.Insert | sa.Update, _DriverStatement]] = {}


def _driver_statement_of(
    statement: sa.Insert | sa.Update, dialect: sa.Dialect, keys: tuple[str, ...], shape: str
) -> _DriverStatement:
    signature = (type(dialect), dialect.paramstyle, dialect.server_version_info)
    cache_key = (id(statement), keys, shape, signature)
    found = _COMPILED.get(cache_key)
    if found is None or found[0] is not statement:
        found = (statement, _DriverStatement.compile(statement, dialect, keys, shape=shape))
        _COMPILED[cache_key] = found
    return found[1]


class SqlWrites(SqlBase):
    """Group commits and bulk inserts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._driver_statements: dict[Any, _DriverStatement] = {}

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[_ConnectionWriter]:
        """A connection to hold for a run's writes (its transactions serialised in
        ``write_on``)."""
        async with self.failures("write to"), self.engine.connect() as conn:
            yield _ConnectionWriter(self, conn)

    async def write(self, batch: WriteBatch) -> None:
        """Commit node updates, run status, stored completions, stats and logs together
        (as a writer's ``write_on``: SQLite's usual batch in one round trip, a run's end
        included)."""
        async with self.failures("write to"), self.engine.connect() as conn:
            await self.write_on(conn, batch)

    async def write_on(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """``write`` on a connection held for many writes (``writer``). A database failure
        raises ``StorageError`` (as ``failures`` does: a try block here, no context
        manager around every commit of a run)."""
        try:
            async with self.serialised():
                if self._driver_commit_fits(conn, batch):
                    await self._write_sqlite_driver(conn, batch)
                    return
                if self._pg_statement_fits(conn, batch):
                    await self._write_pg_statement(conn, batch)
                    return
                async with conn.begin():
                    await self._write(conn, batch)
        except StorageError:
            raise
        except driver_errors() as exc:
            raise storage_error(exc, self.url, "write to") from exc

    def _driver_commit_fits(self, conn: AsyncConnection, batch: WriteBatch) -> bool:
        """The runtime's usual SQLite batch: node updates, stored completions, call stats,
        the run's row (its end); no logs, no transaction open."""
        return (
            self.dialect == "sqlite"
            and bool(batch.nodes or batch.completions or batch.stats or batch.run)
            and not (batch.logs or batch.attempts or batch.ran_on)
            and not conn.in_transaction()
        )

    def _pg_statement_fits(self, conn: AsyncConnection, batch: WriteBatch) -> bool:
        """The runtime's usual Postgres batch (node updates, stored completions, call stats,
        which worker ran the attempts a coordinator ran itself: a coordinator's commits, a
        worker's calls; the run's row: its end), no transaction open."""
        return (
            self.dialect == "postgresql"
            and bool(batch.nodes or batch.completions or batch.stats or batch.ran_on or batch.run)
            and not (batch.logs or batch.attempts)
            and not conn.in_transaction()
        )

    async def _write_pg_statement(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """Such a batch and its NOTIFY in ONE statement on asyncpg (its own transaction):
        one round trip where BEGIN, each table's statement, NOTIFY and COMMIT took four to
        six (a round trip costs more CPU than the rows in it on a loaded machine); a run's
        end too (it took BEGIN, the guard, the update, NOTIFY and COMMIT)."""
        dialect = conn.dialect
        params: list[Any] = []
        parts: list[str] = []
        if batch.nodes:
            parts.append(_update_nodes_pg(batch.nodes, params))
        if batch.completions:
            rows = [completion_to_columns(c) for c in batch.completions]
            parts.append(_unnest_insert(dialect, COMPLETIONS, rows, params))
        if batch.stats:
            rows = [call_to_columns(c) for c in batch.stats]
            parts.append(_unnest_insert(dialect, STATS, rows, params))
        if batch.ran_on:
            rows = [step_worker_to_columns(r) for r in batch.ran_on]
            parts.append(_unnest_insert(dialect, STEP_WORKERS, rows, params))
        if batch.run is not None:  # the run's end, under the batch's lease guard
            parts.append(_update_run_pg(dialect, batch.run, params))
        notify = [NOTIFY_CHANNEL, sorted(batch.run_ids())]
        driver = await driver_connection(conn)
        if batch.owner is None:
            ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts))
            n = len(params) + 2
            sql = f"WITH {ctes} SELECT pg_notify(${n - 1}, k) FROM unnest(${n}::text[]) AS k"
            await driver.execute(sql, *params, *notify)
            return
        params += [batch.run_id, batch.owner, *notify]
        if not await driver.fetchval(_guarded_statement(parts, len(params)), *params):
            raise lease_not_held(batch.run_id, batch.owner)

    async def _write_sqlite_driver(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """Most runtime commits, on aiosqlite directly, in one round trip to its thread.

        sqlite3 begins the transaction before the first statement; committed (or rolled
        back) there, where SQLAlchemy, which has no transaction open on ``conn``, would
        only forward the same call: a chain step's commit, or LLM answers with their
        stats, as one multi-row statement per table (``_multi_row``) and the commit.

        Why one round trip and few statements (docs/performance.md, issue 16): sqlite3
        releases the GIL around every row's step, and aiosqlite's thread gets it back only
        when the event loop lets go of it (at the latest after the 5 ms switch interval).
        With the loop busy (1,000 calls in flight), an executemany per table waited ~5 ms
        per row, and each round trip a loop iteration: commits took tens of ms, and an
        LLM call's slot is held until its answer is committed.
        """
        driver = await driver_connection(conn)
        statements = [
            *self._update_nodes_sqlite(conn, batch.nodes),
            *self._insert_sqlite(
                conn, _INSERT_COMPLETION, [completion_to_columns(c) for c in batch.completions]
            ),
            *self._insert_sqlite(conn, _INSERT_STAT, [call_to_columns(c) for c in batch.stats]),
        ]
        if batch.run is not None:  # under the batch's lease guard, as in ``_write``
            values = {f"b_{k}": v for k, v in _run_values(batch.run).items()}
            values["b_id"] = batch.run.id
            update = _run_update(tuple(values))
            statement = self._driver_statement(update, conn.dialect, list(values), "mapping")
            statements.append((statement.sql, statement.params([values])[0], False))
        guard = None if batch.owner is None else (batch.run_id, batch.owner)
        try:
            await driver._execute(_execute_and_commit, driver._conn, statements, guard)
        except BaseException as exc:
            with anyio.CancelScope(shield=True), suppress(Exception):  # keep the first error
                await driver.rollback()
            if isinstance(exc, _NotHeld) and batch.owner is not None:
                raise lease_not_held(batch.run_id, batch.owner) from None
            raise

    def _update_nodes_sqlite(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[_Statement]:
        """``WriteBatch.nodes`` rows (tuples) as multi-row UPDATE statements."""
        if not rows:
            return []
        names = _UPDATE_NODE_PARAMS
        statement = self._driver_statement(_UPDATE_NODE, conn.dialect, names, "tuple")
        return _multi_row(statement, rows)

    def _insert_sqlite(
        self, conn: AsyncConnection, insert: sa.Insert, rows: Sequence[Mapping[str, Any]]
    ) -> list[_Statement]:
        """Rows of one shape as multi-row INSERT statements (their values through the same
        bind processors as ``insert_rows``)."""
        if not rows:
            return []
        if not _one_shape(rows):
            return [
                stmt
                for row in rows
                for stmt in _multi_row(
                    self._driver_statement(insert, conn.dialect, list(row.keys()), "mapping"),
                    [row],
                )
            ]
        statement = self._driver_statement(insert, conn.dialect, list(rows[0].keys()), "mapping")
        return _multi_row(statement, rows)

    async def _write_step_rows(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """Node updates, stored completions and call stats: what most commits hold."""
        if batch.nodes:
            await self._update_nodes(conn, batch.nodes)
        if batch.completions:
            rows = [completion_to_columns(c) for c in batch.completions]
            await self.insert_rows(conn, _INSERT_COMPLETION, rows)
        if batch.stats:
            await self.insert_rows(conn, _INSERT_STAT, [call_to_columns(c) for c in batch.stats])

    async def _write(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        await guard_lease(conn, batch.run_id, batch.owner)
        await self._write_step_rows(conn, batch)
        if batch.run is not None:  # under the batch's lease guard (``guard_lease``) above
            values = _run_values(batch.run)
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == batch.run.id).values(values))
        if batch.logs:
            await conn.execute(sa.insert(LOGS), [log_to_columns(log) for log in batch.logs])
        if batch.attempts:
            rows = [attempt_to_columns(a) for a in batch.attempts]
            await conn.execute(sa.insert(ATTEMPTS), rows)
        if batch.ran_on:
            rows = [step_worker_to_columns(r) for r in batch.ran_on]
            await conn.execute(sa.insert(STEP_WORKERS), rows)
        await self.notify(conn, batch.run_ids())

    def _driver_statement(
        self,
        statement: sa.Insert | sa.Update,
        dialect: sa.Dialect,
        keys: Sequence[str],
        shape: str,
    ) -> _DriverStatement:
        """``_DriverStatement.compile``, once per statement and row shape for this store,
        and once per process for the SQLite dialect (``_driver_statement_of``)."""
        cache_key = (id(statement), tuple(keys), shape)
        found = self._driver_statements.get(cache_key)
        if found is None:
            found = self._driver_statements[cache_key] = _driver_statement_of(
                statement, dialect, tuple(keys), shape
            )
        return found

    async def _update_nodes(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """``WriteBatch.nodes`` rows (tuples): on SQLite one executemany on the driver."""
        if self.dialect == "sqlite":
            names = _UPDATE_NODE_PARAMS
            statement = self._driver_statement(_UPDATE_NODE, conn.dialect, names, "tuple")
            await statement.executemany(conn, rows)
            return
        params = [dict(zip(_UPDATE_NODE_PARAMS, row, strict=True)) for row in rows]
        await conn.execute(_UPDATE_NODE, params)

    async def insert_rows(
        self, conn: AsyncConnection, insert: sa.Insert, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Bulk inserts of the runtime (nodes, stored completions, call stats): on SQLite one
        executemany on the driver (the values through SQLAlchemy's bind processors, as
        ``conn.execute`` sends them), without the statement machinery per commit and row."""
        if self.dialect == "sqlite" and _one_shape(rows):
            keys = list(rows[0].keys())
            statement = self._driver_statement(insert, conn.dialect, keys, "mapping")
            await statement.executemany(conn, rows)
            return
        await conn.execute(insert, [dict(r) for r in rows])

    async def insert_node_rows(self, conn: AsyncConnection, nodes: Sequence[NodeRow]) -> None:
        """New nodes: on SQLite one executemany straight from the typed rows (a map's many
        children: one statement reading them from JSON: ``sqlite_node_insert``)."""
        if self.dialect == "sqlite":
            sql, params, many = self.sqlite_node_insert(conn.dialect, nodes)
            driver = await driver_connection(conn)
            await (driver.executemany(sql, params) if many else driver.execute(sql, params))
            return
        await conn.execute(_INSERT_NODE, [node_to_columns(n) for n in nodes])

    def sqlite_node_insert(self, dialect: sa.Dialect, nodes: Sequence[NodeRow]) -> _Statement:
        """SQLite: new node rows as one statement (sql, parameters, executemany or not)."""
        if len(nodes) >= _JSON_EACH_FROM:
            sql, params = json_each_insert(dialect, nodes)
            return sql, params, False
        statement = self._driver_statement(_INSERT_NODE, dialect, _NODE_COLUMNS, "attrs")
        return statement.sql, statement.params(nodes), True
