"""The runtime's in-memory node: the authoritative state of one step during a run."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from .. import _jsonutil
from .._graph import StepSpec
from .._run import StepInfo
from ..store import utcnow

__all__ = ["Node", "child_info", "gc_paused", "new_child_rows", "new_node_row"]

_UNSET: Any = object()


def new_node_row(
    run_id: str,
    spec: StepSpec,
    step: str,
    *,
    kind: str,
    parent: str | None = None,
    deps: list[str] | None = None,
    model: str | None = None,
    item_index: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A pending ``workflow_nodes`` row. Fan-out children wait (1 remaining) for their group.

    ``now`` (its ``updated_at``) may be given once for many rows.
    """
    deps = deps or []
    return {
        "run_id": run_id,
        "step": step,
        "parent": parent,
        "kind": kind,
        "worker": spec.worker,
        "deps": _jsonutil.dumps(deps) if deps else "[]",
        "remaining_deps": 1 if kind == "child" else len(deps),
        "ignore_cancelled": spec.ignore_cancelled,
        "ignore_discarded": spec.ignore_discarded,
        "max_attempts": 1 if kind == "group" else spec.max_attempts,
        "model": model,
        "item_index": item_index,
        "state": "pending",
        "attempt": 0,
        "error": None,
        "result": None,
        "has_result": False,
        "started_at": None,
        "finished_at": None,
        "updated_at": utcnow() if now is None else now,
    }


def new_child_rows(
    run_id: str, spec: StepSpec, parent: str, children: list[tuple[int, str]]
) -> list[dict[str, Any]]:
    """Pending rows of map children ``(item_index, name)``, made by their group as it runs:
    nothing left to wait for (0 remaining). One template, copied per child (a 100,000-item
    map builds its rows in a fraction of the time ``new_node_row`` takes)."""
    template = new_node_row(run_id, spec, "", kind="child", parent=parent)
    template["remaining_deps"] = 0
    return [{**template, "step": name, "item_index": index} for index, name in children]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a synchronous block builds many objects.

    Building the nodes of a 100,000-item map allocates half a million objects; the
    collections that allocation triggers (each full one traversing the whole heap) took
    two thirds of the time. Reference counting still frees garbage meanwhile; cycles made
    in the block are collected by the next collection after it. Only around code that
    does not await (no other task runs meanwhile).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def child_info(row: dict[str, Any]) -> StepInfo:
    """The ``StepInfo`` of a new child row (no deps to decode, nothing run yet)."""
    return StepInfo(
        name=row["step"],
        job_id=int(row["id"]),
        kind="child",
        parent=row["parent"],
        worker=row["worker"],
        max_attempts=row["max_attempts"],
        model=row["model"],
        item_index=row["item_index"],
    )


class Node:
    """A step, a fan-out group, or one fan-out child."""

    __slots__ = (
        "_result",
        "attempt",
        "children",
        "completions",
        "dependents",
        "deps",
        "error",
        "finished_at",
        "history_loaded",
        "id",
        "info",
        "item",
        "item_index",
        "kind",
        "max_attempts",
        "model",
        "name",
        "parent",
        "remaining",
        "result_json",
        "spec",
        "started_at",
        "state",
        "tally",
    )

    def __init__(self, row: dict[str, Any], spec: StepSpec, info: StepInfo) -> None:
        self.id: int = int(row["id"])
        self.name: str = row["step"]
        self.kind: str = row["kind"]
        self.spec = spec
        self.info = info
        self.deps: list[str] = info.deps
        self.state: str = row["state"]
        self.attempt: int = row["attempt"]
        self.max_attempts: int = row["max_attempts"]
        self.error: str | None = row["error"]
        self.result_json: str | None = row["result"]
        self._result: Any = _UNSET
        self.remaining: int = row["remaining_deps"]
        self.started_at: datetime | None = row["started_at"]
        self.finished_at: datetime | None = row["finished_at"]
        self.model: str | None = row["model"]
        self.item_index: int | None = row["item_index"]
        self.item: Any = None
        self.parent: Node | None = None
        # A group's [completed, failed] children, counted as they settle (set when it runs).
        self.tally: list[int] | None = None
        # Shared empty tuples until linked (most nodes have no children, many no dependents):
        # two containers less per node that would live, and be traced by the GC, all run long.
        self.children: Sequence[Node] = ()
        self.dependents: Sequence[Node] = ()
        self.completions: dict[int, dict[str, str]] = {}
        self.history_loaded = False

    @property
    def result(self) -> Any:
        if self._result is _UNSET:
            self._result = _jsonutil.loads(self.result_json)
        return self._result

    def set_result(self, value: Any, encoded: str) -> None:
        self.result_json = encoded
        self._result = value

    def row(self, now: datetime) -> tuple[Any, ...]:
        """The mutable columns as the store writes them: ``NODE_FIELDS`` values, then the id."""
        result = self.result_json
        return (
            self.state,
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

    def sync_info(self) -> None:
        info = self.info
        info.state = self.state
        info.attempt = self.attempt
        info.error = self.error
        info.has_result = self.result_json is not None and self.result_json != "null"
        info.started_at = self.started_at
        info.finished_at = self.finished_at

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.kind} {self.state} remaining={self.remaining}>"
