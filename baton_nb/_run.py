"""``bn.Run``: what a run is and did. Live while it executes, loadable from the store after."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from . import _jsonutil
from ._counts import StepCounts, count_steps
from ._errors import RunNotFound, WorkflowFailed
from ._money import fmt_cost, normalize_money
from ._usage import Usage
from .events import CallFinished
from .pricing import CallPricing, price_call
from .store import Store, loads_list

if TYPE_CHECKING:
    from .reports import CostReport

__all__ = ["TERMINAL_STATES", "CallRecord", "NotebookView", "Run", "StepInfo"]

TERMINAL_STATES = frozenset({"completed", "discarded", "cancelled"})
FAILED_STATES = frozenset({"discarded", "cancelled"})
_NO_USAGE = Usage()


@dataclass
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

    @classmethod
    def from_completion(
        cls, run_id: str, step: str, attempt: int, call_index: int, completion: Any,
        created_at: datetime,
    ) -> CallRecord:  # fmt: skip
        """The record of one ``bn.Completion`` (``completion``) of a step."""
        return cls(
            run_id=run_id,
            step=step,
            model=completion.model,
            provider=completion.provider,
            attempt=attempt,
            call_index=call_index,
            usage=completion.usage,
            cost=completion.cost,
            latency_ms=completion.latency_ms,
            replayed=completion.replayed,
            estimated=completion.estimated,
            created_at=created_at,
            pricing=completion.pricing,
        )

    def stats_row(self) -> dict[str, Any]:
        """The ``workflow_step_stats`` row of this call (the one place that builds it)."""
        pricing = self.pricing
        return {
            "run_id": self.run_id,
            "step": self.step,
            "model": self.model,
            "provider": self.provider,
            "attempt": self.attempt,
            "call_index": self.call_index,
            **self.usage.to_dict(),
            "cost_usd": self.cost,
            "fees_usd": pricing.fees if pricing is not None else None,
            "priced_as": pricing.priced_as if pricing is not None else None,
            "price_source": pricing.source if pricing is not None else None,
            "price_model": pricing.model if pricing is not None else None,
            "latency_ms": self.latency_ms,
            "replayed": self.replayed,
            "estimated": self.estimated,
            "created_at": self.created_at,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRecord:
        fees = row.get("fees_usd")
        pricing = None
        if row.get("priced_as") or row.get("price_source"):
            pricing = CallPricing(
                priced_as=row.get("priced_as") or row["model"],
                source=row.get("price_source"),
                model=row.get("price_model"),
                fees=None if fees is None else normalize_money(fees),
            )
        return cls(
            run_id=row["run_id"],
            step=row["step"],
            model=row["model"],
            provider=row["provider"],
            attempt=row["attempt"],
            call_index=row["call_index"],
            usage=Usage.from_dict(row),
            cost=None if row["cost_usd"] is None else normalize_money(row["cost_usd"]),
            latency_ms=float(row["latency_ms"]),
            replayed=bool(row["replayed"]),
            estimated=bool(row["estimated"]),
            created_at=row["created_at"],
            pricing=pricing,
        )

    def repriced(self) -> CallRecord:
        """This call priced again with today's tables at the day it was made (for models
        that were unknown then, or a corrected price). A cost the provider reported
        (OpenRouter) is what was billed and stays."""
        source = self.pricing.source if self.pricing is not None else None
        if source is not None and source.startswith("reported by"):
            return self
        name = self.pricing.priced_as if self.pricing is not None else self.model
        cost, pricing = price_call(name, self.usage, called_as=self.model, at=self.created_at)
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
        )


@dataclass
class StepInfo:
    """The state of one step or fan-out child."""

    name: str
    job_id: int
    kind: str = "step"  # step | group | child
    parent: str | None = None
    deps: list[str] = field(default_factory=list)
    worker: str = ""
    state: str = "pending"
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
    latency_ms: float = 0.0
    children: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Seconds from first start to finish (None until both are known)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def add_call(self, call: CallRecord) -> None:
        self.calls += 1
        if call.replayed:
            self.replayed_calls += 1
            return
        self.usage = self.usage + call.usage
        self.latency_ms += call.latency_ms
        if call.cost is None:
            self.unpriced_calls += 1
        else:
            self.cost += call.cost


@dataclass
class _CallTotals:
    """What ``Run`` has summed of its ``calls`` list so far (the first ``counted``)."""

    calls: list[CallRecord] | None
    counted: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    tokens: Usage = _NO_USAGE


class Run:
    """A workflow run: status, per-step state, results, LLM calls and cost."""

    notebook_view: ClassVar[NotebookView | None] = None  # set by baton_nb.widget

    def __init__(self, run_id: str, workflow: str, *, params: dict[str, Any] | None = None) -> None:
        self.id = run_id
        self.workflow = workflow
        self.params: dict[str, Any] = params or {}
        self.status = "pending"
        self.steps: dict[str, StepInfo] = {}
        self.results: dict[str, Any] = {}
        self.failed_steps: list[str] = []
        self.calls: list[CallRecord] = []
        self.logs: list[dict[str, Any]] = []
        self.created_at: datetime | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.db_url: str | None = None
        self._canceller: Callable[[], None] | None = None
        self.cancel_requested = False
        self._totals = _CallTotals(None)

    # ── what users ask ────────────────────────────────────────────────────────

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

    @property
    def unpriced_calls(self) -> int:
        """Number of calls whose model has no known price (their cost is unknown, not 0)."""
        return self._call_totals().unpriced

    def cost_text(self) -> str:
        """The cost as every view shows it: ``$0.0123``, or with the unknown part named."""
        return fmt_cost(self.known_cost, self.unpriced_calls)

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
        for call in calls[totals.counted :]:  # a copy of the new ones only
            if call.replayed:
                continue
            if call.cost is None:
                totals.unpriced += 1
            else:
                totals.cost += call.cost
            totals.tokens = totals.tokens + call.usage
        totals.counted = len(calls)
        return totals

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def report(self, *, reprice: bool = False) -> CostReport:
        """Cost of the run's LLM calls. ``reprice=True`` prices every call again with
        today's price tables at the time it was made (a model that was unknown then may
        be known now); the stored costs are not changed."""
        from .reports import CostReport

        return CostReport.from_runs([self], reprice=reprice)

    def raise_for_status(self) -> Run:
        """Raise ``bn.WorkflowFailed`` unless the run completed; returns the run otherwise."""
        if self.status != "completed":
            errors = {n: self.steps[n].error or "" for n in self.failed_steps if n in self.steps}
            raise WorkflowFailed(self.id, self.status, list(self.failed_steps), errors)
        return self

    def cancel(self) -> None:
        """Cancel the run: executing steps are cancelled, the run stays resumable."""
        self.cancel_requested = True
        if self._canceller is not None:
            self._canceller()

    def context(self, step: str) -> list[dict[str, Any]]:
        """Captured context of a step (debug=True), oldest first.

        Each entry: ``kind`` (``request``, ``response``, ``error`` or ``log``), ``attempt``,
        ``message`` (response text, error, or the ``ctx.log`` message), ``data`` (a dict:
        the request's messages and params, the response's usage and cost, ``ctx.log``
        fields; or None) and ``created_at``. API keys are never in them.
        """
        if step not in self.steps:
            raise KeyError(f"run {self.id} has no step {step!r}; steps: {', '.join(self.steps)}")
        return [_decoded(log) for log in self.logs if log["step"] == step]

    # ── loading ───────────────────────────────────────────────────────────────

    @classmethod
    async def load(cls, run_id: str, db: str | None = None) -> Run:
        """Read any run from the database (``await bn.Run.load(run_id, db=...)``)."""
        store = await Store.open(db)
        try:
            return await cls.from_store(store, run_id)
        finally:
            await store.close()

    @classmethod
    async def from_store(cls, store: Store, run_id: str) -> Run:
        run, _nodes = await load_run(store, run_id, cls)
        return run

    # ── display ───────────────────────────────────────────────────────────────

    def counts(self) -> StepCounts:
        """Steps and fan-out children per state (groups are not steps): what every view shows."""
        return count_steps(self.steps.values())

    def contexts(self) -> dict[str, list[dict[str, Any]]]:
        """Captured context of every step, by step (see ``context``), in one pass."""
        out: dict[str, list[dict[str, Any]]] = {}
        for log in self.logs:
            out.setdefault(log["step"], []).append(_decoded(log))
        return out

    def __repr__(self) -> str:
        steps = self.counts().text()
        return f"<Run {self.id} {self.workflow!r} {self.status}: {steps}, cost {self.cost_text()}>"

    def _repr_html_(self) -> str:
        """A static summary (counts, failures, costs); notebooks show the widget instead."""
        if Run.notebook_view is not None:
            return Run.notebook_view.static_html(self)
        return f"<pre>{html.escape(repr(self))}</pre>"

    def _ipython_display_(self) -> None:
        """In a notebook: the DAG widget (live while the run goes, a saved snapshot after);
        front ends without widget support show the static summary that comes with it."""
        if Run.notebook_view is not None:
            Run.notebook_view.display(self)
            return
        from IPython.display import display

        display({"text/plain": repr(self)}, raw=True)  # type: ignore[no-untyped-call]


class NotebookView(Protocol):
    """How a ``Run`` shows in a notebook. The widget package (a layer above this one)
    provides it when imported: ``Run.notebook_view = ...``."""

    def display(self, run: Run) -> None: ...

    def static_html(self, run: Run) -> str: ...


def _decoded(log: dict[str, Any]) -> dict[str, Any]:
    data = log.get("data")
    return {**log, "data": _jsonutil.loads(data) if isinstance(data, str) else data}


async def load_run(
    store: Store, run_id: str, cls: type[Run] | None = None
) -> tuple[Run, list[dict[str, Any]]]:
    """A stored run, and the node rows it was built from (the runtime's nodes use them too)."""
    row = await store.get_run(run_id)
    if row is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    nodes = await store.get_nodes(run_id)
    stats = await store.get_stats([run_id])
    logs = await store.get_debug_logs(run_id)
    return run_from_rows(store.url, row, nodes, stats, logs, cls), nodes


def run_from_rows(
    db_url: str,
    row: dict[str, Any],
    nodes: list[dict[str, Any]],
    stats: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    cls: type[Run] | None = None,
) -> Run:
    """A Run from its ``workflow_runs`` row, node rows (by id), stats rows and debug logs."""
    run = (cls or Run)(row["id"], row["workflow"], params=_jsonutil.loads(row["params"]))
    run.db_url = db_url
    run.status = row["status"]
    run.created_at, run.started_at = row["created_at"], row["started_at"]
    run.finished_at = row["finished_at"]
    run.failed_steps = loads_list(row["failed_steps"])
    for node in nodes:
        run.steps[node["step"]] = step_info_from_row(node)
        if node["state"] == "completed":
            run.results[node["step"]] = _jsonutil.loads(node["result"])
    for step in run.steps.values():
        if step.parent is not None and step.parent in run.steps:
            run.steps[step.parent].children.append(step.name)
    run.calls = [CallRecord.from_row(r) for r in stats]
    for call in run.calls:
        if call.step in run.steps:
            run.steps[call.step].add_call(call)
    run.logs = logs
    return run


def step_info_from_row(node: dict[str, Any]) -> StepInfo:
    return StepInfo(
        name=node["step"],
        job_id=int(node["id"]),
        kind=node["kind"],
        parent=node["parent"],
        deps=loads_list(node["deps"]),
        worker=node["worker"],
        state=node["state"],
        attempt=node["attempt"],
        max_attempts=node["max_attempts"],
        error=node["error"],
        has_result=bool(node["has_result"]),
        model=node["model"],
        item_index=node["item_index"],
        started_at=node["started_at"],
        finished_at=node["finished_at"],
    )
