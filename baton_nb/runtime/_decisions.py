"""What an attempt ended with (outcomes) and what the scheduler decided (decisions).

Plain data between the parts of the runtime: the attempt runner returns an ``Outcome``;
the scheduler answers with a ``Settled`` (commit, then go on), a ``RetryAfter`` (wait,
then admit the node again), or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .._states import RunStatus, State
from ._node import Node

__all__ = [
    "PARKED",
    "CallParked",
    "Completed",
    "DepCallback",
    "Discarded",
    "Failed",
    "GroupOpened",
    "Outcome",
    "Parked",
    "RetryAfter",
    "RunEnd",
    "Settled",
    "Snoozed",
]

# ── outcomes of one attempt ───────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Completed:
    """Returned ``value``; ``encoded`` is its JSON as stored."""

    value: Any
    encoded: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Raised (or timed out): retried while attempts are left. ``retry_after``: seconds a
    provider asked to wait (a ``ProviderError`` in what was raised, ``retry_hint``), the
    least the next attempt waits; the exception itself is not kept."""

    error: str
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Discarded:
    """``bn.Discard`` (or a result that cannot be stored): failed for good, at once."""

    reason: str


@dataclass(frozen=True, slots=True)
class Snoozed:
    """``bn.Snooze(seconds)``: run again later without using an attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Parked:
    """A call of the attempt went to a provider batch (DESIGN §12): the node waits for the
    answer without using an attempt, then runs again and the call is answered by replay."""


PARKED = Parked()

Outcome = Completed | Failed | Discarded | Snoozed | Parked


class CallParked(BaseException):
    """Raised by ``ctx.complete()`` in a batched step once the call is handed to its batch:
    the attempt ends there (``Parked``). A ``BaseException``, so that a step's own
    ``except Exception`` does not take it for a failure of the call."""


# ── decisions ─────────────────────────────────────────────────────────────────


class DepCallback(NamedTuple):
    """``on_dep_cancelled`` / ``on_dep_discarded`` of ``node``, to call with ``reason``."""

    node: Node
    dep_state: State
    reason: str


_NONE: list[Any] = []  # shared, never appended to: ``ready``/``callbacks`` until needed


class Settled:
    """Nodes that became terminal together, and what follows once that is committed.

    ``changed`` (the terminal nodes and the dependents whose counters moved) must be
    committed before anything else happens; then ``nodes`` are announced, ``ready`` are
    admitted and ``callbacks`` run. The nodes count as settled only after all of that.
    (``ready`` and ``callbacks`` are made on first use: most settlements have none, and
    each list is one more object for the garbage collector to count, per step.)
    """

    __slots__ = ("callbacks", "changed", "nodes", "ready")

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.changed: list[Node] = []
        self.ready: list[Node] = _NONE
        self.callbacks: list[DepCallback] = _NONE

    def add_ready(self, node: Node) -> None:
        if self.ready is _NONE:
            self.ready = []
        self.ready.append(node)

    def add_callback(self, callback: DepCallback) -> None:
        if self.callbacks is _NONE:
            self.callbacks = []
        self.callbacks.append(callback)

    def __repr__(self) -> str:
        names = [n.name for n in self.nodes]
        return f"<Settled {names} ready={[n.name for n in self.ready]}>"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """``node`` (now ``retryable`` or ``snoozed``) is admitted again after ``delay`` seconds."""

    node: Node
    delay: float


@dataclass(frozen=True, slots=True)
class GroupOpened:
    """A fan-out group opened: children ``reset`` to pending (to write; a map child stored
    ready to run is not among them), ``start`` now; ``settled`` if the group's verdict is
    already known (e.g. every child completed before a resume)."""

    reset: list[Node]
    start: list[Node]
    settled: Settled | None


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ends: the nodes cancelled by its end, its status and failed steps."""

    cancelled: list[Node]
    status: RunStatus
    failed_steps: list[str]
