"""The states of a step and of a run (DESIGN §3, §4): one enum each, used everywhere.

They are ``str`` enums: the database stores their values, events carry them, and user code
compares them with plain strings (``run.steps["parse"].state == "completed"`` holds).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ACTIVE_STATES",
    "BATCH_LIVE_STATES",
    "FAILED_STATES",
    "FINISHED_STATUSES",
    "STORED_STATUSES",
    "TERMINAL_STATES",
    "WAITING_STATES",
    "BatchRequestState",
    "BatchState",
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
    # An execution's end, never stored: its lease was taken over by another process (this
    # one stalled past it), which goes on with the run and writes its truth; this
    # execution stopped, writing nothing more (docs/workers.md "Failures").
    TAKEN_OVER = "taken_over"


FINISHED_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
# What the database holds (``TAKEN_OVER`` is only a live Run's and its events').
STORED_STATUSES = tuple(s for s in RunStatus if s is not RunStatus.TAKEN_OVER)


class NodeKind(_StrEnum):
    """A plain step, a fan-out step (a group of children), or one fan-out child."""

    STEP = "step"
    GROUP = "group"
    CHILD = "child"


class BatchState(_StrEnum):
    """Where a provider batch is (DESIGN §12): stored before submitting, then the provider's."""

    PREPARED = "prepared"  # its requests are stored; not known to be submitted yet
    SUBMITTED = "submitted"  # the provider has it (its id is stored): validating, queued
    RUNNING = "running"  # the provider is answering its requests
    CANCELLING = "cancelling"  # cancelled, the provider winds it down
    ENDED = "ended"  # the provider finished it; its results are not stored yet
    DONE = "done"  # terminal: its results are stored (failed items go to the next batch)
    EXPIRED = "expired"  # terminal: the provider's window passed; what was missing goes again
    CANCELLED = "cancelled"  # terminal: cancelled (run.cancel()); what it answered is stored
    FAILED = "failed"  # terminal: the provider refused the whole batch


# Not finished: a resumed run re-attaches to these (polls, or finds them by their metadata).
BATCH_LIVE_STATES = frozenset(
    {
        BatchState.PREPARED,
        BatchState.SUBMITTED,
        BatchState.RUNNING,
        BatchState.CANCELLING,
        BatchState.ENDED,
    }
)


class BatchRequestState(_StrEnum):
    """One request of a provider batch: waiting, answered (its answer stored), failed."""

    PENDING = "pending"  # in a batch that has not ended
    ANSWERED = "answered"  # its answer is a stored completion
    ERRORED = "errored"  # the provider refused it (4xx): the step's attempt fails with it
    MISSING = "missing"  # not answered (expired, cancelled, a 5xx): asked again in a new batch
