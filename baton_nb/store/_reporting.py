"""Read-side SQL for reports, run listings and pruning (used through ``Store`` methods).

Everything here aggregates in the database (GROUP BY run, step, model), so a report over
10,000 runs reads a few thousand rows, not a million. Money is summed exactly: ``SUM`` of
NUMERIC on Postgres, the ``decimal_sum`` aggregate over decimal strings on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .._money import normalize_money
from .._states import FINISHED_STATUSES, NodeKind, RunStatus, State
from .._usage import Usage
from ._rows import (
    PRUNE_TABLES,
    UNANSWERED,
    FanoutChild,
    RunFilter,
    RunSummaryRow,
    StatAggregate,
    distinct_values,
)
from ._sql_batches import BATCH_REQUESTS, PROVIDER_BATCHES
from ._sql_rows import ATTEMPTS, COMPLETIONS, LOGS, NODES, RUNS, STATS, loads_list
from ._sql_spend import BUDGETS
from ._tables import ExactDecimal

__all__ = [
    "clauses",
    "count_prunable",
    "fanout_children",
    "prune_debug_logs_batch",
    "prune_runs_batch",
    "run_summaries",
    "stats_by_run_step_model",
]

_CHILD_TABLES = (
    NODES,
    STATS,
    COMPLETIONS,
    LOGS,
    PROVIDER_BATCHES,
    BATCH_REQUESTS,
    ATTEMPTS,
    BUDGETS,
)


def clauses(where: RunFilter) -> list[sa.ColumnElement[bool]]:
    """``where`` as WHERE clauses on ``workflow_runs``."""
    out: list[sa.ColumnElement[bool]] = []
    if where.run_ids is not None:
        out.append(RUNS.c.id.in_(list(where.run_ids)))
    if where.workflow is not None:
        out.append(RUNS.c.workflow == where.workflow)
    if where.since is not None:
        out.append(RUNS.c.created_at >= where.since)
    if where.until is not None:
        out.append(RUNS.c.created_at < where.until)
    if where.status is not None:
        out.append(RUNS.c.status == where.status)
    return out


# ── aggregation helpers ──────────────────────────────────────────────────────

_PAID = sa.and_(sa.not_(STATS.c.replayed), sa.not_(STATS.c.cached))
# answered from the response cache (DESIGN §11): cost 0, counted apart with what it saved
_CACHED = sa.and_(sa.not_(STATS.c.replayed), STATS.c.cached)
# attempts with no answer counted at their worst case (CallRecord.unanswered): in the cost,
# apart from the calls (no call count, latency or estimate of their own)
_LOST = sa.and_(_PAID, STATS.c.price_source == UNANSWERED)
_CALL = sa.and_(_PAID, sa.func.coalesce(STATS.c.price_source, "") != UNANSWERED)


def _money_sum(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.decimal_sum(column, type_=ExactDecimal())
    return sa.func.sum(column, type_=ExactDecimal())


def _paid_sum(column: Any) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((_CALL, column), else_=0))


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _stat_columns(dialect: str, only: Sequence[str] | None = None) -> list[sa.ColumnElement[Any]]:
    """Sums over one group of stats rows; replayed calls counted apart, never summed in."""
    columns = [
        _count_if(_CALL).label("calls"),
        _paid_sum(STATS.c.input_tokens).label("input_tokens"),
        _paid_sum(STATS.c.cached_input_tokens).label("cached_input_tokens"),
        _paid_sum(STATS.c.cache_write_tokens).label("cache_write_tokens"),
        _paid_sum(STATS.c.output_tokens).label("output_tokens"),
        _paid_sum(STATS.c.reasoning_tokens).label("reasoning_tokens"),
        _money_sum(dialect, sa.case((_PAID, STATS.c.cost_usd), else_=sa.null())).label("cost"),
        _money_sum(dialect, sa.case((_PAID, STATS.c.fees_usd), else_=sa.null())).label("fees"),
        _money_sum(dialect, sa.case((_LOST, STATS.c.cost_usd), else_=sa.null())).label(
            "unanswered"
        ),
        _paid_sum(STATS.c.cache_write_1h_tokens).label("cache_write_1h_tokens"),
        _paid_sum(STATS.c.web_search_requests).label("web_search_requests"),
        *_distinct_text(STATS.c.price_source, "price_source"),
        *_distinct_text(STATS.c.price_model, "price_model"),
        _count_if(sa.and_(_CALL, STATS.c.cost_usd.is_(None))).label("unpriced_calls"),
        _count_if(sa.and_(_CALL, STATS.c.estimated)).label("estimated_calls"),
        _paid_sum(STATS.c.latency_ms).label("latency_ms"),
        _count_if(STATS.c.replayed).label("replayed_calls"),
        _count_if(sa.and_(_CALL, STATS.c.batch)).label("batch_calls"),
        _count_if(sa.and_(STATS.c.replayed, STATS.c.batch)).label("batch_replays"),
        _count_if(_CACHED).label("cached_calls"),
        _money_sum(dialect, sa.case((_CACHED, STATS.c.saved_usd), else_=sa.null())).label("saved"),
    ]
    return [c for c in columns if only is None or c.name in only]


def _distinct_text(column: sa.ColumnElement[Any], name: str) -> list[sa.ColumnElement[Any]]:
    """Which values a text column takes over a group, portably (no string_agg in SQLite):
    the least, the greatest and how many distinct (a report row names them all when there
    are at most two, which is what one (run, step, model) has)."""
    paid = sa.case((_CALL, column), else_=sa.null())
    return [
        sa.func.min(paid).label(f"{name}_min"),
        sa.func.max(paid).label(f"{name}_max"),
        sa.func.count(sa.distinct(paid)).label(f"{name}_count"),
    ]


def _runs_subquery(where: RunFilter) -> sa.Select[Any]:
    return sa.select(RUNS.c.id).where(*clauses(where))


# ── reports ──────────────────────────────────────────────────────────────────


async def stats_by_run_step_model(
    conn: AsyncConnection, dialect: str, where: RunFilter
) -> list[StatAggregate]:
    """One row per (run, step, model) with sums, the run's workflow and the step's parent."""
    agg = sa.select(
        STATS.c.run_id,
        STATS.c.step,
        STATS.c.model,
        sa.func.max(STATS.c.provider).label("provider"),
        sa.func.min(STATS.c.id).label("first_id"),
        *_stat_columns(dialect),
    )
    if not where.empty:
        agg = agg.where(STATS.c.run_id.in_(_runs_subquery(where)))
    sub = agg.group_by(STATS.c.run_id, STATS.c.step, STATS.c.model).subquery("agg")
    group = NODES.alias("group_node")
    query = (
        sa.select(sub, RUNS.c.workflow, NODES.c.parent)
        .select_from(
            sub.join(RUNS, RUNS.c.id == sub.c.run_id)
            .outerjoin(NODES, sa.and_(NODES.c.run_id == sub.c.run_id, NODES.c.step == sub.c.step))
            .outerjoin(
                group, sa.and_(group.c.run_id == NODES.c.run_id, group.c.step == NODES.c.parent)
            )
        )
        # DAG order (reports.dag_order): a fan-out child at its group's place, map items
        # in item order (they are stored after every step of the run), models as declared.
        .order_by(
            RUNS.c.created_at,
            sub.c.run_id,
            sa.func.coalesce(group.c.id, NODES.c.id),
            sa.func.coalesce(NODES.c.item_index, -1),
            NODES.c.id,
            sub.c.first_id,
        )
    )
    return [_aggregate(r) for r in (await conn.execute(query)).mappings()]


def _int(value: Any) -> int:
    return int(value or 0)


def _money(value: Any) -> Decimal | None:
    return None if value is None else normalize_money(Decimal(value))


def _distinct(row: Mapping[Any, Any], name: str) -> list[str]:
    return distinct_values(row[f"{name}_min"], row[f"{name}_max"], _int(row[f"{name}_count"]))


def _aggregate(row: Mapping[Any, Any]) -> StatAggregate:
    return StatAggregate(
        run_id=row["run_id"],
        workflow=row["workflow"],
        step=row["step"],
        model=row["model"],
        provider=row["provider"],
        parent=row["parent"],
        calls=_int(row["calls"]),
        usage=Usage.from_dict(dict(row)),
        cost=_money(row["cost"]),
        fees=_money(row["fees"]),
        price_sources=_distinct(row, "price_source"),
        price_models=_distinct(row, "price_model"),
        unpriced_calls=_int(row["unpriced_calls"]),
        estimated_calls=_int(row["estimated_calls"]),
        latency_ms=float(row["latency_ms"] or 0.0),
        replayed_calls=_int(row["replayed_calls"]),
        cached_calls=_int(row["cached_calls"]),
        saved=_money(row["saved"]),
        batch_calls=_int(row["batch_calls"]),
        batch_replays=_int(row["batch_replays"]),
        unanswered=_money(row["unanswered"]),
    )


async def fanout_children(conn: AsyncConnection, where: RunFilter) -> list[FanoutChild]:
    """Multi-model fan-out children (state, attempts, error) of the runs selected."""
    query = sa.select(
        NODES.c.run_id,
        NODES.c.parent,
        NODES.c.step,
        NODES.c.model,
        NODES.c.state,
        NODES.c.attempt,
        NODES.c.error,
    ).where(NODES.c.kind == NodeKind.CHILD.value, NODES.c.model.is_not(None))
    if not where.empty:
        query = query.where(NODES.c.run_id.in_(_runs_subquery(where)))
    rows = (await conn.execute(query.order_by(NODES.c.id))).mappings()
    return [
        FanoutChild(
            r["run_id"],
            r["parent"],
            r["step"],
            r["model"],
            State(r["state"]),
            _int(r["attempt"]),
            r["error"],
        )
        for r in rows
    ]


async def run_summaries(
    conn: AsyncConnection, dialect: str, where: RunFilter, limit: int | None
) -> list[RunSummaryRow]:
    """Runs, newest first, each with its step counts, calls, tokens and cost."""
    picked = (
        sa.select(
            RUNS.c.id,
            RUNS.c.workflow,
            RUNS.c.status,
            RUNS.c.created_at,
            RUNS.c.started_at,
            RUNS.c.finished_at,
            RUNS.c.failed_steps,
            RUNS.c.lease_owner,
            RUNS.c.lease_expires_at,
        )
        .where(*clauses(where))
        .order_by(RUNS.c.created_at.desc(), RUNS.c.id)
    )
    if limit is not None:
        picked = picked.limit(limit)
    runs = picked.cte("picked")
    ids = sa.select(runs.c.id)
    steps = (
        sa.select(
            NODES.c.run_id,
            sa.func.count().label("steps"),
            _count_if(NODES.c.state == State.COMPLETED.value).label("steps_completed"),
        )
        .where(NODES.c.kind != NodeKind.GROUP.value, NODES.c.run_id.in_(ids))
        .group_by(NODES.c.run_id)
        .subquery("steps")
    )
    stats = (
        sa.select(STATS.c.run_id, *_stat_columns(dialect, _SUMMARY_STATS))
        .where(STATS.c.run_id.in_(ids))
        .group_by(STATS.c.run_id)
        .subquery("stats")
    )
    query = (
        sa.select(runs, steps.c.steps, steps.c.steps_completed, *_stats_out(stats))
        .select_from(
            runs.outerjoin(steps, steps.c.run_id == runs.c.id).outerjoin(
                stats, stats.c.run_id == runs.c.id
            )
        )
        .order_by(runs.c.created_at.desc(), runs.c.id)
    )
    return [_summary(r) for r in (await conn.execute(query)).mappings()]


def _summary(row: Mapping[Any, Any]) -> RunSummaryRow:
    return RunSummaryRow(
        id=row["id"],
        workflow=row["workflow"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        failed_steps=loads_list(row["failed_steps"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        steps=_int(row["steps"]),
        steps_completed=_int(row["steps_completed"]),
        calls=_int(row["calls"]),
        input_tokens=_int(row["input_tokens"]),
        output_tokens=_int(row["output_tokens"]),
        cost=_money(row["cost"]),
        unpriced_calls=_int(row["unpriced_calls"]),
        replayed_calls=_int(row["replayed_calls"]),
        cached_calls=_int(row["cached_calls"]),
    )


_SUMMARY_STATS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cost",
    "unpriced_calls",
    "replayed_calls",
    "cached_calls",
)


def _stats_out(stats: sa.Subquery) -> list[sa.ColumnElement[Any]]:
    return [stats.c[n] for n in _SUMMARY_STATS]


# ── pruning ──────────────────────────────────────────────────────────────────


def _prunable(cutoff: datetime, now: datetime) -> sa.ColumnElement[bool]:
    """Finished before ``cutoff`` and not leased by a live executor (a resume in progress)."""
    return sa.and_(
        RUNS.c.status.in_([s.value for s in FINISHED_STATUSES]),
        sa.or_(
            RUNS.c.finished_at < cutoff,
            sa.and_(RUNS.c.finished_at.is_(None), RUNS.c.created_at < cutoff),
        ),
        sa.or_(
            RUNS.c.lease_owner.is_(None),
            RUNS.c.lease_expires_at.is_(None),
            RUNS.c.lease_expires_at < now,
        ),
    )


async def prune_runs_batch(
    conn: AsyncConnection, cutoff: datetime, now: datetime, batch_size: int
) -> dict[str, int]:
    """Delete up to ``batch_size`` prunable runs and all their rows (caller's transaction).

    The run rows go first, with the condition checked again in the DELETE itself: a run
    that another process leased (resumed) since is skipped, and a resume that comes after
    finds no run rather than half of one.
    """
    pick = sa.select(RUNS.c.id).where(_prunable(cutoff, now)).order_by(RUNS.c.created_at)
    stmt = (
        sa.delete(RUNS)
        .where(RUNS.c.id.in_(pick.limit(batch_size)), _prunable(cutoff, now))
        .returning(RUNS.c.id)
    )
    ids = list((await conn.execute(stmt)).scalars())
    counts = {"workflow_runs": len(ids)}
    for table in _CHILD_TABLES:
        deleted = 0
        if ids:
            result = await conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
            deleted = max(int(result.rowcount), 0)
        counts[table.name] = deleted
    return counts


async def prune_debug_logs_batch(conn: AsyncConnection, cutoff: datetime, batch_size: int) -> int:
    """Delete up to ``batch_size`` debug log rows older than ``cutoff``, of any run."""
    pick = sa.select(LOGS.c.id).where(LOGS.c.created_at < cutoff).order_by(LOGS.c.id)
    result = await conn.execute(sa.delete(LOGS).where(LOGS.c.id.in_(pick.limit(batch_size))))
    return max(int(result.rowcount), 0)


async def count_prunable(
    conn: AsyncConnection, cutoff: datetime | None, log_cutoff: datetime | None, now: datetime
) -> dict[str, int]:
    """What ``prune`` would delete now, per table (dry run)."""
    counts = dict.fromkeys(PRUNE_TABLES, 0)
    runs = sa.select(RUNS.c.id).where(_prunable(cutoff, now)) if cutoff is not None else None
    if runs is not None:
        for table in (
            RUNS,
            NODES,
            STATS,
            COMPLETIONS,
            PROVIDER_BATCHES,
            BATCH_REQUESTS,
            ATTEMPTS,
            BUDGETS,
        ):
            column = table.c.id if table is RUNS else table.c.run_id
            counts[table.name] = await _count(conn, table, column.in_(runs))
    log_clauses: list[sa.ColumnElement[bool]] = []
    if runs is not None:
        log_clauses.append(LOGS.c.run_id.in_(runs))
    if log_cutoff is not None:
        log_clauses.append(LOGS.c.created_at < log_cutoff)
    if log_clauses:
        counts[LOGS.name] = await _count(conn, LOGS, sa.or_(*log_clauses))
    return counts


async def _count(conn: AsyncConnection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(where)
    return int((await conn.execute(query)).scalar_one())
