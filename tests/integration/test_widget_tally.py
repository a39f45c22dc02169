"""A large map in the live widget: its children counted and summed at their marks (``_tally``),
not drawn one by one; its first children and its discarded ones keep their rows.

The thresholds are lowered here (a map of 40 items is tallied, 5 children listed) so the
runs stay small; the browser test draws a real 5,000-item one (tests/acceptance).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import baton_nb as bn
import baton_nb.widget as widget_pkg
from baton_nb._run import StepInfo
from baton_nb._runview import NodeKind
from baton_nb._usage import Usage
from baton_nb.reports import fmt_money
from baton_nb.widget import Attached, DagWidget, _state, _tally
from baton_nb.widget._snapshot import snapshot_bundle
from baton_nb.widget._tally import GroupTally

pytestmark = pytest.mark.anyio

ITEMS = 60


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tally, "TALLY_AT", 40)
    monkeypatch.setattr(_tally, "LISTED", 5)
    import baton_nb.runtime._driver as driver_module

    monkeypatch.setattr(driver_module, "CHUNKS", (10, 20))  # added a chunk at a time


def expected(run: bn.Run, group: str) -> dict[str, Any]:
    """A map's tally as the view should have it, counted here from the run's steps."""
    kids = [run.steps[name] for name in run.steps[group].children]
    costs = [k.cost for k in kids if k.calls or k.cost]
    return {
        "k": len(kids),
        "l": _tally.LISTED,
        "s": dict(Counter(str(k.state) for k in kids)),
        "ti": sum(k.usage.input_tokens for k in kids),
        "to": sum(k.usage.output_tokens for k in kids),
        "u": sum(k.unpriced_calls for k in kids),
        "n": sum(k.calls for k in kids),
        "rp": sum(k.replayed_calls for k in kids),
        "ch": sum(k.cached_calls for k in kids),
        "c": fmt_money(sum(costs, Decimal(0))) if costs else None,
    }


def view_counts(
    graph: dict[str, list[Any]], states: dict[str, Any], groups: dict[str, Any]
) -> Counter[str]:
    """The steps per state as ``dag.js`` ``refresh`` counts them: a tallied map's children
    from its tally, the others from their node states (``x``: items not stored, pending)."""
    counts: Counter[str] = Counter()
    for name, kind, parent in zip(graph["id"], graph["k"], graph["p"], strict=True):
        state = states.get(name, _state.PENDING)
        if kind == "group":
            counts.update(groups.get(name, {}).get("s", {}))
            counts["pending"] += state.get("x", 0)
        elif parent is None or parent not in groups:
            counts[state["s"]] += 1
    return +counts


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[DagWidget, list[str]]]]:
    """``wf.run(display=True)`` with the kernel's widget, each redraw checked as it ends:
    every tally is the run's own count at that moment (each change was marked)."""
    shown: list[tuple[DagWidget, list[str]]] = []

    def show(run: bn.Run) -> Attached:
        widget = DagWidget(run)
        wrong: list[str] = []
        shown.append((widget, wrong))
        redraw = widget._throttle.fn

        def checked_redraw() -> None:
            redraw()
            for group, tally in widget.groups.items():
                if tally != expected(run, group):
                    wrong.append(f"{group}: {tally} != {expected(run, group)}")

        widget._throttle.fn = checked_redraw
        return Attached(widget)

    monkeypatch.setattr(widget_pkg, "in_kernel", lambda: True)
    monkeypatch.setattr(widget_pkg, "_show_widget", show)
    yield shown


def map_workflow(name: str, db: str, *, fail: int | None = None) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(ITEMS))

    @wf.step(map_over="src", max_attempts=1)
    async def each(ctx: bn.Context) -> str:
        if ctx.item == fail:
            raise ValueError(f"item {fail} is bad")
        return (await ctx.complete(model="mock/gpt-4o-mini", prompt=f"item {ctx.item}")).text

    @wf.step()
    async def after(ctx: bn.Context, src: list[int]) -> int:
        return len(src)

    return wf


async def test_a_large_maps_children_are_counted_not_drawn(
    small: None, checked: list[tuple[DagWidget, list[str]]], db_url: str, unique: str
) -> None:
    run = await map_workflow(f"tally-{unique}", db_url).run(display=True)
    assert run.status == "completed"
    [(widget, wrong)] = checked
    assert wrong == []  # every redraw's tally was the run's count then
    assert widget.groups == {"each": expected(run, "each")}
    tally = widget.groups["each"]
    assert tally["s"] == {"completed": ITEMS} and tally["n"] == ITEMS and tally["c"] is not None
    children = run.steps["each"].children
    # Rows: the run's own steps and the map's first children only (a child marked before
    # the map was known as a large one, in its first chunk, may have had one sent).
    assert set(widget._rows) == {"src", "each", "after", *children[:5]}
    # What the view counts is the run's count; what a test reads of a node is the node.
    states = _state.node_states(run)
    assert view_counts(widget.graph, widget.state(), widget.groups) == Counter(
        run.counts().by_state
    )
    assert widget.state() == states
    # The saved snapshot: the tallies, and the rows of the listed children only.
    saved = widget._snapshot_state()
    assert saved["groups"] == widget.groups
    assert set(saved["rows"]) == {"src", "each", "after", *children[:5]}
    html = snapshot_bundle(run, saved)["text/html"]
    assert '"groups":{"each":{"k":60,"l":5,' in html
    # the view's own reading of the sums: the run's cost, every call in the map's tally
    assert Decimal(tally["c"]) + Decimal(states["src"]["c"] or 0) == run.cost


async def test_a_large_maps_discarded_children_keep_their_rows(
    small: None, checked: list[tuple[DagWidget, list[str]]], sqlite_url: str, unique: str
) -> None:
    """The failure line names each discarded step with its error: a tallied map's
    discarded children keep their rows, live and in the snapshot."""
    run = await map_workflow(f"tally-fail-{unique}", sqlite_url, fail=33).run(display=True)
    [(widget, wrong)] = checked
    assert wrong == []
    bad = run.steps["each"].children[33]
    assert widget._rows[bad][0] == "discarded" and "item 33 is bad" in widget._rows[bad][10]
    assert widget.groups["each"]["s"]["discarded"] == 1
    assert bad in widget._snapshot_state()["rows"]
    assert view_counts(widget.graph, widget.state(), widget.groups) == Counter(
        run.counts().by_state
    )


async def test_a_stored_large_map_is_tallied_when_the_widget_opens(
    small: None, sqlite_url: str, unique: str
) -> None:
    """A widget made on a run that already has its children (a finished run, a watched
    one) tallies its large maps at once."""
    run = await map_workflow(f"tally-stored-{unique}", sqlite_url).run()
    loaded = await bn.Run.load(run.id, db=sqlite_url)
    widget = DagWidget(loaded)
    assert widget.groups == {"each": expected(loaded, "each")}
    assert widget.state() == _state.node_states(loaded)
    children = loaded.steps["each"].children
    assert set(widget._snapshot_state()["rows"]) == {"src", "each", "after", *children[:5]}
    widget.close()


def child(name: str, **fields: Any) -> StepInfo:
    return StepInfo(name=name, job_id=1, kind=NodeKind.CHILD, parent="m", **fields)


def test_a_childs_part_moves_with_it() -> None:
    """Each mark replaces the child's part of the sums: counted once, whatever its path."""
    tally = GroupTally("m")
    step = child("m[0]", state="executing", attempt=1)
    assert tally.mark(step) and tally.as_json(2)["s"] == {"executing": 1, "pending": 1}
    assert not tally.mark(step)  # nothing moved: nothing to send
    assert tally.as_json(2)["c"] is None  # no call: no cost (not $0)
    step.calls, step.cost, step.usage = 1, Decimal("0.25"), Usage(input_tokens=10, output_tokens=5)
    step.state = "completed"
    assert tally.mark(step)
    done = tally.as_json(2)
    assert done["s"] == {"completed": 1, "pending": 1}
    assert (done["ti"], done["to"], done["n"], done["c"]) == (10, 5, 1, "0.25")
    step.state, step.calls, step.cost, step.usage = "pending", 0, Decimal(0), Usage()
    assert tally.mark(step)  # reset (a resumed map): its part taken back
    again = tally.as_json(2)
    assert again["s"] == {"pending": 2} and (again["ti"], again["n"], again["c"]) == (0, 0, None)
    free = child("m[1]", state="completed", attempt=1, calls=1, cached_calls=1)
    tally.mark(free)  # from the response cache: a call, cost 0 but known
    assert tally.as_json(2)["c"] == "0" and tally.as_json(2)["ch"] == 1
