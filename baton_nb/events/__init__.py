"""In-process events of workflow runs (seed: Baton.Events)."""

from ._bus import DEFAULT_BUFFER, Subscription, add_listener, has_subscribers, publish, subscribe
from ._types import (
    BatchUpdated,
    CallFinished,
    Event,
    EventsDropped,
    StepUpdated,
    WorkflowFinished,
    topic_all,
    topic_workflow,
)

__all__ = [
    "DEFAULT_BUFFER",
    "BatchUpdated",
    "CallFinished",
    "Event",
    "EventsDropped",
    "StepUpdated",
    "Subscription",
    "WorkflowFinished",
    "add_listener",
    "has_subscribers",
    "publish",
    "subscribe",
    "topic_all",
    "topic_workflow",
]
