"""``bn.prune``: data retention (seed 001, "Data retention").

Finished runs older than a cut-off go with every row they own, a batch of runs per
transaction; unfinished runs, and finished ones that a live process holds the lease of
(a resume in progress), are never touched. Debug logs can be kept shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ._errors import ConfigurationError
from ._money import plural
from .reports import as_duration
from .store import PRUNE_TABLES, PruneStore, Store

__all__ = ["PruneResult", "prune"]

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class PruneResult:
    """What ``bn.prune`` deleted (or, with ``dry_run``, would delete), per table."""

    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRUNE_TABLES, 0))
    dry_run: bool = False
    cutoff: datetime | None = None
    debug_log_cutoff: datetime | None = None

    @property
    def runs(self) -> int:
        """Runs deleted."""
        return self.deleted.get("workflow_runs", 0)

    @property
    def total(self) -> int:
        """Rows deleted over all tables."""
        return sum(self.deleted.values())

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        tables = ", ".join(f"{table} {n}" for table, n in self.deleted.items())
        return f"{verb} {plural(self.runs, 'run')}, {plural(self.total, 'row')} ({tables})"


async def prune(
    db: str | None = None,
    *,
    older_than: timedelta | str | None = timedelta(days=7),
    debug_log_max_age: timedelta | str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    cache_older_than: timedelta | str | None = None,
) -> PruneResult:
    """Delete finished runs older than ``older_than`` and all their rows.

    A run is finished when its status is completed, failed or cancelled; it is old when
    it finished (or, if it never did, was created) more than ``older_than`` ago. Its rows
    in workflow_runs, workflow_nodes, workflow_step_stats, workflow_completions and
    workflow_debug_logs are deleted together, ``batch_size`` runs per transaction. Runs
    that are pending or running, or leased by a live process, are never touched, so
    pruning is safe while other processes run workflows.

    ``debug_log_max_age`` (e.g. ``timedelta(hours=24)`` or ``"24h"``) also deletes older
    debug log rows of any run, finished or not. ``older_than=None`` prunes only debug
    logs. ``dry_run=True`` counts what would go and deletes nothing.

    ``cache_older_than`` (e.g. ``"30d"``; ``"0s"``: all) also deletes the response cache's
    answers stored longer ago than that (``deleted["workflow_cache"]``); the cache is
    never emptied otherwise (docs/spend_less.md). Give it alone with ``older_than=None``.
    """
    if older_than is None and debug_log_max_age is None and cache_older_than is None:
        raise ConfigurationError(
            "nothing to prune: give older_than, debug_log_max_age, cache_older_than or several"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    now = datetime.now(timezone.utc)
    cutoff = None if older_than is None else now - as_duration(older_than, "older_than")
    log_cutoff = (
        None
        if debug_log_max_age is None
        else now - as_duration(debug_log_max_age, "debug_log_max_age")
    )
    cache_cutoff = (
        None
        if cache_older_than is None
        else now - as_duration(cache_older_than, "cache_older_than")
    )
    async with await Store.open(db) as store:
        if dry_run:
            counts = await store.count_prunable(cutoff, log_cutoff)
        else:
            counts = await _delete(store, cutoff, log_cutoff, batch_size)
        if cache_cutoff is not None:
            counts["workflow_cache"] = (
                await store.count_cache(cache_cutoff)
                if dry_run
                else await store.cache_clear(cache_cutoff)
            )
    return PruneResult(counts, dry_run, cutoff, log_cutoff)


async def _delete(
    store: PruneStore, cutoff: datetime | None, log_cutoff: datetime | None, batch_size: int
) -> dict[str, int]:
    counts = dict.fromkeys(PRUNE_TABLES, 0)
    while cutoff is not None:
        batch = await store.prune_runs_batch(cutoff, batch_size)
        for table, n in batch.items():
            counts[table] += n
        if batch["workflow_runs"] < batch_size:
            break
    log_batch = batch_size * 10
    while log_cutoff is not None:
        n = await store.prune_debug_logs_batch(log_cutoff, log_batch)
        counts["workflow_debug_logs"] += n
        if n < log_batch:
            break
    return counts
