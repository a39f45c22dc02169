"""Work that must stay linear in the number of nodes and calls, checked by counting.

Speed itself is measured in benchmarks/runtime.py (the map scaling rows); these tests pin
the operations that used to grow with the square: a list scanned per map child, per
watched child, and every call summed again at every widget redraw.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from baton_nb import _runview
from baton_nb._run import CallRecord, Run, StepInfo
from baton_nb._states import NodeKind
from baton_nb._usage import Usage
from baton_nb._watch import _Forward
from baton_nb.runtime._groups import map_child_names
from baton_nb.store import NodeRow
from baton_nb.widget import _state

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


class CountingList(list[Any]):
    """A list that counts membership tests (``x in list`` scans it)."""

    scans = 0

    def __contains__(self, item: object) -> bool:
        CountingList.scans += 1
        return super().__contains__(item)


def test_map_child_names_are_checked_for_duplicates_in_one_pass() -> None:
    keys = [f"k{i}" for i in range(50_000)]
    names = map_child_names("each", "items", lambda item: item, keys)
    assert isinstance(names, list) and len(names) == 50_000 and names[7] == "each[k7]"
    duplicate = map_child_names("each", "items", lambda item: item, [*keys, "k3"])
    assert duplicate == "map_key gave the key 'k3' twice; keys must be unique"
    assert map_child_names("each", "items", None, [None] * 3) == ["each[0]", "each[1]", "each[2]"]


def node_row(name: str, node_id: int, kind: NodeKind, parent: str | None = None) -> NodeRow:
    return NodeRow(
        run_id="r",
        step=name,
        kind=kind,
        worker="",
        deps=[],
        remaining_deps=0,
        max_attempts=1,
        updated_at=NOW,
        id=node_id,
        parent=parent,
    )


def test_a_watcher_adds_children_without_scanning_the_group() -> None:
    watched = _Forward(Run("r", "w"), None)
    watched.row(node_row("each", 1, NodeKind.GROUP))
    group = watched.run.steps["each"]
    group.children = CountingList()
    CountingList.scans = 0
    for i in range(1000):
        watched.row(node_row(f"each[{i}]", i + 2, NodeKind.CHILD, "each"))
    watched.row(node_row("each[3]", 5, NodeKind.CHILD, "each"))  # seen again
    # ... and from an event of the running process (a child not read yet)
    watched.run.add_step(StepInfo(name="each[3]", job_id=5, kind=NodeKind.CHILD, parent="each"))
    assert CountingList.scans == 0
    assert list(group.children) == [f"each[{i}]" for i in range(1000)]  # each child once


class CountedCall(CallRecord):
    reads = 0

    def __getattribute__(self, name: str) -> Any:
        if name == "replayed":
            CountedCall.reads += 1
        return super().__getattribute__(name)


def call(cost: str | None, *, replayed: bool = False) -> CallRecord:
    return CountedCall(
        run_id="r",
        step="s",
        model="m",
        provider="p",
        attempt=1,
        call_index=0,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=None if cost is None else Decimal(cost),
        latency_ms=1.0,
        replayed=replayed,
        estimated=False,
        created_at=NOW,
    )


def test_run_totals_sum_each_call_once_across_redraws() -> None:
    run = Run("r", "w")
    run.calls = [call("0.01") for _ in range(1000)]
    CountedCall.reads = 0
    header = _state.header(run, cancellable=True, cancelling=False, source="live")
    assert CountedCall.reads == 1000
    for extra in (call("0.5"), call(None), call("7", replayed=True)):
        run.calls.append(extra)
        header = _state.header(run, cancellable=True, cancelling=False, source="live")
    # each new call read once, not the 1,000 again (the replayed one twice: the check for
    # replayed calls, then the pass that skips it)
    assert CountedCall.reads == 1004
    assert run.known_cost == Decimal("10.5") and run.cost is None  # one call unpriced
    assert header["cost"] is not None
    assert run.unpriced_calls == 1
    assert run.tokens == Usage(input_tokens=10_020, output_tokens=5_010)
    run.calls = run.calls[:10]  # a list replaced: summed again from the start
    assert run.cost == Decimal("0.1") and run.unpriced_calls == 0
    # the new calls' usages are summed field by field at once: every field, as ``+`` does
    full, other = Usage(100, 10, 20, 50, 5, 3, 2), Usage(7, 1, 2, 3, 1, 1, 1)
    run.calls.append(replace(call("0.1"), usage=full))
    run.calls.append(replace(call("0.1"), usage=other))
    assert run.tokens == Usage(input_tokens=100, output_tokens=50) + full + other
    # cached calls: no cost, no tokens; what they would have cost summed apart
    cached = [replace(call("0"), cached=True, saved=Decimal(s)) for s in ("0.25", "0.25", "1")]
    cost = run.known_cost
    run.calls.extend(cached)
    assert (
        run.known_cost == cost
        and run.tokens == Usage(input_tokens=100, output_tokens=50) + full + other
    )
    assert _runview.cache_savings(run) == (3, Decimal("1.5"))
