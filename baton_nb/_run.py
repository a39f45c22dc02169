"""``bn.Run``: what a run is and did. Live while it executes, loadable from the store after."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _jsonutil
from ._errors import RunNotFound, WorkflowFailed
from ._money import fmt_money, normalize_money, plural
from ._usage import Usage
from .events import CallFinished
from .store import Store, loads_list

if TYPE_CHECKING:
    from .reports import CostReport

__all__ = ["TERMINAL_STATES", "CallRecord", "Run", "StepInfo"]

TERMINAL_STATES = frozenset({"completed", "discarded", "cancelled"})
FAILED_STATES = frozenset({"discarded", "cancelled"})
_NO_USAGE = Usage()


@dataclass
class CallRecord:
    """One LLM call (one ``workflow_step_stats`` row)."""

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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRecord:
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
        )

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
    def cost(self) -> Decimal:
        """USD of every LLM call of the run; replayed calls are not counted twice.

        Calls to models without a known price add nothing here; see ``unpriced_calls``.
        """
        return normalize_money(self._call_totals().cost)

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

    def report(self) -> CostReport:
        from .reports import CostReport

        return CostReport.from_runs([self])

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

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for step in self.steps.values():
            if step.kind != "group":
                out[step.state] = out.get(step.state, 0) + 1
        return out

    def __repr__(self) -> str:
        # Counted like bn.runs() and the widget: steps and fan-out children, not groups.
        counts = self.counts()
        failed = counts.get("discarded", 0) + counts.get("cancelled", 0)
        steps = f"{counts.get('completed', 0)}/{sum(counts.values())} steps completed"
        if failed:
            steps += f", {failed} failed"
        cost = f"cost ${fmt_money(self.cost)}"
        if self.unpriced_calls:
            cost += f" + {plural(self.unpriced_calls, 'call')} of unknown price"
        return f"<Run {self.id} {self.workflow!r} {self.status}: {steps}, {cost}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s.name)}</td><td>{s.state}</td><td>{s.attempt}</td>"
            f"<td>{'' if s.duration is None else f'{s.duration:.2f}s'}</td>"
            f"<td>{s.usage.total_tokens}</td><td>${fmt_money(s.cost)}</td>"
            f"<td>{html.escape(s.error or '')}</td></tr>"
            for s in self.steps.values()
        )
        return (
            f"<div><b>Run {html.escape(self.id)}</b> ({html.escape(self.workflow)}): "
            f"<b>{self.status}</b>, cost ${fmt_money(self.cost)}"
            "<table><tr><th>step</th><th>state</th><th>attempt</th>"
            "<th>duration</th><th>tokens</th><th>cost</th><th>error</th></tr>"
            f"{rows}</table></div>"
        )


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
