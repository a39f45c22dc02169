"""``bn.report`` and ``bn.runs``: reports and listings across stored runs.

They read the database, so they are coroutines like ``bn.Run.load``:
``report = await bn.report(db=..., since="7d")``. All aggregation happens in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import anyio.to_thread

from ._dburl import safe_url
from ._errors import ConfigurationError, RunNotFound
from ._states import STORED_STATUSES, RunStatus
from .reports import CostReport, RunList, RunSummary, as_time
from .store import ReportStore, RunFilter, RunStore, Store

__all__ = ["RUN_STATUSES", "RUN_STATUS_FILTERS", "report", "runs"]

RUN_STATUSES = tuple(s.value for s in STORED_STATUSES)
ABANDONED = "abandoned"  # not stored: a running run whose process is gone (RunSummary.abandoned)
RUN_STATUS_FILTERS = (*RUN_STATUSES, ABANDONED)

When = datetime | timedelta | str | None


async def report(
    db: str | None = None,
    *,
    run_ids: Sequence[str] | None = None,
    workflow: str | None = None,
    since: When = None,
    until: When = None,
    reprice: bool = False,
) -> CostReport:
    """Cost report over stored runs: one row per (run, step, model), summed in SQL.

    ``reprice=True`` prices every stored call again with today's price tables (at the time
    the call was made), for calls whose model was unknown when they ran or whose price
    was wrong; the stored costs are not changed. It reads each call rather than sums.

    ``run_ids`` picks runs (an unknown id raises ``bn.RunNotFound``); ``workflow``
    filters by workflow name; ``since``/``until`` bound the run's creation time and take a
    ``datetime`` (naive = local time), a ``timedelta`` or a string such as ``"7d"``
    (that long ago) or ``"2025-06-14"``. ``db`` defaults to ``BATON_NB_DB``, then
    ``sqlite:///baton.db``.
    """
    where = RunFilter(
        run_ids=_ids(run_ids),
        workflow=workflow,
        since=as_time(since, "since"),
        until=as_time(until, "until"),
    )
    async with await Store.open(db) as store:
        if where.run_ids:
            await _check_exist(store, where.run_ids)
        if reprice:
            return await _repriced(store, where)
        rows = await store.aggregate_stats(where)
        children = await store.fanout_children(where)
    return CostReport.from_aggregates(rows, children)


async def _repriced(store: RunStore, where: RunFilter) -> CostReport:
    from ._run import Run

    picked = await store.run_summaries(where, None)
    ids = [r.id for r in sorted(picked, key=lambda r: (r.created_at, r.id))]
    loaded = [await Run.from_store(store, run_id) for run_id in ids]
    # pricing may read price files and import genai-prices the first time: off the loop
    return await anyio.to_thread.run_sync(lambda: CostReport.from_runs(loaded, reprice=True))


async def runs(
    db: str | None = None,
    *,
    workflow: str | None = None,
    since: When = None,
    until: When = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[RunSummary]:
    """Stored runs, newest first: id, workflow, status, started, duration, steps, cost.

    Filters as for ``bn.report``; ``status`` is one of pending, running, completed,
    failed, cancelled, or abandoned (the running runs whose process is gone, listed as
    ``abandoned``; ``running`` selects them too); ``limit`` caps the number of runs. The
    list shows as a table.
    """
    if status is not None and status not in RUN_STATUS_FILTERS:
        raise ConfigurationError(
            f"unknown status {status!r}: use one of {', '.join(RUN_STATUS_FILTERS)}"
        )
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(f"limit must be a non-negative int, got {limit!r}")
    where = RunFilter(
        workflow=workflow,
        since=as_time(since, "since"),
        until=as_time(until, "until"),
        status=RunStatus.RUNNING.value if status == ABANDONED else status,
    )
    if status != ABANDONED:
        async with await Store.open(db) as store:
            rows = await store.run_summaries(where, limit)
        return RunList(RunSummary.from_row(r) for r in rows)
    async with await Store.open(db) as store:  # the running runs (few), then the gone ones
        rows = await store.run_summaries(where, None)
    gone = [summary for summary in map(RunSummary.from_row, rows) if summary.abandoned]
    return RunList(gone[:limit] if limit else gone)


def _ids(run_ids: Sequence[str] | str | None) -> list[str] | None:
    if run_ids is None:
        return None
    if isinstance(run_ids, str):
        return [run_ids]
    ids = list(run_ids)
    if not all(isinstance(i, str) for i in ids):
        raise ConfigurationError(f"run_ids must be strings, got {ids!r}")
    return ids


async def _check_exist(store: ReportStore, run_ids: Sequence[str]) -> None:
    found = await store.existing_run_ids(run_ids)
    missing = [i for i in run_ids if i not in found]
    if missing:
        raise RunNotFound(
            f"no run {', '.join(repr(i) for i in missing)} in {safe_url(store.url)}; "
            "list runs with bn.runs() or `baton-nb runs`"
        )
