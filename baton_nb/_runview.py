"""The read model of a run: what every view of a run shows, computed in one place.

``RunView`` holds a run's state (status, each step's state, results, calls, logs) and
answers what the views ask: counts per state (``_counts``: one vocabulary), costs and
tokens, a step's totals with its fan-out children. ``bn.Run`` is a ``RunView`` with the user's
actions on top; the DAG widget, the text progress line, ``Run.__repr__``, ``baton-nb
show`` and cost reports all read it through these methods.

It changes through one narrow path only (the "updates" section): the in-process runtime
calls it as steps change, ``bn.watch`` as rows and events arrive. Nothing else assigns
its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, TypeVar

from . import _jsonutil
from ._counts import StepCounts, count_steps
from ._money import add_money, fmt_cost, fmt_money, normalize_money, sum_money
from ._states import FINISHED_STATUSES, TERMINAL_STATES, NodeKind, RunStatus, State
from ._usage import Usage, usage_values
from .store import AttemptRow, CallRecord, LogRow, NodeRow, ProviderBatchRow, RunRow

__all__ = [
    "RunView",
    "SpendState",
    "StepInfo",
    "StepTotals",
    "budget_resume_line",
    "cache_savings",
    "count_unstored",
    "spend_state",
    "status_text",
]

_NO_USAGE = Usage()
_REPLAYED, _CACHED, _USAGE, _COST = (attrgetter(a) for a in ("replayed", "cached", "usage", "cost"))
V = TypeVar("V", bound="RunView")


@dataclass(slots=True)
class StepInfo:
    """The state of one step or fan-out child (``run.steps[name]``)."""

    name: str
    job_id: int
    kind: NodeKind = NodeKind.STEP
    parent: str | None = None
    deps: list[str] = field(default_factory=list)
    worker: str = ""
    state: State = State.PENDING
    attempt: int = 0
    max_attempts: int = 1
    error: str | None = None
    has_result: bool = False
    model: str | None = None
    item_index: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage = _NO_USAGE  # frozen: one shared zero, replaced (not mutated) by add_call
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0
    calls: int = 0
    replayed_calls: int = 0
    # answered from the response cache (DESIGN §11): in ``calls``, like replays, but no
    # tokens, latency or cost added (nothing bought)
    cached_calls: int = 0
    latency_ms: float = 0.0
    children: list[str] = field(default_factory=list)
    # Earlier attempts, kept: each one that failed (its error, when, how long) and the one
    # that completed after them; empty for a step that completed at its first attempt.
    attempts: list[AttemptRow] = field(default_factory=list)
    # The worker that ran it (``host:pid:tag``) when the run was submitted to workers.
    ran_on: str = ""
    # A map's items whose children are not stored yet, while its expansion stores them a
    # chunk at a time (``runtime/_expand``): counted pending, so totals are right from the
    # start. In another process, from the map's stored item count (``count_unstored``).
    unstored: int = 0

    @classmethod
    def from_row(cls, row: NodeRow) -> StepInfo:
        assert row.id is not None
        return cls(
            name=row.step,
            job_id=row.id,
            kind=row.kind,
            parent=row.parent,
            deps=row.deps,  # shared with the row and the runtime's node: read, never changed
            worker=row.worker,
            state=row.state,
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            error=row.error,
            has_result=row.has_result,
            model=row.model,
            item_index=row.item_index,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    @property
    def duration(self) -> float | None:
        """Seconds from first start to finish (None until both are known)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def add_attempt(self, attempt: AttemptRow) -> None:
        """An attempt of this step ended (failed, or completed after failed ones)."""
        self.attempts.append(attempt)

    def add_call(self, call: CallRecord) -> None:
        if call.is_unanswered and call.cost is not None:  # a charge, not a call
            self.cost = _plus(self.cost, call.cost)
            return
        self.calls += 1
        if call.replayed:
            self.replayed_calls += 1
            return
        if call.cached:
            self.cached_calls += 1
            return
        # A step's first call (a map child's only one, usually): its usage itself (frozen),
        # not a sum with zero made and kept per child.
        usage = self.usage
        self.usage = call.usage if usage is _NO_USAGE else usage + call.usage
        self.latency_ms += call.latency_ms
        if call.cost is None:
            self.unpriced_calls += 1
        else:
            self.cost = _plus(self.cost, call.cost)


def _plus(total: Decimal, cost: Decimal) -> Decimal:
    """``total + cost`` without trailing zeros (``0.00012815 + 0.00006685`` is
    ``0.000195``, not ``0.00019500``): the call's own cost when ``total`` is 0 (a step's
    first call, a map child's only one: no sum made). A call's cost has none already."""
    return normalize_money(add_money(total, cost)) if total else cost


@dataclass(frozen=True)
class StepTotals:
    """A step's LLM calls with its fan-out children's: what ``baton-nb show`` lists."""

    calls: int
    usage: Usage
    cost: Decimal
    unpriced_calls: int


@dataclass
class _CallTotals:
    """What a ``RunView`` has summed of its ``calls`` list so far (the first ``counted``)."""

    calls: list[CallRecord] | None
    counted: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    tokens: Usage = _NO_USAGE
    cached: int = 0  # calls answered from the response cache (DESIGN §11)
    saved: Decimal = Decimal(0)  # what those would have cost


def _add_calls(
    totals: _CallTotals, new: list[CallRecord], saved: list[Decimal]
) -> tuple[list[Usage], list[Decimal]]:
    """``_call_totals``' pass over new calls some of which were replayed or cached: their
    usages and costs to add, the cached ones counted (what they saved into ``saved``)."""
    usages: list[Usage] = []
    costs: list[Decimal] = []
    for call in new:
        if call.replayed:
            continue
        if call.cached:  # cost 0, no tokens bought: counted apart
            totals.cached += 1
            if call.saved is not None:
                saved.append(call.saved)
            continue
        cost = call.cost
        if cost is None:
            totals.unpriced += 1
        else:
            costs.append(cost)
        usages.append(call.usage)
    return usages, costs


@dataclass
class SpendState:
    """A run's budget (DESIGN §11) as the views show it: the cap, what its calls cost
    (``spent``), what calls in flight hold (``reserved``), and why the run stopped if its
    budget did it (``reason``, e.g. ``budget reached: ...``)."""

    budget: Decimal
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    reason: str | None = None
    # What the run's provider batches cost: not held to the budget (docs/spend_less.md,
    # Limits), so not in ``spent``; filled by ``spend_state`` for the views.
    batched: Decimal = Decimal(0)

    def text(self) -> str:
        """``$0.42 spent of $2.50 ($0.01 reserved)``: the one way every view says it; with
        calls in provider batches, ``$0 of $1 spent by calls held to the budget; $0.0002
        in provider batches, not held to it``: never a bare ``$0 spent`` on a run that
        paid for batches."""
        held = f" (${fmt_money(self.reserved)} reserved)" if self.reserved else ""
        spent, budget = fmt_money(self.spent), fmt_money(self.budget)
        if not self.batched:
            return f"${spent} spent of ${budget}{held}"
        return (
            f"${spent} of ${budget} spent by calls held to the budget{held}; "
            f"${fmt_money(self.batched)} in provider batches, not held to it"
        )


def spend_state(view: RunView) -> SpendState | None:
    """``view.spend`` as the views show it: with what its provider batches cost so far
    (``batched``), which the budget does not hold. ``view.spend`` itself is the budget's
    live state (the runtime updates it in place): a copy when there are batches."""
    state = view.spend
    if state is None or not view.batches:
        return state
    costs = [b.cost for b in view.batches.values() if b.cost is not None]
    batched = normalize_money(sum_money(costs))
    return replace(state, batched=batched) if batched else state


def cache_savings(view: RunView) -> tuple[int, Decimal]:
    """Calls of ``view`` answered from the response cache (cost 0; DESIGN §11), and the USD
    they would have cost (their price when they were paid)."""
    totals = view._call_totals()
    return totals.cached, normalize_money(totals.saved)


def status_text(view: RunView) -> str:
    """The run's status as every view says it: ``completed``, ``cancelled (budget
    reached)`` (a budget stopped it), ``taken over by host:pid:tag`` (this execution
    lost the run's lease; the run goes on there), or ``abandoned`` (stored ``running``,
    its process gone: as ``bn.runs()`` and ``baton-nb runs`` say it)."""
    if view.status is RunStatus.RUNNING and view.abandoned:
        return "abandoned"
    if view.status is RunStatus.TAKEN_OVER:
        by = view.taken_over_by
        return f"taken over by {by}" if by else "taken over"
    if view.status is RunStatus.CANCELLED and view.budget_stop:
        return f"{view.status} (budget reached)"
    return str(view.status)


def budget_resume_line(run_id: str, step: str | None = None) -> str:
    """The line that resumes a run a budget stopped (DESIGN §11), the run's or ``step``'s:
    the same budget would stop it again at once, so it says how to raise it. It ends the
    budget's reason, which the resume message, the repr and the cancelled steps' errors
    all give (``await wf.run(``: ``Run.resume_message`` names the notebook's variable)."""
    kept = "completed steps and paid calls are not run again"
    if step is None:
        return f'Resume with a higher budget ({kept}): await wf.run(run_id="{run_id}", budget=...)'
    return (
        f"Raise the budget of step {step!r} (@wf.step(budget=...) or wf.add(..., budget=...)) "
        f'and resume ({kept}): await wf.run(run_id="{run_id}")'
    )


class RunView:
    """A run's state and what views derive from it (see the module docstring)."""

    def __init__(self, run_id: str, workflow: str, *, params: dict[str, Any] | None = None) -> None:
        self.id = run_id
        self.workflow = workflow
        self.params: dict[str, Any] = params or {}
        self.status = RunStatus.PENDING
        # ``taken_over``: the lease's holder that goes on with the run, when known
        self.taken_over_by: str | None = None
        # read back (``Run.load``) stored ``running``, its executing process gone (killed)
        self.abandoned = False
        # What the views say of the run besides its steps, set by who follows it (the
        # front of ``wf.run(workers=True)``: no live worker, a coordinator lost)
        self.notice: str | None = None
        self.steps: dict[str, StepInfo] = {}
        self.results: dict[str, Any] = {}
        self.failed_steps: list[str] = []
        self.calls: list[CallRecord] = []
        self.logs: list[LogRow] = []
        self.created_at: datetime | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.db_url: str | None = None
        # provider batches (DESIGN §12) by key, in the order they were made
        self.batches: dict[str, ProviderBatchRow] = {}
        # the run's budget (DESIGN §11): None when it has none
        self.spend: SpendState | None = None
        # why a budget (the run's or a step's) stopped the run, ending with
        # ``budget_resume_line``; None when no budget stopped it
        self.budget_stop: str | None = None
        self._totals = _CallTotals(None)
        # calls whose step was not added yet, by step: added to its totals when it is
        self._early_calls: dict[str, list[CallRecord]] = {}

    @classmethod
    def from_rows(
        cls: type[V],
        db_url: str,
        row: RunRow,
        nodes: list[NodeRow],
        calls: list[CallRecord],
        logs: list[LogRow],
    ) -> V:
        """A run from its stored rows (nodes in id order, calls and logs as stored)."""
        view = cls(row.id, row.workflow, params=_jsonutil.loads(row.params))
        view.db_url = db_url
        view.status = row.status
        view.created_at, view.started_at = row.created_at, row.started_at
        view.finished_at = row.finished_at
        view.failed_steps = list(row.failed_steps)
        for node in nodes:
            view.add_step(StepInfo.from_row(node))
            if node.state is State.COMPLETED:
                view.results[node.step] = _jsonutil.loads(node.result)
        for node in nodes:
            if node.map_items is not None and view.status not in FINISHED_STATUSES:
                count_unstored(view.steps, node.step, node.map_items)
        for call in calls:
            view.add_call(call)
        view.logs = list(logs)
        return view

    # ── what views read ───────────────────────────────────────────────────────

    @property
    def cost(self) -> Decimal | None:
        """USD of every LLM call of the run (replayed calls are not counted twice), or
        ``None`` when a call's model has no known price: the total is then unknown, as
        ``CallRecord.cost`` and a report row's ``cost`` are. ``known_cost`` is the sum of
        the priced calls (a lower bound then) and ``unpriced_calls`` says how many are
        missing from it."""
        return None if self.unpriced_calls else self.known_cost

    @property
    def known_cost(self) -> Decimal:
        """USD of the priced calls: ``cost`` when every call had a price, else a lower bound."""
        return normalize_money(self._call_totals().cost)

    def cost_text(self) -> str:
        """The cost as every view shows it: ``$0.0123``, or with the unknown part named."""
        return fmt_cost(self.known_cost, self.unpriced_calls)

    @property
    def unpriced_calls(self) -> int:
        """Number of calls whose model has no known price (their cost is unknown, not 0)."""
        return self._call_totals().unpriced

    @property
    def tokens(self) -> Usage:
        return self._call_totals().tokens

    def _call_totals(self) -> _CallTotals:
        """Sums over ``calls``, extended by the calls appended since the last look.

        The widget's header asks for them up to 10 times a second while a run appends
        calls: summing every call each time cost O(calls) per redraw (0.2 s at 100,000
        calls). ``calls`` only grows while a run executes; a list replaced or shortened
        is summed again from the start.
        """
        totals = self._totals
        calls = self.calls
        if totals.calls is not calls or totals.counted > len(calls):
            totals = self._totals = _CallTotals(calls)
        new = calls[totals.counted :]  # a copy of the new ones only
        if not new:
            return totals
        usages: list[Usage]
        costs: list[Decimal]
        saved: list[Decimal] = []
        if any(map(_REPLAYED, new)) or any(map(_CACHED, new)):
            usages, costs = _add_calls(totals, new, saved)
        else:  # none replayed or cached (a run's own calls): read off in C, ~4 times faster
            usages = list(map(_USAGE, new))
            # (not ``count(None)``: comparing a Decimal with None costs it an ABC check)
            costs = [cost for cost in map(_COST, new) if cost is not None]
            totals.unpriced += len(new) - len(costs)
        if costs:
            totals.cost = add_money(totals.cost, sum_money(costs))
        if saved:
            totals.saved = add_money(totals.saved, sum_money(saved))
        if usages:  # summed field by field at once: a Usage built per call cost ~1 us each
            counts = zip(usage_values(totals.tokens), *map(usage_values, usages), strict=True)
            totals.tokens = Usage(*map(sum, counts))
        totals.counted += len(new)  # (not ``len(calls)``: a call may have come since)
        return totals

    @property
    def done(self) -> bool:
        """Nothing more changes this view: the run finished, or (a live Run) its execution
        here was taken over by another process (follow the run there: ``bn.watch``)."""
        return self.status in FINISHED_STATUSES or self.status is RunStatus.TAKEN_OVER

    def counts(self) -> StepCounts:
        """Steps and fan-out children per state (groups are not steps): what every view
        shows, in one vocabulary (``_counts``)."""
        return count_steps(self.steps.values())

    def step_totals(self, name: str) -> StepTotals:
        """The calls of step ``name`` and of its fan-out children, summed."""
        step = self.steps[name]
        calls, usage, cost, unpriced = step.calls, step.usage, step.cost, step.unpriced_calls
        for child in (self.steps[c] for c in step.children):
            calls += child.calls
            usage = usage + child.usage
            cost = add_money(cost, child.cost)
            unpriced += child.unpriced_calls
        return StepTotals(calls, usage, normalize_money(cost), unpriced)

    # ── updates: the one path that changes a run ──────────────────────────────

    def add_step(self, info: StepInfo) -> None:
        """A new step or fan-out child (a map's children appear mid-run), or a step's
        info replaced."""
        known = info.name in self.steps
        self.steps[info.name] = info
        parent = self.steps.get(info.parent) if info.parent is not None else None
        # A parent's children are steps of the run: a step new to the run is new to its
        # parent (no scan of the children list: a 100,000-item map made that minutes).
        if parent is not None and not known:
            parent.children.append(info.name)
        if self._early_calls and not known:  # its calls that came first: in its totals
            for call in self._early_calls.pop(info.name, ()):
                info.add_call(call)

    def sync_step(
        self,
        name: str,
        state: State,
        attempt: int,
        error: str | None,
        has_result: bool,
        started_at: datetime | None,
        finished_at: datetime | None,
    ) -> None:
        """A step's state as it is now."""
        info = self.steps[name]
        info.state = state
        info.attempt = attempt
        info.error = error
        info.has_result = has_result
        info.started_at = started_at
        info.finished_at = finished_at

    def set_children(self, name: str, children: list[str]) -> None:
        """A fan-out group's children, in item order (a map's, once expanded)."""
        self.steps[name].children = list(children)

    def set_result(self, name: str, value: Any) -> None:
        self.results[name] = value

    def forget_result(self, name: str) -> None:
        self.results.pop(name, None)

    def add_call(self, call: CallRecord) -> None:
        self.calls.append(call)
        step = self.steps.get(call.step)
        if step is not None:
            step.add_call(call)
        else:  # its step not seen yet (read apart from the calls: ``bn.watch``, ``load``)
            self._early_calls.setdefault(call.step, []).append(call)

    def add_log(self, log: LogRow) -> None:
        self.logs.append(log)

    def sync_batch(self, batch: ProviderBatchRow) -> None:
        """A provider batch as it is now (a copy: the runtime's row keeps changing)."""
        self.batches[batch.key] = replace(batch)

    def set_status(
        self,
        status: RunStatus,
        *,
        failed_steps: list[str] | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        taken_over_by: str | None = None,
    ) -> None:
        """The run's status; the other fields change when given (``taken_over_by`` goes
        with ``taken_over`` only)."""
        self.status = status
        self.taken_over_by = taken_over_by if status is RunStatus.TAKEN_OVER else None
        if failed_steps is not None:
            self.failed_steps = list(failed_steps)
        if started_at is not None:
            self.started_at = started_at
        if finished_at is not None:
            self.finished_at = finished_at


def _view_fields() -> frozenset[str]:
    return frozenset(vars(RunView("", "")))


_VIEW_FIELDS = _view_fields()  # a RunView's state, every field (``take_state``)


def take_state(view: RunView, other: RunView, keep: frozenset[str] = frozenset()) -> None:
    """``view`` becomes ``other``'s state (shared, not copied), but the fields named in
    ``keep``: a Run that stands for a run executing elsewhere (``bn.SubmittedRun``), read
    again. Not for a view that widgets follow (they hold its ``steps``)."""
    for name in _VIEW_FIELDS - keep:
        setattr(view, name, getattr(other, name))


def count_unstored(steps: Mapping[str, StepInfo], group: str, items: int) -> None:
    """A map's items with no child stored yet, from its stored item count (a reader in
    another process than the one expanding it): counted pending (``StepInfo.unstored``)."""
    info = steps[group]
    if info.state in TERMINAL_STATES:  # settled: its items not stored are not pending
        info.unstored = 0
        return
    # its stored children are listed on it (``add_step``): no scan of every step of the run
    info.unstored = max(0, items - len(info.children))
