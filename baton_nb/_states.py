"""The states of a step and of a run (DESIGN §3, §4): one enum each, used everywhere.

They are ``str`` enums: the database stores their values, events carry them, and user code
compares them with plain strings (``run.steps["parse"].state == "completed"`` holds).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ACTIVE_STATES",
    "FAILED_STATES",
    "FINISHED_STATUSES",
    "TERMINAL_STATES",
    "WAITING_STATES",
    "NodeKind",
    "RunStatus",
    "State",
]


class _StrEnum(str, Enum):
    """A str that shows as its value everywhere: ``str()``, format, and ``repr()`` too, so
    ``run.status`` in a notebook or a tuple reads ``'completed'`` as it always did."""

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.value)


class State(_StrEnum):
    """Where a step (or a fan-out group or child) is. Only moves forward within an attempt."""

    PENDING = "pending"  # waiting for its dependencies or a concurrency slot
    EXECUTING = "executing"  # an attempt is running
    SNOOZED = "snoozed"  # returned bn.Snooze: runs again later, attempt not used
    RETRYABLE = "retryable"  # an attempt failed, another one follows after a backoff
    COMPLETED = "completed"  # terminal: returned a value
    DISCARDED = "discarded"  # terminal: failed for good (no attempts left, or bn.Discard)
    CANCELLED = "cancelled"  # terminal: a dependency failed, the run was cancelled, not needed


TERMINAL_STATES = frozenset({State.COMPLETED, State.DISCARDED, State.CANCELLED})
FAILED_STATES = frozenset({State.DISCARDED, State.CANCELLED})
# Not running and not terminal: a quorum met or a failed group makes these unneeded.
WAITING_STATES = frozenset({State.PENDING, State.SNOOZED, State.RETRYABLE})
# Started and not terminal: a run that ends now cancels these.
ACTIVE_STATES = frozenset({State.EXECUTING, State.SNOOZED, State.RETRYABLE})


class RunStatus(_StrEnum):
    """Where a run is; its outcome once finished (``run.status``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class NodeKind(_StrEnum):
    """A plain step, a fan-out step (a group of children), or one fan-out child."""

    STEP = "step"
    GROUP = "group"
    CHILD = "child"
