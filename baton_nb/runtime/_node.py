"""The scheduler's node: the authoritative state of one step during an execution.

Pure data and pure graph work (no I/O): nodes made from stored rows, linked into the
graph (dependents, fan-out children), and reset for a resume.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from .. import _jsonutil
from .._graph import GraphSpec, StepSpec
from .._states import TERMINAL_STATES, NodeKind, State
from ..store import NodeRow, NodeUpdate

__all__ = [
    "Node",
    "build_nodes",
    "gc_paused",
    "new_child_rows",
    "new_node_row",
    "reset_for_resume",
]

_UNSET: Any = object()
_STORED = {state: state.value for state in State}  # a state as the store writes it


def redacted_error(error: str) -> str:
    """A step's error text as stored and shown (``step.error``, show, the widget, report):
    API keys and secret-shaped tokens replaced, as in the captured tracebacks."""
    from ..llm import redact_secrets  # on a failure only: ``llm`` is imported lazily

    return redact_secrets(error)


def new_node_row(
    run_id: str,
    spec: StepSpec,
    step: str,
    *,
    kind: NodeKind,
    now: datetime,
    parent: str | None = None,
    deps: list[str] | None = None,
    model: str | None = None,
    item_index: int | None = None,
) -> NodeRow:
    """A pending node row. Fan-out children wait (1 remaining) for their group to open."""
    deps = deps or []
    return NodeRow(
        run_id=run_id,
        step=step,
        parent=parent,
        kind=kind,
        worker=spec.worker,
        deps=deps,
        remaining_deps=1 if kind is NodeKind.CHILD else len(deps),
        ignore_cancelled=spec.ignore_cancelled,
        ignore_discarded=spec.ignore_discarded,
        max_attempts=1 if kind is NodeKind.GROUP else spec.max_attempts,
        model=model,
        item_index=item_index,
        updated_at=now,
    )


def new_child_rows(
    run_id: str, spec: StepSpec, parent: str, children: list[tuple[int, str]], now: datetime
) -> list[NodeRow]:
    """Rows of map children ``(item_index, name)``, made by their group as it opens: ready
    to run (0 remaining), so opening the group writes none of them again. The values all
    rows share are computed once (one empty deps list: the store encodes it once)."""
    worker, max_attempts = spec.worker, spec.max_attempts
    ignore_cancelled, ignore_discarded = spec.ignore_cancelled, spec.ignore_discarded
    no_deps: list[str] = []
    child = NodeKind.CHILD
    return [
        NodeRow(
            run_id=run_id,
            step=name,
            kind=child,
            worker=worker,
            deps=no_deps,
            remaining_deps=0,
            max_attempts=max_attempts,
            updated_at=now,
            parent=parent,
            ignore_cancelled=ignore_cancelled,
            ignore_discarded=ignore_discarded,
            item_index=index,
        )
        for index, name in children
    ]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a synchronous block builds many objects.

    Building the nodes of a 100,000-item map allocates half a million objects; the
    collections that allocation triggers (each full one traversing the whole heap) took
    two thirds of the time. Reference counting still frees garbage meanwhile; cycles made
    in the block are collected by the next collection after it. Around code that does not
    await (no other task runs meanwhile), or a short, bounded block (one chunk of a map's
    children inserted while their nodes are built: the map's children started already may
    run meanwhile, a tenth of a second at most).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Node:
    """A step, a fan-out group, or one fan-out child."""

    __slots__ = (
        "_result",
        "attempt",
        "children",
        "dependents",
        "deps",
        "error",
        "finished_at",
        "id",
        "item",
        "item_index",
        "kind",
        "max_attempts",
        "model",
        "name",
        "parent",
        "remaining",
        "result_json",
        "size",
        "spec",
        "started_at",
        "state",
        "tally",
    )

    def __init__(self, row: NodeRow, spec: StepSpec) -> None:
        assert row.id is not None, "a node is made from a stored row"
        self.id: int = row.id
        self.name: str = row.step
        self.kind: NodeKind = row.kind
        self.spec = spec
        self.deps: list[str] = row.deps
        self.state: State = row.state
        self.attempt: int = row.attempt
        self.max_attempts: int = row.max_attempts
        self.error: str | None = row.error
        self.result_json: str | None = row.result
        self._result: Any = _UNSET
        self.remaining: int = row.remaining_deps
        self.started_at: datetime | None = row.started_at
        self.finished_at: datetime | None = row.finished_at
        self.model: str | None = row.model
        self.item_index: int | None = row.item_index
        self.item: Any = None
        self.parent: Node | None = None
        # A group's [completed, failed] children, counted as they settle (set when it opens).
        self.tally: list[int] | None = None
        # A group's number of children, known as it opens (a map's: its items, before the
        # last of them are stored); its verdict counts on it.
        self.size = 0
        # Shared empty tuples until linked (most nodes have no children, many no dependents):
        # two containers less per node that would live, and be traced by the GC, all run long.
        self.children: Sequence[Node] = ()
        self.dependents: Sequence[Node] = ()

    @property
    def result(self) -> Any:
        if self._result is _UNSET:
            self._result = _jsonutil.loads(self.result_json)
        return self._result

    @property
    def has_result(self) -> bool:
        result = self.result_json
        return result is not None and result != "null"

    def set_result(self, value: Any, encoded: str) -> None:
        self.result_json = encoded
        self._result = value

    def clear_result(self) -> None:
        self.result_json, self._result = None, _UNSET

    def update(self, now: datetime) -> NodeUpdate:
        """The columns that change while it runs, as the store writes them."""
        result = self.result_json
        return (
            _STORED[self.state],
            self.attempt,
            self.error,
            result,
            result is not None and result != "null",
            self.remaining,
            self.started_at,
            self.finished_at,
            now,
            self.id,
        )

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.kind} {self.state} remaining={self.remaining}>"


def build_nodes(graph: GraphSpec, rows: Sequence[NodeRow]) -> dict[str, Node]:
    """The nodes of a run from its rows, linked: dependents, and fan-out children in order."""
    nodes: dict[str, Node] = {}
    for row in rows:
        node = Node(row, graph.steps[row.parent or row.step])
        nodes[node.name] = node
    children: dict[str, list[Node]] = {}
    dependents: dict[str, list[Node]] = {}
    parents = {row.step: row.parent for row in rows}
    for node in nodes.values():
        parent_name = parents[node.name]
        if node.kind is NodeKind.CHILD and parent_name is not None:
            node.parent = nodes[parent_name]
            children.setdefault(parent_name, []).append(node)
        else:
            for dep in node.deps:
                dependents.setdefault(dep, []).append(node)
    for name, found in dependents.items():
        nodes[name].dependents = found
    for name, found in children.items():
        group = nodes[name]
        order = {m: i for i, m in enumerate(group.spec.models)}
        found.sort(key=lambda c: (order.get(c.model or "", 0), c.item_index or 0, c.id))
        group.children = found
    return nodes


def reset_for_resume(nodes: Mapping[str, Node], clock: Callable[[], datetime]) -> list[Node]:
    """Everything not completed runs again with fresh attempts (its first start kept);
    counters recomputed.
    Returns the nodes it changed, to write: not the completed ones (a resumed map of
    100,000 completed children wrote them all again, a second of writes).

    A completed step that ran without one of its deps (``ignore_discarded`` or
    ``ignore_cancelled``: that dep is not completed now) computed from partial data: it
    runs again as that dep does, and so does every completed step downstream of it (and a
    map's children, whose items may change); their LLM calls replay from the store when
    the request is the same."""
    changed: dict[str, Node] = {}
    for node in _ran_without_deps(nodes):
        node.state = State.PENDING
        changed[node.name] = node
    for node in nodes.values():
        if node.state is State.COMPLETED:
            continue
        if node.parent is not None and node.parent.state is State.COMPLETED:
            # A child left over from a group whose quorum was met; one still running when
            # the process died is settled as a quorum settles it, or the run never would.
            if node.state not in TERMINAL_STATES:
                node.state = State.CANCELLED
                node.error = f"not needed: quorum of {node.parent.name!r} met"
                node.finished_at = node.finished_at or clock()
                changed[node.name] = node
            continue
        node.state, node.attempt, node.error = State.PENDING, 0, None
        node.clear_result()
        # started_at is kept: a step's (and a group's) duration counts from its first
        # start, in an earlier execution too (docs/widget.md, "Durations")
        node.finished_at = None
        changed[node.name] = node
    for node in nodes.values():
        if node.kind is NodeKind.CHILD:
            remaining = 0 if node.state in TERMINAL_STATES else 1
        else:
            remaining = sum(1 for d in node.deps if nodes[d].state is not State.COMPLETED)
        if remaining != node.remaining:
            node.remaining = remaining
            changed[node.name] = node
    return list(changed.values())


def _ran_without_deps(nodes: Mapping[str, Node]) -> list[Node]:
    """The completed nodes to run again on a resume: those that completed while a dep had
    not (it is not completed now, and runs again), everything completed downstream of
    them, and the children of the groups among them."""
    completed = State.COMPLETED
    stack = [
        node
        for node in nodes.values()
        if node.state is completed
        and node.kind is not NodeKind.CHILD
        and any(nodes[d].state is not completed for d in node.deps)
    ]
    found: dict[str, Node] = {}
    while stack:
        node = stack.pop()
        if node.name in found:
            continue
        found[node.name] = node
        stack.extend(d for d in node.dependents if d.state is completed)
        stack.extend(c for c in node.children if c.state is completed)
    return list(found.values())
