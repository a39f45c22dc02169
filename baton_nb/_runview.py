"""The read model of a run: what every view of a run shows, computed in one place.

``RunView`` holds a run's state (status, each step's state, results, calls, logs) and
answers what the views ask: counts per state (one meaning each), costs and tokens, a
step's totals with its fan-out children. ``bn.Run`` is a ``RunView`` with the user's
actions on top; the DAG widget, the text progress line, ``Run.__repr__``, ``baton-nb
show`` and cost reports all read it through these methods.

It changes through one narrow path only (the "updates" section): the in-process runtime
calls it as steps change, ``bn.watch`` as rows and events arrive. Nothing else assigns
its fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from . import _jsonutil
from ._money import normalize_money
from ._states import FAILED_STATES, TERMINAL_STATES, NodeKind, RunStatus, State
from ._usage import Usage
from .store import CallRecord, LogRow, NodeRow, RunRow

__all__ = ["RunView", "StepCounts", "StepInfo", "StepTotals"]

_NO_USAGE = Usage()
V = TypeVar("V", bound="RunView")


@dataclass
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
    latency_ms: float = 0.0
    children: list[str] = field(default_factory=list)

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


class StepCounts(Mapping[str, int]):
    """A run's steps and fan-out children (never the groups) per state.

    A mapping of state -> count (``counts["completed"]``), and the few sums the views
    show, each with one meaning: ``total`` (every step and child), ``finished``
    (terminal), ``completed``, ``failed`` (discarded or cancelled), ``running``
    (executing). ``bn.runs()`` counts the same rows the same way.
    """

    def __init__(self, by_state: Mapping[State, int]) -> None:
        self._by_state = {str(state): n for state, n in by_state.items() if n}

    def __getitem__(self, state: str) -> int:
        return self._by_state[state]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_state)

    def __len__(self) -> int:
        return len(self._by_state)

    def __repr__(self) -> str:
        return f"StepCounts({self._by_state})"

    def _sum(self, states: frozenset[State]) -> int:
        return sum(self._by_state.get(s, 0) for s in states)

    @property
    def total(self) -> int:
        return sum(self._by_state.values())

    @property
    def finished(self) -> int:
        return self._sum(TERMINAL_STATES)

    @property
    def completed(self) -> int:
        return self._by_state.get(State.COMPLETED, 0)

    @property
    def failed(self) -> int:
        return self._sum(FAILED_STATES)

    @property
    def running(self) -> int:
        return self._by_state.get(State.EXECUTING, 0)


@dataclass(frozen=True)
class StepTotals:
    """A step's LLM calls with its fan-out children's: what ``baton-nb show`` lists."""

    calls: int
    usage: Usage
    cost: Decimal
    unpriced_calls: int


class RunView:
    """A run's state and what views derive from it (see the module docstring)."""

    def __init__(self, run_id: str, workflow: str, *, params: dict[str, Any] | None = None) -> None:
        self.id = run_id
        self.workflow = workflow
        self.params: dict[str, Any] = params or {}
        self.status = RunStatus.PENDING
        self.steps: dict[str, StepInfo] = {}
        self.results: dict[str, Any] = {}
        self.failed_steps: list[str] = []
        self.calls: list[CallRecord] = []
        self.logs: list[LogRow] = []
        self.created_at: datetime | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.db_url: str | None = None

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
        for call in calls:
            view.add_call(call)
        view.logs = list(logs)
        return view

    # ── what views read ───────────────────────────────────────────────────────

    @property
    def cost(self) -> Decimal:
        """USD of every LLM call of the run; replayed calls are not counted twice.

        Calls to models without a known price add nothing here; see ``unpriced_calls``.
        """
        paid = (c.cost for c in self.calls if not c.replayed and c.cost is not None)
        return normalize_money(sum(paid, Decimal(0)))

    @property
    def unpriced_calls(self) -> int:
        """Number of calls whose model has no known price (their cost is unknown, not 0)."""
        return sum(1 for c in self.calls if not c.replayed and c.cost is None)

    @property
    def tokens(self) -> Usage:
        total = Usage()
        for call in self.calls:
            if not call.replayed:
                total = total + call.usage
        return total

    @property
    def done(self) -> bool:
        return self.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    def counts(self) -> StepCounts:
        """Steps and fan-out children per state (groups are not counted)."""
        by_state: dict[State, int] = {}
        for step in self.steps.values():
            if step.kind != NodeKind.GROUP:
                by_state[step.state] = by_state.get(step.state, 0) + 1
        return StepCounts(by_state)

    def step_totals(self, name: str) -> StepTotals:
        """The calls of step ``name`` and of its fan-out children, summed."""
        step = self.steps[name]
        calls, usage, cost, unpriced = step.calls, step.usage, step.cost, step.unpriced_calls
        for child in (self.steps[c] for c in step.children):
            calls += child.calls
            usage = usage + child.usage
            cost += child.cost
            unpriced += child.unpriced_calls
        return StepTotals(calls, usage, cost, unpriced)

    # ── updates: the one path that changes a run ──────────────────────────────

    def add_step(self, info: StepInfo) -> None:
        """A new step or fan-out child (a map's children appear mid-run)."""
        self.steps[info.name] = info
        parent = self.steps.get(info.parent) if info.parent is not None else None
        if parent is not None and info.name not in parent.children:
            parent.children.append(info.name)

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

    def add_log(self, log: LogRow) -> None:
        self.logs.append(log)

    def set_status(
        self,
        status: RunStatus,
        *,
        failed_steps: list[str] | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """The run's status; the other fields change when given."""
        self.status = status
        if failed_steps is not None:
            self.failed_steps = list(failed_steps)
        if started_at is not None:
            self.started_at = started_at
        if finished_at is not None:
            self.finished_at = finished_at
