"""Fan-out groups (DESIGN §4): a group's verdict from its children, and a map's children.

Pure functions of nodes. The verdict is decided from the group's tally (children completed
and failed, counted as they settle), so a settling child costs O(1); the children are
scanned once, when the verdict is reached, to gather the group's value or error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _jsonutil
from .._errors import describe_error
from .._states import FAILED_STATES, State
from ._node import Node, redacted_error

__all__ = [
    "MapPlan",
    "Verdict",
    "close_if_coroutine",
    "map_child_names",
    "partial_value",
    "plan_map",
    "verdict",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a group ends: its state, and its value (completed) or error."""

    state: State
    value: Any = None
    encoded: str | None = None
    error: str | None = None


def _fails_fast(group: Node) -> bool:
    """Settle a group as failed as soon as its quorum cannot be met any more (the children
    not settled yet are cancelled): ``fail_fast=True`` on the step. By default children
    fail alone (DESIGN §4): the group settles once every child has."""
    return group.spec.fail_fast


def verdict(group: Node) -> Verdict | None:
    """The group's end if its children decide it now, else None. Needs ``group.tally``.

    ``group.size`` children count, known or not yet: a map whose later children are still
    being stored is judged on all its items (its tally counts only the children it has),
    so it never completes on its first ones, and fails fast on them as it would on all."""
    assert group.tally is not None, "a group's verdict is asked once it opened"
    children = group.children
    total = group.size
    quorum = min(group.spec.quorum or total, total)
    done_count, failed_count = group.tally
    if done_count < quorum:
        if total - failed_count >= quorum:
            return None  # the quorum can still be met
        if not _fails_fast(group) and done_count + failed_count < total:
            return None
    done = [c for c in children if c.state is State.COMPLETED]
    if len(done) >= quorum:
        value: Any = [c.result for c in done]
        if group.spec.models:  # a multi-model group's value: {model: result}
            value = {c.model: c.result for c in done}
        return Verdict(State.COMPLETED, value, _jsonutil.dumps(value))
    failed = [c for c in children if c.state in FAILED_STATES]
    state = State.DISCARDED if any(c.state is State.DISCARDED for c in failed) else State.CANCELLED
    return Verdict(state, error=_failure(group, len(done), failed))


def partial_value(group: Node) -> Any:
    """What a dependent that ignores the failed ``group`` gets for it: the value the group
    would have had, with ``None`` for each child that did not complete (a map's list keeps
    its item order; a multi-model group's dict holds the models that completed). None when
    no child completed (nothing to go on with: as for any failed dep)."""
    children = group.children
    if not any(c.state is State.COMPLETED for c in children):
        return None
    if group.spec.models:
        return {c.model: c.result for c in children if c.state is State.COMPLETED}
    return [c.result if c.state is State.COMPLETED else None for c in children]


def _failure(group: Node, done: int, failed: list[Node]) -> str:
    """Why the group failed. With ``quorum=k``: ``quorum not reached: 7 of 10 completed, 8
    needed (failed: …)``; with none (all needed): ``1 of 994 failed: map[17]``, plus, under
    ``fail_fast``, that the children not settled are cancelled."""
    total = group.size
    names = ", ".join(c.name for c in failed)
    if group.spec.quorum is not None:
        quorum = min(group.spec.quorum, total)
        reached = f"{done:,} of {total:,} completed, {quorum:,} needed"
        return f"quorum not reached: {reached} (failed: {names})"
    error = f"{len(failed):,} of {total:,} failed: {names}"
    unsettled = total - done - len(failed)
    if unsettled > 0:  # fail_fast: the others are cancelled next
        error += f" (fail_fast: the {unsettled} not finished are cancelled)"
    return error


@dataclass(frozen=True, slots=True)
class MapPlan:
    """A map's children: one name per item, in item order."""

    names: list[str]
    items: list[Any]


def plan_map(group: Node, source: Node) -> MapPlan | str:
    """The children of a map over ``source``'s result, or why there can be none."""
    spec = group.spec
    if source.state is not State.COMPLETED:
        return f"map_over={spec.map_over!r}: that step did not complete"
    items = source.result
    if not isinstance(items, list):
        return f"map_over={spec.map_over!r} needs a list result, got {type(items).__name__}"
    assert spec.map_over is not None
    names = map_child_names(group.name, spec.map_over, spec.map_key, items)
    if isinstance(names, str):
        return names
    return MapPlan(names, items)


def map_child_names(
    group: str, source: str, map_key: Callable[[Any], Any] | None, items: list[Any]
) -> list[str] | str:
    """The child names ``group[key]`` of a map over ``items`` (key: the index, or
    ``map_key(item)``), or an error message: a map_key that raises, is async, or gives
    a key twice. A set keeps the duplicate check linear (100,000 items: milliseconds)."""
    if map_key is None:
        return [f"{group}[{index}]" for index in range(len(items))]
    names: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            key = map_key(item)
            close_if_coroutine(key)
            if inspect.isawaitable(key):
                raise TypeError(
                    f"it returned {type(key).__name__}; map_key must be a plain "
                    "(not async) function"
                )
            name = f"{group}[{key}]"  # a key whose str() raises fails here
        except Exception as exc:
            raised = redacted_error(describe_error(exc))
            return f"step {group!r}: map_key raised {raised} (item {index} of {source!r})"
        if name in seen:
            return f"map_key gave the key {key!r} twice; keys must be unique"
        seen.add(name)
        names.append(name)
    return names


def close_if_coroutine(value: object) -> None:
    # An async function given where a plain one is expected: close its coroutine so that
    # Python does not warn "never awaited" on top of the clear error raised by the caller.
    if inspect.iscoroutine(value):
        value.close()
