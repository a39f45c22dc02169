"""The scheduler: decides what runs next. Pure and synchronous: no I/O, no tasks, no sleeps.

It holds the nodes of one execution and answers a driver's questions: which nodes may
start (readiness counters, concurrency slots), what an attempt's outcome means (settle,
retry after a backoff, snooze), what settling a node cascades to (dependents made ready,
dependents cancelled with their callbacks, a fan-out group's verdict), and how the run
ends. The driver does the I/O: it runs attempts, commits what the scheduler changed, and
only then acts on a ``Settled`` (announce, start the ready nodes, run the callbacks).

State moves forward only: a node leaves a terminal state never; within an attempt it goes
pending -> executing -> (retryable | snoozed | terminal).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .. import _jsonutil
from .._errors import describe_error
from .._states import (
    ACTIVE_STATES,
    FAILED_STATES,
    TERMINAL_STATES,
    WAITING_STATES,
    NodeKind,
    RunStatus,
    State,
)
from ..store import utcnow
from ._decisions import (
    Completed,
    DepCallback,
    Failed,
    GroupOpened,
    Outcome,
    Parked,
    RetryAfter,
    RunEnd,
    Settled,
    Snoozed,
)
from ._groups import MapPlan, close_if_coroutine, verdict
from ._node import Node, redacted_error
from ._slots import Slots

__all__ = ["Scheduler", "backoff_delay", "cancelled_child_reason", "next_attempt_delay"]

_SCALARS = (str, int, float, bool, type(None))
# Enum members as module constants: read on every transition, faster than State.X here.
PENDING, EXECUTING, SNOOZED, RETRYABLE = (
    State.PENDING,
    State.EXECUTING,
    State.SNOOZED,
    State.RETRYABLE,
)
COMPLETED, DISCARDED, CANCELLED = State.COMPLETED, State.DISCARDED, State.CANCELLED
GROUP, CHILD = NodeKind.GROUP, NodeKind.CHILD


class Scheduler:
    """The decisions of one execution of a run, over its nodes."""

    def __init__(
        self,
        nodes: dict[str, Node],
        *,
        concurrency: int,
        key_limits: Mapping[str, int],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.nodes = nodes
        self.slots = Slots(concurrency, key_limits)
        self.clock = clock
        # Nodes not settled yet: a node counts as settled once its terminal state is
        # committed, announced, its dependents admitted and its callbacks run.
        self.unsettled = sum(1 for n in nodes.values() if n.state not in TERMINAL_STATES)

    # ── starting ──────────────────────────────────────────────────────────────

    def initial(self) -> list[Node]:
        """The nodes to start as the execution begins (each holds its slots)."""
        started = []
        for node in self.nodes.values():
            if node.kind is not CHILD and node.state is PENDING and node.remaining == 0:
                admitted = self.admit(node)
                if admitted is not None:
                    started.append(admitted)
        return started

    def admit(self, node: Node) -> Node | None:
        """A ready node: ``node`` if it starts now (a group opens; a step got its slots),
        else None (it waits for a slot and comes back from ``release``)."""
        if node.kind is GROUP:
            return node
        return self.slots.admit(node)

    def begin(self, node: Node) -> bool:
        """An attempt begins (``executing``); False if the node settled meanwhile (e.g. a
        quorum was met while it waited): then it does not run, and its slots are released."""
        if node.state in TERMINAL_STATES:
            return False
        node.attempt += 1
        node.state = EXECUTING
        if node.started_at is None:
            node.started_at = self.clock()
        return True

    def release(self, node: Node) -> Sequence[Node]:
        """``node``'s attempt ended (however): the nodes its slots pass to, to start now."""
        return self.slots.release(node)

    # ── what an attempt's outcome means ───────────────────────────────────────

    def conclude(self, node: Node, outcome: Outcome) -> Settled | RetryAfter | None:
        """Settle, retry after a backoff, or snooze (then ``admit`` it again after the
        delay). None: nothing changed (the node had settled meanwhile)."""
        if node.state in TERMINAL_STATES:
            return None
        if isinstance(outcome, Completed):
            return self.settle(node, COMPLETED, value=outcome.value, encoded=outcome.encoded)
        if isinstance(outcome, Snoozed):
            node.attempt -= 1  # a snooze does not use an attempt
            node.state, node.error = SNOOZED, None
            return RetryAfter(node, outcome.seconds)
        if isinstance(outcome, Parked):  # waits for its provider batch: no timer, no attempt
            node.attempt -= 1
            node.state, node.error = SNOOZED, None
            return RetryAfter(node, math.inf)
        if isinstance(outcome, Failed) and node.attempt < node.max_attempts:
            delay, problem = next_attempt_delay(node, outcome)
            if problem is not None:  # a broken backoff: no retry can be scheduled
                return self.settle(node, DISCARDED, error=problem)
            node.state, node.error = RETRYABLE, outcome.error
            return RetryAfter(node, delay)
        error = outcome.error if isinstance(outcome, Failed) else outcome.reason
        return self.settle(node, DISCARDED, error=error)

    # ── settling: terminal states and what cascades from them ─────────────────

    def settle(
        self,
        node: Node,
        state: State,
        *,
        value: Any = None,
        encoded: str | None = None,
        error: str | None = None,
    ) -> Settled | None:
        """Make ``node`` terminal, and everything that follows from it; None if it already
        was (nothing new to commit or announce)."""
        if node.state in TERMINAL_STATES:
            return None
        out = Settled()
        self._terminal(node, state, value, encoded, error, out)
        return out

    def committed(self, settled: Settled) -> Sequence[Node]:
        """``settled`` is committed and announced: the ready nodes that start now (the
        ``ready`` list itself when all of them do, the usual case: no list made)."""
        ready = settled.ready
        started: list[Node] | None = None  # None: every ready node so far started
        for index, node in enumerate(ready):
            admitted = self.admit(node) is not None
            if started is None:
                if not admitted:
                    started = ready[:index]
            elif admitted:
                started.append(node)
        return ready if started is None else started

    def count_settled(self, count: int) -> bool:
        """``count`` more nodes settled (callbacks done too); True when every node has."""
        self.unsettled -= count
        return self.unsettled == 0

    def _terminal(
        self,
        node: Node,
        state: State,
        value: Any,
        encoded: str | None,
        error: str | None,
        out: Settled,
    ) -> None:
        if node.state in TERMINAL_STATES:
            return
        node.state, node.error, node.finished_at = state, error, self.clock()
        parent = node.parent
        if parent is not None and parent.tally is not None:
            parent.tally[0 if state is COMPLETED else 1] += 1
        if state is COMPLETED:
            encoded = encoded or "null"
            if not isinstance(value, _SCALARS):
                # Downstream sees what a resumed run would read back: the stored JSON.
                value = _jsonutil.loads(encoded)
            node.set_result(value, encoded)
        out.nodes.append(node)
        out.changed.append(node)
        if node.kind is GROUP:
            for child in node.children:
                # Not started, or waiting out a snooze or a retry backoff: not needed any
                # more (a waiting child wakes to find itself settled and does nothing).
                if child.state in WAITING_STATES:
                    reason = cancelled_child_reason(node)
                    self._terminal(child, CANCELLED, None, None, reason, out)
        if parent is not None and parent.state not in TERMINAL_STATES:
            found = verdict(parent)
            if found is not None:
                self._terminal(parent, found.state, found.value, found.encoded, found.error, out)
        for dependent in node.dependents:
            if dependent.state in TERMINAL_STATES:
                continue
            if state is COMPLETED or _ignores(dependent, state):
                dependent.remaining -= 1
                out.changed.append(dependent)
                if dependent.remaining == 0:
                    out.add_ready(dependent)
                continue
            reason = f"dependency {node.name!r} was {state}" + (f": {error}" if error else "")
            out.add_callback(DepCallback(dependent, state, reason))
            self._terminal(dependent, CANCELLED, None, None, reason, out)

    # ── fan-out groups ────────────────────────────────────────────────────────

    def begin_group(self, group: Node) -> None:
        """A group opens (``executing``); a map's children are made next (``adopt``)."""
        group.state, group.error = EXECUTING, None
        if group.started_at is None:
            group.started_at = self.clock()

    def plan_children(self, group: Node, plan: MapPlan) -> list[Node]:
        """A map's children per ``plan``, to be taken a chunk at a time (``adopt``) as they
        are stored: the group is judged on all of its items from the first chunk on, and
        counts as unsettled until the last one is taken (``count_settled(1)`` then). The
        children of an earlier execution whose item is gone are settled (cancelled):
        returned, to write."""
        wanted = set(plan.names)
        stale = []
        for child in group.children:
            if child.name not in wanted and child.state not in TERMINAL_STATES:
                # A child of an earlier execution whose item's key is gone (map_key or the
                # data changed before a resume): settled, so the run does not wait for it.
                child.state, child.finished_at = CANCELLED, self.clock()
                child.error = f"no longer an item of map_over={group.spec.map_over!r}"
                self.unsettled -= 1
                stale.append(child)
        group.children = []
        group.size = len(plan.names)
        group.tally = [0, 0]
        self.unsettled += 1  # the expansion: the run does not end before it does
        return stale

    def adopt(self, group: Node, plan: MapPlan, chunk: Sequence[Node]) -> GroupOpened:
        """The map's next children, in item order (``plan_children`` first): new ones just
        stored (ready to run, or cancelled if the group had settled), or of an earlier
        execution (run again from scratch unless completed). Those to write, those to start
        now, and the group's verdict if this chunk decides it."""
        nodes, items = self.nodes, plan.items
        children = group.children
        assert isinstance(children, list) and group.tally is not None
        closed = cancelled_child_reason(group) if group.state in TERMINAL_STATES else None
        reset: list[Node] = []
        waiting: list[Node] = []
        unsettled = 0  # counted once for the chunk
        first = len(children)
        children.extend(chunk)
        for index, child in enumerate(chunk, first):
            child.parent = group
            child.item_index = index
            child.item = items[index]
            if child.name not in nodes:  # new: stored as it is now
                nodes[child.name] = child
                if child.state in TERMINAL_STATES:
                    continue
                unsettled += 1
            elif child.state is COMPLETED:
                group.tally[0] += 1
                continue
            if closed is not None:  # the group settled while this chunk was stored
                child.state, child.error, child.finished_at = CANCELLED, closed, self.clock()
                unsettled -= 1
                reset.append(child)
                continue
            if not _stored_ready(child):  # an earlier execution's: from scratch
                child.remaining = 0
                child.state, child.attempt, child.error = PENDING, 0, None
                reset.append(child)
            waiting.append(child)
        self.unsettled += unsettled
        return self._opened(group, reset, waiting, judge=closed is None)

    def open_group(self, group: Node) -> GroupOpened:
        """Children not completed run (again) from scratch; the verdict may be known at once."""
        todo = [c for c in group.children if c.state is not COMPLETED]
        reset = []
        for child in todo:
            if _stored_ready(child):
                continue  # a map child just stored ready to run: nothing to write again
            child.remaining = 0
            child.state, child.attempt, child.error = PENDING, 0, None
            reset.append(child)
        group.size = len(group.children)
        group.tally = [group.size - len(todo), 0]
        return self._opened(group, reset, todo, judge=True)

    def _opened(
        self, group: Node, reset: list[Node], children: Sequence[Node], *, judge: bool
    ) -> GroupOpened:
        """The group's verdict if ``judge`` and it is known now, then those of ``children``
        still pending that start now (after the verdict: a settled group cancels them)."""
        settled = None
        if judge:
            found = verdict(group)
            if found is not None:
                settled = self.settle(
                    group, found.state, value=found.value, encoded=found.encoded, error=found.error
                )
        start = []
        for child in children:
            if child.state is PENDING:
                admitted = self.admit(child)
                if admitted is not None:
                    start.append(admitted)
        return GroupOpened(reset, start, settled)

    # ── the end ───────────────────────────────────────────────────────────────

    def wind_down(self, *, cancelled: bool, why: str | None = None) -> RunEnd:
        """The run ends (settled, cancelled or interrupted): nodes still started are
        cancelled (their error: ``run cancelled``, and ``why`` when a budget stopped the
        run); the status and the failed steps (a child failed inside a met quorum does
        not fail the run)."""
        now = self.clock()
        stopped = []
        error = f"run cancelled: {why}" if why else "run cancelled"
        for node in self.nodes.values():
            if node.state in ACTIVE_STATES:
                node.state, node.error, node.finished_at = CANCELLED, error, now
                stopped.append(node)
        failed = [
            n.name
            for n in self.nodes.values()
            if n.state in FAILED_STATES and not (n.parent and n.parent.state is COMPLETED)
        ]
        pending = any(n.state not in TERMINAL_STATES for n in self.nodes.values())
        if cancelled or (pending and not failed):
            status = RunStatus.CANCELLED
        elif failed or pending:
            status = RunStatus.FAILED
        else:
            status = RunStatus.COMPLETED
        return RunEnd(stopped, status, failed)


def cancelled_child_reason(group: Node) -> str:
    """Why a settled group's children that had not run are cancelled."""
    if group.state is COMPLETED:
        return f"not needed: quorum of {group.name!r} met"
    return f"group {group.name!r} {group.state}"


def _stored_ready(node: Node) -> bool:
    """As a new map child is stored: pending, nothing to wait for, no attempt yet."""
    return node.state is PENDING and not node.remaining and not node.attempt and node.error is None


def _ignores(node: Node, dep_state: State) -> bool:
    if dep_state is DISCARDED:
        return node.spec.ignore_discarded
    return node.spec.ignore_cancelled


def next_attempt_delay(node: Node, failed: Failed) -> tuple[float, str | None]:
    """Seconds before ``node``'s next attempt: its backoff, and at least the wait the
    provider asked for when the attempt failed on a rate limit (``Failed.retry_after``).
    Or an error naming the step if its backoff is broken."""
    delay, problem = backoff_delay(node, failed.error)
    if problem is None:
        delay = max(delay, failed.retry_after)
    return delay, problem


def backoff_delay(node: Node, attempt_error: str) -> tuple[float, str | None]:
    """Seconds to wait before the next attempt, or an error naming the step and option.

    The user's ``backoff`` may raise or return something that is not a number of seconds;
    that fails the step (no retry can be scheduled) instead of crashing the whole run.
    Negative delays count as 0.
    """
    attempt = node.attempt
    problem: str | None = None
    delay = 0.0
    try:
        raw = node.spec.backoff(attempt)
    except Exception as exc:
        problem = f"backoff({attempt}) raised {redacted_error(describe_error(exc))}"
    else:
        close_if_coroutine(raw)
        if isinstance(raw, bool) or not isinstance(raw, (numbers.Real, Decimal)):
            problem = (
                f"backoff({attempt}) returned {type(raw).__name__} {reprlib.repr(raw)}, "
                "not a number of seconds"
            )
        else:
            try:
                delay = float(raw)
            except (ValueError, OverflowError):  # e.g. Decimal("sNaN")
                delay = math.nan
            if not math.isfinite(delay):
                problem = f"backoff({attempt}) returned {raw!r}, not a finite number of seconds"
    if problem is not None:
        return 0.0, (
            f"step {node.name!r}: {problem}; no retry possible after attempt {attempt} "
            f"failed with {attempt_error}"
        )
    return max(0.0, delay), None
