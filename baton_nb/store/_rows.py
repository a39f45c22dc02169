"""What the store reads and writes, typed: one dataclass per kind of row (no dicts).

The SQL store maps these to table columns (``_sql_*``), the in-memory store keeps them as
they are (``_memory``). Values are decoded: JSON lists as lists, states as enums; a
step's result and a run's params stay JSON text (they are compared and decoded lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .. import _jsonutil
from .._states import NodeKind, RunStatus, State
from .._usage import Usage
from ..events import CallFinished
from ..pricing import CallPricing, price_call

__all__ = [
    "NODE_UPDATE_FIELDS",
    "PRUNE_TABLES",
    "UNANSWERED",
    "AttemptRow",
    "CallRecord",
    "ChangeMarks",
    "CompletionRow",
    "FanoutChild",
    "LogRow",
    "NewestRuns",
    "NodeRow",
    "NodeUpdate",
    "RanOn",
    "RunChanges",
    "RunFilter",
    "RunRow",
    "RunStopped",
    "RunSummaryRow",
    "RunUpdate",
    "StatAggregate",
    "StepWorkerRow",
    "WriteBatch",
    "distinct_values",
    "utcnow",
]

# The price source (stored ``price_source``) of the worst-case charge of a call's attempts
# that reached the provider with no answer (``CallRecord.unanswered``).
UNANSWERED = "no answer, counted at the worst case"

# Every table that holds rows of a run: what pruning counts and deletes, in this order.
PRUNE_TABLES = (
    "workflow_runs",
    "workflow_nodes",
    "workflow_step_stats",
    "workflow_completions",
    "workflow_debug_logs",
    "workflow_provider_batches",
    "workflow_batch_requests",
    "workflow_attempts",
    "workflow_budgets",
)


def utcnow() -> datetime:
    """Aware UTC now (the store's only clock; timestamps are aware UTC everywhere)."""
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class RunRow:
    """One ``workflow_runs`` row."""

    id: str
    workflow: str
    params: str  # JSON text, compared as stored when a run is resumed
    status: RunStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_steps: list[str] = field(default_factory=list)
    executions: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # A hash of the model map and the steps' code the run was started with: ``wf.run()``
    # resumes an unfinished run only when both are the same (None: not known, never).
    resume_key: str | None = None
    # The lease owner (``host:pid:tag``) of the execution an interrupt or an outside
    # cancellation stopped (not ``run.cancel()`` nor a budget): a ``cancelled`` run that
    # ``wf.run()`` resumes once that process is gone (a restarted kernel); else None.
    stopped_by: str | None = None


@dataclass(slots=True)
class NodeRow:
    """One ``workflow_nodes`` row: a step, a fan-out group, or one fan-out child."""

    run_id: str
    step: str
    kind: NodeKind
    worker: str
    deps: list[str]
    remaining_deps: int
    max_attempts: int
    updated_at: datetime
    id: int | None = None  # None until inserted
    parent: str | None = None
    ignore_cancelled: bool = False
    ignore_discarded: bool = False
    model: str | None = None
    item_index: int | None = None
    state: State = State.PENDING
    attempt: int = 0
    error: str | None = None
    result: str | None = None  # JSON text
    has_result: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    map_items: int | None = None  # a map group's items, once its expansion began


# The columns of a node that change while it runs, in this order, then the node's id: the
# runtime's most frequent write, kept a plain tuple (made thousands of times a second).
NodeUpdate = tuple[
    str,  # state: a State's value (plain str: the drivers bind it fastest)
    int,  # attempt
    "str | None",  # error
    "str | None",  # result (JSON text)
    bool,  # has_result
    int,  # remaining_deps
    "datetime | None",  # started_at
    "datetime | None",  # finished_at
    datetime,  # updated_at
    int,  # id
]
NODE_UPDATE_FIELDS = (
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


@dataclass(slots=True)
class CallRecord:
    """One LLM call (one ``workflow_step_stats`` row).

    ``pricing`` says how ``cost`` was found (the name priced, the price source and the
    matched price entry, the per-request fees within the cost); ``None`` for rows stored
    before baton_nb recorded it.
    """

    run_id: str
    step: str
    model: str
    provider: str
    attempt: int
    call_index: int
    usage: Usage
    cost: Decimal | None
    latency_ms: float
    replayed: bool
    estimated: bool
    created_at: datetime
    pricing: CallPricing | None = None
    id: int | None = None  # the stored row's id (None until stored)
    cached: bool = False  # answered from the response cache: cost 0 (migration 11)
    saved: Decimal | None = None  # what a cached call would have cost

    @classmethod
    def from_completion(
        cls, run_id: str, step: str, attempt: int, call_index: int, completion: Any,
        created_at: datetime,
    ) -> CallRecord:  # fmt: skip
        """The record of one ``bn.Completion`` (``completion``) of a step."""
        return cls(  # positional, in field order (no keyword matching: once a call)
            run_id,
            step,
            completion.model,
            completion.provider,
            attempt,
            call_index,
            completion.usage,
            completion.cost,
            completion.latency_ms,
            completion.replayed,
            completion.estimated,
            created_at,
            completion.pricing,
            None,  # id
            completion.cached,
            completion.saved,
        )

    @classmethod
    def unanswered(
        cls, run_id: str, step: str, attempt: int, call_index: int, model: str,
        provider: str, cost: Decimal, created_at: datetime,
    ) -> CallRecord:  # fmt: skip
        """The attempts of a call that reached the provider with no answer saying what they
        cost, counted by a budget at their worst case (``cost``): 0 tokens, no latency,
        priced by ``UNANSWERED`` (the stored ``price_source``: no migration), which
        reports show on a line of their own and ``repriced`` keeps."""
        return cls(
            run_id=run_id,
            step=step,
            model=model,
            provider=provider,
            attempt=attempt,
            call_index=call_index,
            usage=Usage(),
            cost=cost,
            latency_ms=0.0,
            replayed=False,
            estimated=True,
            created_at=created_at,
            pricing=CallPricing(priced_as=model, source=UNANSWERED),
        )

    @property
    def is_unanswered(self) -> bool:
        """Whether this is the worst-case charge of attempts with no answer (``unanswered``)."""
        return self.pricing is not None and self.pricing.source == UNANSWERED

    def repriced(self) -> CallRecord:
        """This call priced again with today's tables at the day it was made (for models
        that were unknown then, or a corrected price). A cost the provider reported
        (OpenRouter) is what was billed and stays, and so does the worst case of attempts
        with no answer (no tokens to price again)."""
        source = self.pricing.source if self.pricing is not None else None
        if source is not None and (source.startswith("reported by") or source == UNANSWERED):
            return self
        name = self.pricing.priced_as if self.pricing is not None else self.model
        batch = self.pricing is not None and self.pricing.batch
        cost, pricing = price_call(
            name, self.usage, called_as=self.model, at=self.created_at, batch=batch, stored=True
        )
        return replace(self, cost=cost, pricing=pricing)

    def event(self, workflow_label: str) -> CallFinished:
        """This call as the ``CallFinished`` event published on the run's topics."""
        return CallFinished(
            self.run_id,
            workflow_label,
            self.step,
            self.model,
            self.provider,
            self.usage,
            self.cost,
            self.latency_ms,
            self.replayed,
            self.estimated,
            self.created_at,
            self.is_unanswered,
        )


@dataclass(slots=True)
class CompletionRow:
    """A stored provider response, for replay (``workflow_completions``)."""

    run_id: str
    step: str
    call_index: int
    request_hash: str
    response: str  # JSON text of the Completion
    created_at: datetime


@dataclass(slots=True)
class LogRow:
    """One captured-context entry (``workflow_debug_logs``)."""

    run_id: str
    step: str
    attempt: int
    kind: str  # log | request | response | error
    message: str
    data: str | None  # JSON text
    created_at: datetime
    id: int | None = None  # None until stored

    def entry(self) -> dict[str, Any]:
        """As ``run.context(step)`` returns it: ``data`` decoded."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "step": self.step,
            "attempt": self.attempt,
            "kind": self.kind,
            "message": self.message,
            "data": _jsonutil.loads(self.data),
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One ended attempt of a step (``workflow_attempts``, ``run.steps[name].attempts``):
    every attempt that failed, and the one that completed after failed ones."""

    run_id: str
    step: str
    attempt: int
    state: str  # where the attempt left the step: retryable, discarded or completed
    error: str | None  # what it raised (None for the completed one)
    started_at: datetime
    finished_at: datetime
    id: int | None = None  # None until stored

    @property
    def duration(self) -> float:
        """Seconds the attempt took."""
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RunStopped:
    """The newest run of a kind (workflow, params and resume key: ``newest_of_kind``),
    only what tells whether an interrupt stopped it: its status and ``stopped_by``; and
    its resume key (``NewestRuns.of_params``: the run's key may be another)."""

    id: str
    status: RunStatus
    stopped_by: str | None
    resume_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewestRuns:
    """``newest_of_kind``: the newest run of a workflow with these params and resume key,
    and the newest with these params whatever its key (the same run when it has it)."""

    of_kind: RunStopped | None
    of_params: RunStopped | None


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """A change of a run's row: its status, and the lease given back when it ends."""

    id: str
    status: RunStatus
    failed_steps: Sequence[str] = ()
    finished_at: datetime | None = None
    executions: int | None = None  # unchanged when None
    release_lease: bool = False
    stopped_by: str | None = None  # written with every status (``RunRow.stopped_by``)
    resume_key: str | None = None  # unchanged when None (a resume by run_id=: this code's)
    started_at: datetime | None = None  # unchanged when None (a submitted run's first start)


@dataclass(frozen=True, slots=True)
class StepWorkerRow:
    """Which worker ran an attempt of ``step`` (``workflow_step_workers``): written with the
    attempt's outcome, by the worker that stored it (a task) or by the run's coordinator
    (an attempt it ran itself, in its group commit)."""

    run_id: str
    step: str
    attempt: int
    worker: str
    finished_at: datetime


@dataclass(slots=True)
class WriteBatch:
    """Writes that commit together, in one transaction."""

    run_id: str | None = None  # the run the node updates belong to
    nodes: list[NodeUpdate] = field(default_factory=list)
    run: RunUpdate | None = None
    completions: list[CompletionRow] = field(default_factory=list)
    stats: list[CallRecord] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    ran_on: list[StepWorkerRow] = field(default_factory=list)  # runs on workers only
    # The lease owner this batch must be committed under (``run_id``'s executor): checked in
    # the commit's own transaction, serialised against a takeover; another owner holds the
    # run's lease (or none does) and nothing of the batch is written, the write raises
    # ``RunLocked``. None: written whoever holds it (a worker's task outcomes).
    owner: str | None = None

    def __bool__(self) -> bool:
        return bool(
            self.nodes
            or self.run
            or self.completions
            or self.stats
            or self.logs
            or self.attempts
            or self.ran_on
        )

    def run_ids(self) -> set[str]:
        """Every run these writes touch."""
        ids = {
            row.run_id
            for rows in (self.completions, self.stats, self.logs, self.attempts, self.ran_on)
            for row in rows
        }
        if self.run is not None:
            ids.add(self.run.id)
        if self.run_id is not None and self.nodes:
            ids.add(self.run_id)
        return ids


# ── following a run (bn.watch) ───────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class ChangeMarks:
    """How far a reader has seen a run: node rows up to ``nodes_at`` (inclusive: rows of the
    same instant are read again), stats and log rows up to their ids."""

    nodes_at: datetime | None = None
    last_stat_id: int = 0
    last_log_id: int = 0
    last_ran_on_id: int = 0  # which worker ran a step (workers, DESIGN §10): rows up to it


@dataclass(frozen=True, slots=True)
class RanOn:
    """A worker stored the outcome of an attempt of ``step`` (runs on workers)."""

    id: int
    step: str
    worker: str


@dataclass(slots=True)
class RunChanges:
    """A run's rows changed since some ``ChangeMarks`` (one consistent read)."""

    run: RunRow | None
    nodes: list[NodeRow]
    calls: list[CallRecord]
    logs: list[LogRow]
    ran_on: list[RanOn] = field(default_factory=list)  # oldest first


# ── reports, listings ────────────────────────────────────────────────────────


@dataclass(frozen=True)
class RunFilter:
    """Which runs a query covers; ``None`` fields do not filter."""

    run_ids: Sequence[str] | None = None
    workflow: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None

    @property
    def empty(self) -> bool:
        return (
            self.run_ids is None
            and self.workflow is None
            and self.since is None
            and self.until is None
            and self.status is None
        )

    def matches(self, run: RunRow) -> bool:
        """The same test as the SQL store's WHERE clauses, for stores without SQL."""
        return (
            (self.run_ids is None or run.id in self.run_ids)
            and (self.workflow is None or run.workflow == self.workflow)
            and (self.since is None or run.created_at >= self.since)
            and (self.until is None or run.created_at < self.until)
            and (self.status is None or run.status == self.status)
        )


@dataclass(slots=True)
class StatAggregate:
    """LLM calls of one (run, step, model) summed; replayed calls counted apart, never summed."""

    run_id: str
    workflow: str
    step: str
    model: str
    provider: str
    parent: str | None
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal | None = None  # sum of the priced calls; None when no call was priced
    fees: Decimal | None = None  # per-request fees within ``cost``
    unpriced_calls: int = 0
    estimated_calls: int = 0
    latency_ms: float = 0.0
    replayed_calls: int = 0
    price_sources: list[str] = field(default_factory=list)  # see ``distinct_values``
    price_models: list[str] = field(default_factory=list)
    cached_calls: int = 0  # answered from the response cache (cost 0), not in ``calls``
    saved: Decimal | None = None  # what the cached calls would have cost
    # provider batches (DESIGN §12): paid calls sent in one (within ``calls``), and the
    # replayed calls that are their steps reading the answers back (within ``replayed_calls``)
    batch_calls: int = 0
    batch_replays: int = 0
    # attempts with no answer, counted at their worst case (``CallRecord.unanswered``):
    # within ``cost``, never in ``calls``, ``estimated_calls`` or ``latency_ms``
    unanswered: Decimal | None = None


def distinct_values(least: str | None, greatest: str | None, count: int) -> list[str]:
    """The distinct values of a text column over a group, as the stores report them: the
    least and the greatest, and ``"N more"`` for the others (SQL has no portable
    string_agg; one (run, step, model) has one or two)."""
    values = [v for v in dict.fromkeys((least, greatest)) if v]
    if count > len(values):
        values.append(f"{count - len(values)} more")
    return values


@dataclass(frozen=True)
class FanoutChild:
    """One child of a multi-model fan-out step: how it ended."""

    run_id: str
    parent: str
    step: str
    model: str
    state: State
    attempt: int
    error: str | None = None


@dataclass(slots=True)
class RunSummaryRow:
    """A run with its step counts (steps and children, not groups) and call totals."""

    id: str
    workflow: str
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    failed_steps: list[str]
    steps: int = 0
    steps_completed: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None
    unpriced_calls: int = 0
    replayed_calls: int = 0
    cached_calls: int = 0  # answered from the response cache (not in calls)
    lease_owner: str | None = None  # who executes it (a running run): abandoned if gone
    lease_expires_at: datetime | None = None
