"""The repository interface (DESIGN §1): every operation the rest of baton_nb asks of storage.

One protocol per kind of user, so that each depends on what it needs only:

- ``ExecutionStore``: a driver executing a run (create, load, lease, group commit, replay,
  provider batches);
- ``ReadStore``: reading runs back (``bn.Run.load``, ``bn.watch``, the CLI);
- ``ReportStore``: reports and listings, aggregated by the store;
- ``PruneStore``: data retention;
- ``ProviderBatchStore``: provider batches and the calls each one asks (DESIGN §12);
- ``SpendStore``: budgets (reserve, settle) and the response cache (DESIGN §11).

``RunStore`` is all four: what ``Store.open(db)`` returns. Implemented by the SQL store
(SQLite and Postgres, ``_sql``) and by the in-memory store (``_memory``); one test suite
(tests/integration/test_store.py) holds all of them to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from ._batch_rows import BatchRequestRow, ProviderBatchRow
from ._rows import (
    AttemptRow,
    CallRecord,
    ChangeMarks,
    CompletionRow,
    FanoutChild,
    LogRow,
    NewestRuns,
    NodeRow,
    RunChanges,
    RunFilter,
    RunRow,
    RunSummaryRow,
    StatAggregate,
    WriteBatch,
)
from ._spend_rows import BudgetRow, CacheEntry, CacheStats

__all__ = [
    "BatchWriter",
    "ExecutionStore",
    "ProviderBatchStore",
    "PruneStore",
    "ReadStore",
    "ReportStore",
    "RunStore",
    "SpendStore",
]


class BatchWriter(Protocol):
    """A run's group-commit writer: holds what it needs (a connection) for many batches."""

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction (all or nothing)."""


class _Closable(Protocol):
    url: str  # where the data lives (a URL without password)

    async def close(self) -> None: ...


class ProviderBatchStore(_Closable, Protocol):
    """Provider batches (DESIGN §12): stored before submitting, updated as they go. Each
    write with ``owner``: only while it holds the run's lease (as ``WriteBatch.owner``)."""

    async def insert_provider_batch(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        *,
        owner: str | None = None,
    ) -> None:
        """A batch and its calls, all or nothing (before it is submitted). A call mapped
        already (a missing answer asked again) moves to this batch: state, tries."""

    async def update_provider_batch(
        self, batch: ProviderBatchRow, *, owner: str | None = None
    ) -> None:
        """What changed on a stored batch: state, the provider's id and counts, costs."""

    async def get_provider_batches(self, run_id: str) -> list[ProviderBatchRow]: ...

    async def get_batch_requests(self, run_id: str) -> list[BatchRequestRow]:
        """Every call the run ever sent in a batch, with its batch and state."""

    async def store_batch_results(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        completions: Sequence[CompletionRow],
        calls: Sequence[CallRecord],
        *,
        owner: str | None = None,
    ) -> None:
        """A batch's answers, one transaction: the batch row, its calls' states, the answers
        as completions (a call's stored answer is kept, not doubled), the paid calls' stats."""


class SpendStore(_Closable, Protocol):
    """Budget caps and the response cache (DESIGN §11). Money in exact ``Decimal`` USD."""

    async def open_budgets(
        self, run_id: str, caps: Mapping[str, Decimal | None], spent: Mapping[str, Decimal]
    ) -> list[BudgetRow]:
        """Set the run's budgets (scope ``""``: the run; else a step) as an execution
        starts: a cap given replaces the stored one (``None`` keeps it; no budget is made
        for it), ``spent`` is what the run's calls cost so far, reservations start at 0
        (those of an execution that died are gone). Returns every budget of the run."""

    async def get_budgets(self, run_id: str) -> list[BudgetRow]: ...

    async def reserve(self, run_id: str, scopes: Sequence[str], amount: Decimal) -> str | None:
        """Reserve ``amount`` in every one of ``scopes``, atomically (all or none, across
        processes): None if reserved, else the scope whose cap it would cross."""

    async def settle(
        self, run_id: str, scopes: Sequence[str], reserved: Decimal, cost: Decimal
    ) -> None:
        """A call answered (or failed): its reservation released, its cost spent."""

    async def budget_reached(self, run_id: str, scope: str, reason: str) -> None:
        """Note why the run stopped on ``scope``'s budget (until the next ``open_budgets``)."""

    async def cache_get(self, key: str) -> CacheEntry | None:
        """The cached answer of ``key`` (its hit counted), or None."""

    async def cache_put(self, entry: CacheEntry) -> None:
        """Cache an answer; a key cached already keeps its first answer."""

    async def cache_stats(self) -> CacheStats: ...

    async def cache_clear(self, older_than: datetime | None = None) -> int:
        """Delete cached answers made before ``older_than`` (all for None); how many."""

    async def count_cache(self, older_than: datetime | None = None) -> int:
        """How many cached answers ``cache_clear(older_than)`` would delete."""


class ExecutionStore(ProviderBatchStore, SpendStore, Protocol):
    """What a driver needs to execute a run (its provider batches included)."""

    async def insert_run(self, run: RunRow, nodes: Sequence[NodeRow]) -> dict[str, int]:
        """Insert a run with all its nodes, all or nothing; returns step name -> node id."""

    async def insert_nodes(
        self,
        nodes: Sequence[NodeRow],
        *,
        owner: str | None = None,
        map_items: tuple[int, int] | None = None,
    ) -> dict[str, int]:
        """Insert nodes of an existing run (a map's children); returns step name -> node id.
        ``owner``: only while it holds the run's lease (as ``WriteBatch.owner``).
        ``map_items``: ``(group node id, items)``, the group's ``set_map_items`` in the same
        transaction (a map's first chunk: one transaction less as a map opens)."""

    async def set_map_items(self, node_id: int, items: int, *, owner: str | None = None) -> None:
        """A map group's number of items, as its expansion begins (readers elsewhere count
        those with no child stored yet as pending). ``owner``: as for ``insert_nodes``."""

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def get_nodes(self, run_id: str) -> list[NodeRow]:
        """Every node of the run, in id order."""

    async def get_completions(self, run_id: str, step: str) -> dict[int, tuple[str, str]]:
        """Stored responses of a node: call_index -> (request_hash, response JSON)."""

    async def acquire_lease(
        self,
        run_id: str,
        owner: str,
        ttl: float,
        *,
        steal_from: str | None = None,
        count_execution: bool = False,
    ) -> bool:
        """Take the run's lease if free, expired, ours, or held by ``steal_from`` (dead);
        ``count_execution``: add one to the run's ``executions`` in the same write (a
        re-run that resumes it: any other sees at once that it was resumed)."""

    async def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        """Extend our lease; False if another owner holds it now."""

    async def end_failed_start(self, run_id: str, owner: str) -> None:
        """An execution that failed before it began (``execute_run``), if ``owner`` still
        holds the run's lease: the lease given back (no owner, no expiry); a row it left
        ``running`` ended as an interrupt ends one (``cancelled``, ``stopped_by`` the
        owner, ``finished_at`` now), not left running with no owner: a process that is
        gone then leaves it to the next ``wf.run()`` (``_unfinished``). Another status
        stays as it is."""

    def writer(self) -> AbstractAsyncContextManager[BatchWriter]:
        """``async with store.writer() as w: await w.write(batch)`` for a run's commits."""

    async def write(self, batch: WriteBatch) -> None:
        """Commit one batch on its own (outside a run's writer)."""


class ReadStore(_Closable, Protocol):
    """Reading runs back: ``bn.Run.load``, ``bn.watch``, run-id lookups."""

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def get_nodes(self, run_id: str) -> list[NodeRow]: ...

    async def get_stats(self, run_ids: Sequence[str]) -> list[CallRecord]:
        """The LLM calls of these runs, in the order they were stored."""

    async def get_debug_logs(self, run_id: str, step: str | None = None) -> list[LogRow]: ...

    async def get_attempts(self, run_id: str) -> list[AttemptRow]:
        """The run's ended attempts (those that failed, and the one completed after them),
        in the order they were stored."""

    async def get_ran_on(self, run_id: str) -> dict[str, str]:
        """Which worker ran each step of a run submitted to workers (its latest attempt
        that stored an outcome): step -> worker id ``host:pid:tag``; empty in-process."""

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        """Runs, newest first."""

    async def newest_of_kind(self, workflow: str, params: str, key: str) -> NewestRuns:
        """The newest run of ``workflow`` with these params (as stored) and resume key,
        whatever its status (of two created at the same instant: either), None if there
        is none (``wf.run()`` after a kernel restart); and, read in the same statement,
        the newest run with these params whatever its key (a run the steps' code of which
        changed since: ``wf.run()`` names it when it is unfinished)."""

    async def recent_run_ids(self, workflow: str, limit: int) -> list[str]:
        """The ids of the workflow's ``limit`` newest runs, newest first (only the ids: the
        ``run_id=`` typo guard compares them with the one given)."""

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]: ...

    async def submitted_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` were submitted to workers (``wf.submit``): theirs to run."""

    async def run_ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        """Run ids beginning with ``prefix`` (an exact match first), at most ``limit``."""

    async def change_marks(self, run_id: str) -> ChangeMarks:
        """How far the stored rows of a run go now (read before a snapshot)."""

    async def changes_since(self, run_id: str, marks: ChangeMarks) -> RunChanges:
        """The run row, node rows updated at or after ``marks.nodes_at``, newer stats and logs."""

    def notifications(self, on_change: Callable[[str], None]) -> AbstractAsyncContextManager[bool]:
        """Call ``on_change(run_id)`` after each commit that changes a run, from any process,
        for the block; yields False where the store has no such channel (callers poll)."""

    async def get_provider_batches(self, run_id: str) -> list[ProviderBatchRow]:
        """The run's provider batches, in the order they were stored."""

    async def get_budgets(self, run_id: str) -> list[BudgetRow]:
        """The run's budgets (DESIGN §11): its own (scope ``""``) and its steps'."""


class ReportStore(_Closable, Protocol):
    """Reports and run listings, aggregated by the store."""

    async def aggregate_stats(self, where: RunFilter | None = None) -> list[StatAggregate]:
        """Calls summed per (run, step, model), runs in creation order."""

    async def fanout_children(self, where: RunFilter | None = None) -> list[FanoutChild]:
        """Multi-model fan-out children of the runs selected."""

    async def run_summaries(
        self, where: RunFilter | None = None, limit: int | None = None
    ) -> list[RunSummaryRow]:
        """Runs newest first with step counts, calls, tokens and cost."""

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]: ...


class PruneStore(_Closable, Protocol):
    """Data retention: finished, unleased runs and old debug logs."""

    async def prune_runs_batch(self, cutoff: datetime, batch_size: int) -> dict[str, int]:
        """Delete up to ``batch_size`` prunable runs with all their rows; table -> rows."""

    async def prune_debug_logs_batch(self, cutoff: datetime, batch_size: int) -> int: ...

    async def count_prunable(
        self, cutoff: datetime | None, log_cutoff: datetime | None
    ) -> dict[str, int]:
        """What pruning would delete now, per table."""


class RunStore(ExecutionStore, ReadStore, ReportStore, PruneStore, SpendStore, Protocol):
    """Everything: what ``Store.open(db)`` returns."""

    async def __aenter__(self) -> RunStore: ...

    async def __aexit__(self, *exc: object) -> None: ...
