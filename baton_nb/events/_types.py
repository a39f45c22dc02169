"""Event shapes (seed: Baton.Events), published on ``workflow:all`` and ``workflow:{id}``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .._states import RunStatus, State
from .._usage import Usage

__all__ = [
    "CallFinished",
    "Event",
    "EventsDropped",
    "StepUpdated",
    "WorkflowFinished",
    "topic_all",
    "topic_workflow",
]


def topic_all() -> str:
    """The topic that carries every event of every workflow run."""
    return "workflow:all"


def topic_workflow(workflow_id: str) -> str:
    """The topic that carries the events of one run."""
    return f"workflow:{workflow_id}"


@dataclass(frozen=True, slots=True)
class StepUpdated:
    """A step (or fan-out child) changed state."""

    workflow_id: str
    workflow_label: str
    step_name: str
    worker: str
    state: State
    job_id: int
    attempt: int
    has_result: bool
    error: str | None
    timestamp: datetime
    parent: str | None = None
    max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class CallFinished:
    """One LLM call of a step finished (or was answered from the replay store)."""

    workflow_id: str
    workflow_label: str
    step_name: str
    model: str
    provider: str
    usage: Usage
    cost: Decimal | None
    latency_ms: float
    replayed: bool
    estimated: bool
    timestamp: datetime
    # attempts that reached the provider with no answer, counted by a budget at their worst
    # case (0 tokens, no latency): a charge in the step's cost, not a call
    unanswered: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowFinished:
    """A run settled; sent exactly once per execution of a run. ``taken_over`` (the
    execution lost the run's lease: another process goes on with it, ``taken_over_by``
    when known) is an execution's end, not the run's."""

    workflow_id: str
    workflow_label: str
    outcome: RunStatus  # completed | failed | cancelled | taken_over
    failed_steps: list[str]
    timestamp: datetime
    taken_over_by: str | None = None  # the lease's holder now (``taken_over``), if known


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """Told to a slow subscriber: ``count`` older StepUpdated/CallFinished events were dropped."""

    topic: str
    count: int


@dataclass(frozen=True, slots=True)
class BatchUpdated:
    """A provider batch of a run changed (DESIGN §12): stored, submitted, answered so far,
    ended, its answers stored. ``key`` is baton_nb's id of the batch, ``remote_id`` the
    provider's (``None`` until submitted); ``succeeded`` / ``failed`` the provider's counts;
    ``cost`` what the stored answers cost at batch rates and ``saved`` what batch rates
    took off (``None`` until known)."""

    workflow_id: str
    workflow_label: str
    step_name: str
    key: str
    provider: str
    model: str
    state: str
    remote_id: str | None
    request_count: int
    succeeded: int
    failed: int
    cost: Decimal | None
    saved: Decimal | None
    timestamp: datetime


Event = StepUpdated | CallFinished | BatchUpdated | WorkflowFinished | EventsDropped
