"""The SQL store's reads: runs back, changes for ``bn.watch``, reports, pruning."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .._states import RunStatus
from . import _reporting
from ._rows import (
    AttemptRow,
    CallRecord,
    ChangeMarks,
    FanoutChild,
    LogRow,
    NewestRuns,
    RanOn,
    RunChanges,
    RunFilter,
    RunRow,
    RunStopped,
    RunSummaryRow,
    StatAggregate,
    utcnow,
)
from ._sql_base import NOTIFY_CHANNEL, SqlBase, driver_connection
from ._sql_rows import (
    ATTEMPTS,
    LOGS,
    NODES,
    RUNS,
    STATS,
    STEP_WORKERS,
    SUBMISSIONS,
    attempt_from_columns,
    call_from_columns,
    log_from_columns,
    node_from_columns,
    run_from_columns,
)

__all__ = ["SqlReads"]

_SQLITE_MATERIALIZED = sqlite3.sqlite_version_info >= (3, 35)  # ``AS MATERIALIZED``


def _newest_of_kind(sqlite_materializes: bool = _SQLITE_MATERIALIZED) -> sa.CompoundSelect[Any]:
    """``newest_of_kind``'s statement, built once (building it took as long as running
    it). The newest run of the params (any key) walks the ``(workflow, created_at)``
    index from the newest run until its first match (``LIMIT 1``, no ``id`` tie-break:
    docs/performance.md, "The stopped run's lookup"). The newest of the params and key is
    that run when it has the key; a second walk looks for it only when that run has
    another key: its ``LIMIT`` is 0 otherwise (``EXISTS`` on the materialized first
    walk), which SQLite and Postgres check before walking. With no run of these params,
    one walk of the workflow's runs, not two.

    ``AS MATERIALIZED`` is SQLite 3.35's (a syntax error before: Ubuntu 20.04 has 3.31),
    written for SQLite only from it (``sqlite_materializes``); a CTE read twice is
    materialized by SQLite without it too (the walks counted: tests/integration/test_store.py)."""
    columns = (RUNS.c.id, RUNS.c.status, RUNS.c.stopped_by, RUNS.c.resume_key)
    same = (
        RUNS.c.workflow == sa.bindparam("n_workflow"),
        RUNS.c.params == sa.bindparam("n_params"),
    )
    key: sa.BindParameter[str] = sa.bindparam("n_key")
    created = RUNS.c.created_at.desc()
    newest = sa.select(*columns).where(*same).order_by(created).limit(1)
    of_params = newest.cte("newest_of_params")
    for dialect in ("postgresql", "sqlite") if sqlite_materializes else ("postgresql",):
        of_params = of_params.prefix_with("MATERIALIZED", dialect=dialect)
    other_key = sa.exists().where(of_params.c.resume_key.is_distinct_from(key))
    # (a WHERE EXISTS would be checked for each run walked on SQLite, not once before)
    with_key = sa.select(*columns).where(*same, RUNS.c.resume_key == key).order_by(created)
    walks = sa.case((other_key, sa.literal_column("1")), else_=sa.literal_column("0"))
    of_kind = with_key.limit(walks).subquery()
    return sa.union_all(
        sa.select(*of_params.c, sa.literal_column("0").label("of_kind")),
        sa.select(*of_kind.c, sa.literal_column("1").label("of_kind")),
    )


_NEWEST_OF_KIND = _newest_of_kind()

_RAN_ON = STEP_WORKERS


class SqlReads(SqlBase):
    """Reading runs back, following them, reports and retention."""

    async def get_stats(self, run_ids: Sequence[str]) -> list[CallRecord]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(STATS).where(STATS.c.run_id.in_(list(run_ids))).order_by(STATS.c.id)
            )
            return [call_from_columns(r) for r in rows.mappings()]

    async def get_ran_on(self, run_id: str) -> dict[str, str]:
        table = _RAN_ON
        query = sa.select(table.c.step, table.c.worker).where(table.c.run_id == run_id)
        async with self.connect() as conn:
            rows = await conn.execute(query.order_by(table.c.attempt, table.c.id))
            return {str(r.step): str(r.worker) for r in rows}  # the latest attempt last

    async def get_debug_logs(self, run_id: str, step: str | None = None) -> list[LogRow]:
        query = sa.select(LOGS).where(LOGS.c.run_id == run_id)
        if step is not None:
            query = query.where(self.step_is(LOGS.c.step, step))
        async with self.connect() as conn:
            rows = await conn.execute(query.order_by(LOGS.c.id))
            return [log_from_columns(r) for r in rows.mappings()]

    async def get_attempts(self, run_id: str) -> list[AttemptRow]:
        query = sa.select(ATTEMPTS).where(ATTEMPTS.c.run_id == run_id).order_by(ATTEMPTS.c.id)
        async with self.connect() as conn:
            return [attempt_from_columns(r) for r in (await conn.execute(query)).mappings()]

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        where = RunFilter(workflow=workflow, since=since, until=until, status=status)
        query = sa.select(RUNS).where(*_reporting.clauses(where))
        query = query.order_by(RUNS.c.created_at.desc(), RUNS.c.id)
        if limit is not None:
            query = query.limit(limit)
        async with self.connect() as conn:
            return [run_from_columns(r) for r in (await conn.execute(query)).mappings()]

    async def newest_of_kind(self, workflow: str, params: str, key: str) -> NewestRuns:
        """The newest run of this workflow, params and resume key, and the newest of this
        workflow and params: four columns of at most two rows, in one statement
        (``_NEWEST_OF_KIND``; not the params read back, which can be large). Only the
        second row's when the newest of the params has another key."""
        values = {"n_workflow": workflow, "n_params": params, "n_key": key}
        async with self.connect() as conn:
            rows = (await conn.execute(_NEWEST_OF_KIND, values)).all()
        found = {
            bool(r.of_kind): RunStopped(r.id, RunStatus(r.status), r.stopped_by, r.resume_key)
            for r in rows
        }
        of_params = found.get(False)
        if of_params is not None and of_params.resume_key == key:
            return NewestRuns(of_params, of_params)  # the second walk was not made
        return NewestRuns(found.get(True), of_params)

    async def recent_run_ids(self, workflow: str, limit: int) -> list[str]:
        """The ids of the workflow's ``limit`` newest runs, newest first (of two created at
        the same instant: either): the ``(workflow, created_at)`` index walked, one column."""
        query = sa.select(RUNS.c.id).where(RUNS.c.workflow == workflow)
        query = query.order_by(RUNS.c.created_at.desc()).limit(limit)
        async with self.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` exist."""
        query = sa.select(RUNS.c.id).where(RUNS.c.id.in_(list(run_ids)))
        async with self.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def submitted_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` were submitted to workers (``wf.submit``)."""
        query = sa.select(SUBMISSIONS.c.run_id).where(SUBMISSIONS.c.run_id.in_(list(run_ids)))
        async with self.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def run_ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        """Run ids beginning with ``prefix`` (an exact match first), at most ``limit``."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = (
            sa.select(RUNS.c.id)
            .where(RUNS.c.id.like(pattern, escape="\\"))
            .order_by((RUNS.c.id == prefix).desc(), RUNS.c.id)
            .limit(limit)
        )
        async with self.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # ── following a run ───────────────────────────────────────────────────────

    async def change_marks(self, run_id: str) -> ChangeMarks:
        def newest(column: Any, table: sa.Table) -> Any:
            return sa.select(sa.func.max(column)).where(table.c.run_id == run_id).scalar_subquery()

        query = sa.select(
            newest(NODES.c.updated_at, NODES),
            newest(STATS.c.id, STATS),
            newest(LOGS.c.id, LOGS),
            newest(_RAN_ON.c.id, _RAN_ON),
        )
        async with self.connect() as conn:
            nodes_at, stat, log, ran = (await conn.execute(query)).one()
        return ChangeMarks(_aware(nodes_at), int(stat or 0), int(log or 0), int(ran or 0))

    async def changes_since(self, run_id: str, marks: ChangeMarks) -> RunChanges:
        nodes = sa.select(NODES).where(NODES.c.run_id == run_id)
        if marks.nodes_at is not None:
            # >=: a row written in the same microsecond as the last one seen is not lost.
            nodes = nodes.where(NODES.c.updated_at >= marks.nodes_at)
        async with self.connect() as conn:
            run = (await conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id))).mappings()
            run_row = run.first()
            node_rows = (await conn.execute(nodes.order_by(NODES.c.id))).mappings()
            changed = [node_from_columns(r) for r in node_rows]
            calls = [call_from_columns(r) for r in await _after(conn, STATS, run_id, marks)]
            logs = [log_from_columns(r) for r in await _after(conn, LOGS, run_id, marks)]
            ran = [
                RanOn(r["id"], r["step"], r["worker"])
                for r in await _after(conn, _RAN_ON, run_id, marks)
            ]
        found = run_from_columns(run_row) if run_row else None
        return RunChanges(found, changed, calls, logs, ran)

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
            driver = await driver_connection(conn)
            await driver.add_listener(NOTIFY_CHANNEL, deliver)
            try:
                yield True
            finally:
                with anyio.CancelScope(shield=True):
                    await driver.remove_listener(NOTIFY_CHANNEL, deliver)

    # ── reports, run listings, pruning (SQL in _reporting) ────────────────────

    async def aggregate_stats(self, where: RunFilter | None = None) -> list[StatAggregate]:
        """Stats summed per (run, step, model) in SQL, with workflow and fan-out parent."""
        async with self.connect() as conn:
            where = where or RunFilter()
            return await _reporting.stats_by_run_step_model(conn, self.dialect, where)

    async def fanout_children(self, where: RunFilter | None = None) -> list[FanoutChild]:
        """Multi-model fan-out child nodes (state, attempt, error) of the runs selected."""
        async with self.connect() as conn:
            return await _reporting.fanout_children(conn, where or RunFilter())

    async def run_summaries(
        self, where: RunFilter | None = None, limit: int | None = None
    ) -> list[RunSummaryRow]:
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


async def _after(conn: AsyncConnection, table: sa.Table, run_id: str, marks: ChangeMarks) -> Any:
    after = {STATS: marks.last_stat_id, LOGS: marks.last_log_id}.get(table, marks.last_ran_on_id)
    query = sa.select(table).where(table.c.run_id == run_id, table.c.id > after)
    return (await conn.execute(query.order_by(table.c.id))).mappings()


def _aware(value: Any) -> datetime | None:
    """A ``MAX(updated_at)`` as an aware datetime (SQLite returns the stored text)."""
    from datetime import timezone

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value  # type: ignore[no-any-return]
