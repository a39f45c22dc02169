"""Versioned, idempotent schema creation and upgrade."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._errors import SchemaVersionError
from ._engine import on_sqlite_thread
from ._tables import SchemaVersion, metadata, sqlite_text
from ._worker_tables import WorkflowSubmission, WorkflowTask, WorkflowWorker

__all__ = ["SCHEMA_VERSION", "ensure_schema"]


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)
    for stmt in (
        "CREATE INDEX IF NOT EXISTS ix_stats_run_step ON workflow_step_stats (run_id, step)",
        "CREATE INDEX IF NOT EXISTS ix_logs_run_step ON workflow_debug_logs (run_id, step)",
        "CREATE INDEX IF NOT EXISTS ix_runs_status_created ON workflow_runs (status, created_at)",
    ):
        conn.exec_driver_sql(stmt)


def _v2(conn: Connection) -> None:
    """Indexes for reports across runs (GROUP BY run, step, model) and run listings."""
    for stmt in (
        "CREATE INDEX IF NOT EXISTS ix_stats_run_step_model "
        "ON workflow_step_stats (run_id, step, model)",
        # (run_id, step) is a prefix of the index above: drop it, one index less per write.
        "DROP INDEX IF EXISTS ix_stats_run_step",
        "CREATE INDEX IF NOT EXISTS ix_runs_workflow_created "
        "ON workflow_runs (workflow, created_at)",
    ):
        conn.exec_driver_sql(stmt)


# Columns of workflow_step_stats added by _v3 (tables made by _v1 today have them already).
_V3_STATS_COLUMNS = (
    ("cache_write_1h_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("web_search_requests", "INTEGER NOT NULL DEFAULT 0"),
    ("fees_usd", "{money}"),
    ("priced_as", "TEXT"),
    ("price_source", "TEXT"),
    ("price_model", "TEXT"),
)


def _v3(conn: Connection) -> None:
    """Prices: the 1-hour cache writes, web searches, per-request fees and where each
    call's price came from; on Postgres, costs stored exactly (unconstrained NUMERIC:
    NUMERIC(30, 12) rounded anything past 12 decimals; widening loses nothing)."""
    postgres = conn.dialect.name == "postgresql"
    money = "NUMERIC" if postgres else "VARCHAR(80)"
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_step_stats")}
    for name, kind in _V3_STATS_COLUMNS:
        if name not in have:
            conn.exec_driver_sql(
                f"ALTER TABLE workflow_step_stats ADD COLUMN {name} {kind.format(money=money)}"
            )
    if postgres:
        conn.exec_driver_sql("ALTER TABLE workflow_step_stats ALTER COLUMN cost_usd TYPE NUMERIC")


# Columns that were VARCHAR(n) on Postgres before migration 4 (SQLite never enforced n).
_NAME_COLUMNS = {
    "workflow_runs": ("id", "workflow", "status", "lease_owner"),
    "workflow_nodes": ("run_id", "step", "parent", "kind", "worker", "model", "state"),
    "workflow_step_stats": (
        "run_id",
        "step",
        "model",
        "provider",
        "priced_as",
        "price_source",
        "price_model",
    ),
    "workflow_completions": ("run_id", "step", "request_hash"),
    "workflow_debug_logs": ("run_id", "step", "kind"),
}


def _v4_unbounded_names(conn: Connection) -> None:
    """Postgres: names as TEXT without a length cap, like SQLite; indexes over step and
    model names on their md5.

    A run with a step, model or map key longer than the old VARCHAR caps failed with
    "value too long" (a map child's name only mid-run). A btree entry holds at most 2704
    bytes, so an index over a long name fails the same way: the indexes that hold step or
    model names index ``md5(name)`` instead (Postgres's own advice for long values); the
    queries that look up one step say ``md5(step) = md5(:step)`` to use them.
    """
    if conn.dialect.name != "postgresql":
        return
    for table, columns in _NAME_COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE TEXT" for column in columns)
        conn.exec_driver_sql(f"ALTER TABLE {table} {changes}")
    for stmt in (
        "ALTER TABLE workflow_nodes DROP CONSTRAINT IF EXISTS uq_workflow_nodes_run_step",
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_workflow_nodes_run_step "
        "ON workflow_nodes (run_id, md5(step))",
        "ALTER TABLE workflow_completions DROP CONSTRAINT IF EXISTS uq_workflow_completions_call",
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_workflow_completions_call "
        "ON workflow_completions (run_id, md5(step), call_index, request_hash)",
        "DROP INDEX IF EXISTS ix_stats_run_step_model",
        "CREATE INDEX IF NOT EXISTS ix_stats_run_step_model "
        "ON workflow_step_stats (run_id, md5(step), md5(model))",
        "DROP INDEX IF EXISTS ix_logs_run_step",
        "CREATE INDEX IF NOT EXISTS ix_logs_run_step ON workflow_debug_logs (run_id, md5(step))",
    ):
        conn.exec_driver_sql(stmt)


def _v8_provider_batches(conn: Connection) -> None:
    """Provider batches (DESIGN §12): the batches and the calls each one asks (stored before
    submitting), and whether a stats row's call went through a batch (batch rates)."""
    from ._tables import WorkflowBatchRequest, WorkflowProviderBatch

    for table in (WorkflowProviderBatch.__table__, WorkflowBatchRequest.__table__):  # type: ignore[attr-defined]
        table.create(conn, checkfirst=True)
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_step_stats")}
    if "batch" not in have:
        conn.exec_driver_sql(
            "ALTER TABLE workflow_step_stats ADD COLUMN batch BOOLEAN NOT NULL DEFAULT "
            + ("false" if conn.dialect.name == "postgresql" else "0")
        )


def _v9_attempts(conn: Connection) -> None:
    """Each ended attempt of a step, its error and duration (issue 12)."""
    from ._tables import WorkflowAttempt

    WorkflowAttempt.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def _v10_workers(conn: Connection) -> None:
    """Workers (DESIGN §10): submitted runs, the queue of attempts handed to workers (a
    lease and a fencing token each), the live workers."""
    for table in (WorkflowSubmission.__table__, WorkflowTask.__table__, WorkflowWorker.__table__):  # type: ignore[attr-defined]
        table.create(conn, checkfirst=True)
    # Claims read queued tasks in id order and lapsed leases: partial indexes, scanned in
    # order (a plain index scan skips the rows of tasks taken since, a bitmap would not).
    for stmt in (
        "CREATE INDEX IF NOT EXISTS ix_workflow_tasks_queued ON workflow_tasks (id) "
        "WHERE state = 'queued'",
        "CREATE INDEX IF NOT EXISTS ix_workflow_tasks_leased ON workflow_tasks (lease_until) "
        "WHERE state = 'claimed'",
    ):
        conn.exec_driver_sql(stmt)


def _v11_budgets_and_cache(conn: Connection) -> None:
    """Budget caps and the response cache (DESIGN §11): the budgets of runs and steps, the
    cache, and whether a stats row's call was answered from the cache (and what it saved)."""
    from ._tables import WorkflowBudget, WorkflowCache

    for table in (WorkflowBudget.__table__, WorkflowCache.__table__):  # type: ignore[attr-defined]
        table.create(conn, checkfirst=True)
    postgres = conn.dialect.name == "postgresql"
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_step_stats")}
    if "cached" not in have:
        conn.exec_driver_sql(
            "ALTER TABLE workflow_step_stats ADD COLUMN cached BOOLEAN NOT NULL DEFAULT "
            + ("false" if postgres else "0")
        )
    if "saved_usd" not in have:
        money = "NUMERIC" if postgres else "VARCHAR(80)"
        conn.exec_driver_sql(f"ALTER TABLE workflow_step_stats ADD COLUMN saved_usd {money}")
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_budgets_run_scope ON workflow_budgets (run_id"
        + (", md5(scope))" if postgres else ", scope)")
    )


def _v12_shared_limits(conn: Connection) -> None:
    """``bn.Limit`` held across all workers (issue 17): the requests and token estimates
    admitted to each provider in its sliding window, and the concurrency slots held; which
    worker ran each attempt of a step."""
    from ._worker_tables import WorkflowLimitGrant, WorkflowLimitSlot, WorkflowStepWorker

    for table in (
        WorkflowLimitGrant.__table__,  # type: ignore[attr-defined]
        WorkflowLimitSlot.__table__,  # type: ignore[attr-defined]
        WorkflowStepWorker.__table__,  # type: ignore[attr-defined]
    ):
        table.create(conn, checkfirst=True)
    for stmt in (
        "CREATE INDEX IF NOT EXISTS ix_limit_grants_provider "
        "ON workflow_limit_grants (provider, kind, at)",
        "CREATE INDEX IF NOT EXISTS ix_limit_slots_provider "
        "ON workflow_limit_slots (provider, expires_at)",
    ):
        conn.exec_driver_sql(stmt)


def _v13_map_items(conn: Connection) -> None:
    """A map group's number of items, stored as its expansion begins (readers in other
    processes count the items with no child stored yet as pending)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_nodes")}
    if "map_items" not in have:
        conn.exec_driver_sql("ALTER TABLE workflow_nodes ADD COLUMN map_items INTEGER")


def _v14_resume_key(conn: Connection) -> None:
    """A run's model map and steps' code, hashed (``wf.run()`` resumes an unfinished run
    only when both are the same); runs stored before have none and are never resumed so."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_runs")}
    if "resume_key" not in have:
        conn.exec_driver_sql("ALTER TABLE workflow_runs ADD COLUMN resume_key TEXT")


def _v16_stopped_by(conn: Connection) -> None:
    """Who an interrupt stopped a run in (the lease owner of that execution): ``wf.run()``
    resumes such a ``cancelled`` run once that process is gone (a kernel restart); runs
    stored before have none and are resumed only by their run_id, as before."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("workflow_runs")}
    if "stopped_by" not in have:
        conn.exec_driver_sql("ALTER TABLE workflow_runs ADD COLUMN stopped_by TEXT")


# The run_id indexes that another index of the same table begins with (its unique key, or
# its report index): the longer one serves every lookup by run_id, so each was one more
# btree entry written per row for nothing. Dropped on Postgres by migration 15; SQLite keeps
# them (there an index on run_id alone also holds a run's rows in id order: not measured).
_PG_REDUNDANT_INDEXES = (
    "ix_workflow_nodes_run_id",  # uq_workflow_nodes_run_step (run_id, md5(step))
    "ix_workflow_completions_run_id",  # uq_workflow_completions_call (run_id, md5(step), ...)
    "ix_workflow_step_stats_run_id",  # ix_stats_run_step_model (run_id, md5(step), md5(model))
)
# workflow_nodes' pages on Postgres left half empty as rows are inserted: a node's row is
# updated twice after its insert (executing, then its result), and with room on its own page
# each update is HOT (no new entry in any of the table's indexes). With full pages 70 % of
# these updates moved the row to another page and wrote an entry in each index.
_PG_NODES_FILLFACTOR = 50


def _v15_lighter_answer_writes(conn: Connection) -> None:
    """Postgres: fewer index entries written per stored answer (docs/performance.md,
    "Ninth round: the Postgres server's share"): the redundant run_id indexes dropped, and
    workflow_nodes' new pages filled to half (pages already full stay so)."""
    if conn.dialect.name != "postgresql":
        return
    for name in _PG_REDUNDANT_INDEXES:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    conn.exec_driver_sql(f"ALTER TABLE workflow_nodes SET (fillfactor = {_PG_NODES_FILLFACTOR})")


MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4_unbounded_names),
    (8, _v8_provider_batches),
    (9, _v9_attempts),
    (10, _v10_workers),
    (11, _v11_budgets_and_cache),
    (12, _v12_shared_limits),
    (13, _v13_map_items),
    (14, _v14_resume_key),
    (15, _v15_lighter_answer_writes),
    (16, _v16_stopped_by),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _applied_versions(conn: Connection) -> set[int]:
    if not sa.inspect(conn).has_table(SchemaVersion.__tablename__):
        return set()
    rows = conn.execute(sa.text("SELECT version FROM baton_schema_version")).scalars()
    return {int(v) for v in rows}


def _sqlite_state(driver: sqlite3.Connection) -> tuple[bool, set[int]]:
    """On the connection's thread: SQLite's write lock taken before anything is read
    (serialises first use), then whether the database holds no table at all, and the
    schema versions applied.

    pysqlite (and aiosqlite over it) begins a transaction implicitly only before DML, so
    the version check and the CREATE TABLEs would otherwise run in autocommit, and two
    connections opening a fresh file at once would both see version 0 and both create the
    tables. ``BEGIN IMMEDIATE`` waits (busy_timeout) for any other writer; the rest of the
    migration then runs in this one transaction, committed by the caller's ``begin()``.
    """
    if not driver.in_transaction:
        driver.execute("BEGIN IMMEDIATE").close()
    cursor = driver.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {name for (name,) in cursor.fetchall()}
    cursor.close()
    if SchemaVersion.__tablename__ not in tables:
        return not tables, set()
    cursor = driver.execute(f"SELECT version FROM {SchemaVersion.__tablename__}")
    versions = {int(v) for (v,) in cursor.fetchall()}
    cursor.close()
    return False, versions


@functools.cache
def _sqlite_schema() -> tuple[str, ...]:
    """The statements that make today's schema in an empty SQLite database: what every
    migration made in a private in-memory database, read back from its ``sqlite_master``
    in the order it was made (tables before their indexes). Built once per process."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            _migrate(conn, set())
            rows = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
            return tuple(str(sql) for (sql,) in rows)
    finally:
        engine.dispose()


def _create_sqlite_schema(driver: sqlite3.Connection) -> None:
    """On the connection's thread, in its transaction: today's schema in an empty database,
    every version recorded, as the migrations one by one would leave it (one round trip to
    the thread; the migrations through SQLAlchemy took ~400 on a new file, a tenth of a
    second of a short run: docs/performance.md, "Sixth round")."""
    for statement in _sqlite_schema():
        driver.execute(statement).close()
    now = sqlite_text(datetime.now(timezone.utc))
    driver.executemany(
        f"INSERT INTO {SchemaVersion.__tablename__} (version, applied_at) VALUES (?, ?)",
        [(version, now) for version, _ in MIGRATIONS],
    ).close()


def _migrate(conn: Connection, applied: set[int]) -> None:
    table = SchemaVersion.__table__  # type: ignore[attr-defined]
    for version, migrate in MIGRATIONS:
        # each version not yet applied, not only those above the newest: versions made on
        # parallel branches land out of order (a database at 11 may lack 10)
        if version not in applied:
            migrate(conn)
            now = datetime.now(timezone.utc)
            conn.execute(sa.insert(table).values(version=version, applied_at=now))


def ensure_schema(conn: Connection, url: str) -> None:
    """Create or upgrade the schema in the caller's transaction; refuse a newer one.

    A SQLite database with no table at all (a new file) gets today's schema at once
    (``_create_sqlite_schema``); any other goes through the migrations it lacks."""
    if conn.dialect.name == "sqlite":
        dbapi_conn = conn.connection.dbapi_connection
        empty, applied = on_sqlite_thread(dbapi_conn, _sqlite_state)
        if empty:
            _sqlite_schema()  # built here, before the thread is asked (SQLAlchemy's greenlet)
            on_sqlite_thread(dbapi_conn, _create_sqlite_schema)
            return
    else:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent first use by several processes.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7261530201)"))
        applied = _applied_versions(conn)
    current = max(applied, default=0)
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database {url!r} has baton_nb schema version {current}, but this baton_nb "
            f"knows versions up to {SCHEMA_VERSION}; upgrade baton_nb (pip install -U baton-nb) "
            "or use another database"
        )
    _migrate(conn, applied)
