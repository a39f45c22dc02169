"""A large map in the live widget: its children counted and summed at each redraw
(``_tally``), not drawn one by one; its first children and its discarded ones keep their rows.

The thresholds are lowered here (a map of 40 items is tallied, 5 children listed) so the
runs stay small; the browser test draws a real 5,000-item one (tests/acceptance).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

import baton_nb as bn
import baton_nb.widget as widget_pkg
from baton_nb._run import CallRecord, StepInfo
from baton_nb._runview import NodeKind
from baton_nb._states import TERMINAL_STATES, State
from baton_nb._usage import Usage
from baton_nb.reports import fmt_money
from baton_nb.widget import Attached, DagWidget, _state, _tally
from baton_nb.widget._snapshot import DETAILS_BUDGET, _details, snapshot_bundle
from baton_nb.widget._tally import GroupTally, Tallies

pytestmark = pytest.mark.anyio

ITEMS = 60


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tally, "TALLY_AT", 40)
    monkeypatch.setattr(_tally, "LISTED", 5)
    import baton_nb.runtime._driver as driver_module

    monkeypatch.setattr(driver_module, "CHUNKS", (10, 20))  # added a chunk at a time


def expected(run: bn.Run, group: str, *, live: bool = False) -> dict[str, Any]:
    """A map's tally as the view should have it, counted here from the run's steps: the
    spend of every child (``live``: of the children that ended, as a running view has it)."""
    kids = [run.steps[name] for name in run.steps[group].children]
    spent = [k for k in kids if k.state in TERMINAL_STATES] if live else kids
    costs = [k.cost for k in spent if k.calls or k.cost]
    return {
        "k": len(kids),
        "l": _tally.LISTED,
        "s": dict(Counter(str(k.state) for k in kids)),
        "ti": sum(k.usage.input_tokens for k in spent),
        "to": sum(k.usage.output_tokens for k in spent),
        "u": sum(k.unpriced_calls for k in spent),
        "n": sum(k.calls for k in spent),
        "rp": sum(k.replayed_calls for k in spent),
        "ch": sum(k.cached_calls for k in spent),
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
    every tally is the run's own count at that moment (each change was marked), the
    spend of its children that ended."""
    shown: list[tuple[DagWidget, list[str]]] = []

    def show(run: bn.Run) -> Attached:
        widget = DagWidget(run)
        wrong: list[str] = []
        shown.append((widget, wrong))
        redraw = widget._throttle.fn

        def checked_redraw() -> bool:
            again = redraw()  # (asks for the next while a map's children run: kept)
            for group, tally in widget.groups.items():
                if tally != expected(run, group, live=True):
                    wrong.append(f"{group}: {tally} != {expected(run, group, live=True)}")
            return again

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
    return StepInfo(**{"name": name, "job_id": 1, "kind": NodeKind.CHILD, "parent": "m", **fields})


def test_a_count_reads_each_childs_state_and_sums_each_end_once() -> None:
    """Each count reads every placed child's state at its item's place, whatever its path
    (a reset to pending included); the spend of a child that ended is added once; a child
    discarded since the last count is returned (a resumed one discarded again too)."""
    tally = GroupTally("m", 3)
    step = child("m[0]", item_index=0, state=State.EXECUTING, attempt=1)
    tally.mark(step)  # placed
    assert tally.count() == ([], True)
    assert tally.as_json(2)["s"] == {"executing": 1, "pending": 1}
    assert tally.as_json(2)["c"] is None  # no call: no cost (not $0)
    step.state = State.COMPLETED
    tally.count()
    assert tally.count() == ([], True)  # counted twice: once in the counts
    assert tally.as_json(2)["s"] == {"completed": 1, "pending": 1}
    step.state = State.PENDING  # reset (a resumed map)
    tally.count()
    assert tally.as_json(2)["s"] == {"pending": 2}
    late = child("m[5]", item_index=5, state=State.CANCELLED)  # past the items first known
    tally.place(late)
    tally.count()
    assert tally.as_json(3)["s"] == {"cancelled": 1, "pending": 2}
    done = child("m[1]", item_index=1, state=State.EXECUTING, calls=1, cost=Decimal("0.25"))
    done.usage = Usage(input_tokens=10, output_tokens=5)
    tally.place(done)
    tally.count()  # executing, its call made: its spend not in the sums yet
    assert tally.as_json(3)["n"] == 0
    done.state = State.COMPLETED
    tally.count()
    tally.count()  # its end counted twice: added once
    cached = child("m[2]", item_index=2, state=State.COMPLETED, calls=1, cached_calls=1)
    tally.place(cached)  # from the response cache: a call, cost 0 but known
    tally.count()
    sums = tally.as_json(3)
    assert (sums["ti"], sums["to"], sums["n"], sums["ch"], sums["c"]) == (10, 5, 2, 1, "0.25")
    again = child("m[4]", item_index=4, state=State.PENDING, calls=2, cost=Decimal("0.5"))
    tally.begin(again)  # reset by a resume, its calls kept: summed as the map is found large
    tally.count()
    again.state = State.DISCARDED
    assert tally.count()[0] == [again]  # discarded (again): its row, though summed before
    assert tally.count()[0] == []  # once
    assert tally.as_json(4)["n"] == 4


def hand_run(children: int, items: int = 0, **child_fields: Any) -> bn.Run:
    """A running run of one map ``m`` with ``children`` children stored (of ``items``:
    the others not stored yet), built by hand."""
    run = bn.Run(f"tally-{uuid.uuid4().hex[:8]}", "tally")
    run.status = "running"
    unstored = max(0, items - children)
    run.add_step(
        StepInfo(name="m", job_id=1, kind=NodeKind.GROUP, state=State.EXECUTING, unstored=unstored)
    )
    for i in range(children):
        run.add_step(child(f"m[{i}]", job_id=i + 2, item_index=i, **child_fields))
    return run


def test_a_pending_child_with_a_charge_is_in_its_maps_cost(small: None) -> None:
    """A resume resets a child to pending with the charge of its attempt that had no
    answer (a cost, no call): the map's cost has it, from the start and at the end."""
    run = hand_run(50)
    charge = Decimal("0.01")
    run.add_call(
        CallRecord.unanswered(run.id, "m[30]", 0, -1, "m", "p", charge, datetime.now(timezone.utc))
    )
    widget = DagWidget(run)
    widget._throttle.close()
    assert widget.groups["m"] == expected(run, "m") and widget.groups["m"]["c"] == "0.01"
    for i in range(10):
        run.steps[f"m[{i}]"].state = State.COMPLETED
        run.step_changed(f"m[{i}]")
    run.status = "cancelled"
    run.run_ended()
    assert widget.groups["m"] == expected(run, "m")


def test_a_widget_opened_on_a_running_large_map_keeps_no_row_it_would_not_update(
    small: None,
) -> None:
    """Opened mid-run (or on a watched run), the widget computes no row for the children
    it only counts: they would go stale in ``nodes`` (the page's saved state)."""
    run = hand_run(50, state=State.EXECUTING, attempt=1)
    widget = DagWidget(run)
    widget._throttle.close()
    assert set(widget._rows) == {"m", *(f"m[{i}]" for i in range(5))}
    assert widget.groups["m"]["s"] == {"executing": 50}
    for i in range(50):
        run.steps[f"m[{i}]"].state = State.COMPLETED
        run.step_changed(f"m[{i}]")
    run.steps["m"].state = State.COMPLETED
    run.step_changed("m")
    run.status = "completed"
    run.run_ended()
    assert {row[0] for row in widget.nodes.values()} == {"completed"}
    assert widget.groups["m"] == expected(run, "m")


def test_rows_sent_before_a_map_was_known_large_are_dropped(small: None) -> None:
    """A map looked at before its item count was known (a resumed run's first chunk, its
    rest not counted yet) is tallied when its next chunk comes: the rows of its children
    it only counts from then on are dropped, not kept stale."""
    run = hand_run(30)
    widget = DagWidget(run)
    widget._throttle.close()
    for i in range(30):
        run.steps[f"m[{i}]"].state, run.steps[f"m[{i}]"].attempt = State.EXECUTING, 1
        run.step_changed(f"m[{i}]")
    widget._redraw()
    assert not widget.groups and "m[29]" in widget._rows  # small: every child has its row
    for i in range(30, 60):
        run.add_step(child(f"m[{i}]", job_id=i + 2, item_index=i))
    widget._redraw()
    assert widget.groups["m"] == expected(run, "m")
    assert set(widget._rows) == {"m", *(f"m[{i}]" for i in range(5))}


def test_a_redraw_counting_while_the_run_ends_sums_each_child_once(small: None) -> None:
    """A run of another thread ends (``settle``: every child counted again, spend
    included) while the widget's redraw places the children added since and counts them:
    each child's spend is in the sums once, whichever comes first."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(100):
            run = hand_run(1, 60, state=State.EXECUTING, attempt=1)
            tallies = Tallies()
            tallies.bind(run)  # tallied (60 items), its first child seen
            known = len(run.steps)
            for i in range(1, 60):
                kid = child(f"m[{i}]", job_id=i + 2, item_index=i, state=State.COMPLETED)
                kid.calls, kid.cost = 1, Decimal("0.01")
                run.add_step(kid)
            run.steps["m"].unstored = 0
            go = threading.Barrier(2)

            def ends(tallies: Tallies, go: threading.Barrier) -> None:
                go.wait()
                tallies.settle()

            def redraws(tallies: Tallies, go: threading.Barrier, known: int) -> None:
                go.wait()
                tallies.redraw(known, {}, {}, set())

            threads = [
                threading.Thread(target=ends, args=(tallies, go)),
                threading.Thread(target=redraws, args=(tallies, go, known)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            tallies.redraw(len(run.steps), {}, {}, set())  # a redraw after: adds nothing
            assert tallies.as_json()["m"] == expected(run, "m")
    finally:
        sys.setswitchinterval(switch)


async def test_a_snapshot_keeps_no_details_of_children_it_only_counts(
    small: None, checked: list[tuple[DagWidget, list[str]]], sqlite_url: str, unique: str
) -> None:
    run = await map_workflow(f"tally-details-{unique}", sqlite_url, fail=33).run(display=True)
    [(widget, _)] = checked
    state = widget._snapshot_state()
    kept = _details(run, DETAILS_BUDGET, None, state["rows"])[0]
    children = run.steps["each"].children
    assert set(kept) == {"src", "each", "after", children[33], *children[:5]}


def test_a_mark_racing_a_redraw_still_asks_for_the_next_one(small: None) -> None:
    """A redraw (of another thread) takes the ask for it while a mark is counted: the mark
    asks again (the view never stops following, never waits for a redraw none asked for).
    The marks that still come of a tallied map's children: those of a child with no item
    index (a watched run's), through the widget's ``_mark``."""
    run = hand_run(50)
    run.steps["m[20]"].item_index = run.steps["m[21]"].item_index = None
    widget = DagWidget(run)
    widget._throttle.close()
    pokes: list[int] = []
    widget._throttle.poke = lambda: pokes.append(1)  # type: ignore[method-assign]
    run.steps["m[20]"].state = State.EXECUTING
    run.step_changed("m[20]")  # asks: a redraw due
    assert len(pokes) == 1
    note = widget._tallies.note

    def noted_then_redrawn(step: StepInfo) -> bool:  # the other thread redraws right here
        widget._tallies.note = note  # type: ignore[method-assign]
        widget._redraw()
        return note(step)

    widget._tallies.note = noted_then_redrawn  # type: ignore[method-assign]
    run.steps["m[21]"].state = State.EXECUTING
    run.step_changed("m[21]")  # saw a redraw due, taken: asks again
    assert len(pokes) == 2
    run.steps["m[20]"].state = State.COMPLETED
    run.step_changed("m[20]")
    assert len(pokes) == 2
    widget._redraw()
    assert widget.groups["m"] == expected(run, "m", live=True)


def test_a_large_maps_children_are_counted_at_redraws_not_told(small: None) -> None:
    """The run does not tell the widget of the children it only counts (``quiet``): each
    redraw reads them, and asks for the next while one has not ended (the throttle calls
    again); the spend of those that ended is summed once; a child discarded gets its row
    (no longer quiet); once every child ended, a redraw asks for none."""
    run = hand_run(50)
    widget = DagWidget(run)
    widget._throttle.close()
    told: list[str] = []
    run.follow(told.append, lambda: None)  # another follower (the text line) is told all
    widget_told: list[str] = []
    mark = widget._mark
    widget._mark = lambda name: (widget_told.append(name), mark(name))[1]  # type: ignore[method-assign]
    remove, widget._remove = widget._remove, None
    assert remove is not None
    remove()  # (follow again, with the spy)
    run.follow(widget._mark, widget.finish, widget._tallies.quiet)
    assert widget._tallies.quiet == {f"m[{i}]" for i in range(5, 50)}
    for i in (2, 10, 11, 30):
        step = run.steps[f"m[{i}]"]
        step.state, step.attempt, step.calls, step.cost = State.COMPLETED, 1, 1, Decimal("0.5")
        run.step_changed(f"m[{i}]")
    assert told == ["m[2]", "m[10]", "m[11]", "m[30]"] and widget_told == ["m[2]"]
    assert widget._redraw() is True  # children still pending: the next redraw asked for
    assert widget.groups["m"] == expected(run, "m", live=True)
    assert widget.groups["m"]["n"] == 4 and widget.groups["m"]["c"] == "2"
    assert widget._redraw() is True
    assert widget.groups["m"]["n"] == 4  # summed once
    bad = run.steps["m[40]"]
    bad.state, bad.attempt, bad.error = State.DISCARDED, 1, "ValueError: bad item"
    run.step_changed("m[40]")
    widget._redraw()
    assert widget._rows["m[40]"][0] == "discarded" and "m[40]" not in widget._tallies.quiet
    for step in run.steps.values():
        if step.parent == "m" and step.state is State.PENDING:
            step.state = State.COMPLETED
    assert widget._redraw() is False  # every child ended: nothing left to read
    assert widget.groups["m"] == expected(run, "m", live=True)


def test_a_discarded_child_reset_keeps_its_row_current(small: None) -> None:
    """A child past the listed ones that is discarded gets its row (the failure line names
    it); reset and run again, its row follows it, not only its map's count."""
    run = hand_run(50)
    widget = DagWidget(run)
    widget._throttle.close()
    bad = run.steps["m[30]"]
    bad.state, bad.attempt, bad.error = State.DISCARDED, 1, "ValueError: bad item"
    run.step_changed("m[30]")
    widget._redraw()
    assert widget._rows["m[30]"][0] == "discarded"
    for state in (State.PENDING, State.EXECUTING, State.COMPLETED):
        bad.state, bad.error = state, None
        run.step_changed("m[30]")
        widget._redraw()
        assert widget._rows["m[30]"][0] == str(state)
        assert widget.groups["m"] == expected(run, "m", live=True)


def test_a_child_stored_as_its_map_is_found_large_is_counted(small: None) -> None:
    """A child is in the run's steps a moment before it is in its map's children list
    (``RunView.add_step``): a redraw in between, the one that finds the map large, still
    places it (counted, quiet)."""
    run = hand_run(30)
    widget = DagWidget(run)
    widget._throttle.close()
    widget._redraw()
    for i in range(30, 45):
        run.add_step(child(f"m[{i}]", job_id=i + 2, item_index=i))
    late = child("m[45]", job_id=47, item_index=45)
    run.steps["m[45]"] = late  # ``add_step``'s first line: a redraw of another thread here
    widget._redraw()
    run.steps["m"].children.append("m[45]")  # its second line
    assert late in widget._tallies.groups["m"].kids and "m[45]" in widget._tallies.quiet
    for name in run.steps["m"].children:
        run.steps[name].state = State.COMPLETED
    assert widget._redraw() is False  # every child counted: none left running
    assert widget.groups["m"]["s"] == {"completed": 46}


def test_a_child_discarded_just_before_the_end_has_its_row_in_the_snapshot(small: None) -> None:
    """A quiet child discarded after the last redraw (no mark told, no count since): the
    end's check gives it its row, so the saved snapshot's failure line names it."""
    run = hand_run(50)
    widget = DagWidget(run)
    widget._throttle.close()
    widget._redraw()
    bad = run.steps["m[30]"]
    bad.state, bad.attempt, bad.error = State.DISCARDED, 1, "ValueError: bad item"
    run.step_changed("m[30]")  # quiet: the widget is not told
    for step in run.steps.values():
        if step.parent == "m" and step.state is State.PENDING:
            step.state = State.COMPLETED
    run.status = "completed"
    run.run_ended()
    assert widget._rows["m[30]"][0] == "discarded"
    assert "m[30]" in widget._snapshot_state()["rows"]
    assert widget.groups["m"]["s"] == {"completed": 49, "discarded": 1}


def test_a_child_run_again_after_a_reset_has_its_new_spend_in_the_live_sums(
    small: None,
) -> None:
    """A child that ended (its spend summed) and is reset by a resume, then runs again:
    taken out of the sums while it runs, its whole spend in them once it ends again."""
    run = hand_run(50)
    widget = DagWidget(run)
    widget._throttle.close()
    bad = run.steps["m[30]"]
    bad.state, bad.attempt, bad.calls, bad.cost = State.DISCARDED, 1, 1, Decimal("0.5")
    run.step_changed("m[30]")
    widget._redraw()
    assert widget.groups["m"] == expected(run, "m", live=True)
    assert widget.groups["m"]["n"] == 1
    for state in (State.PENDING, State.EXECUTING):
        bad.state = state
        run.step_changed("m[30]")
        widget._redraw()
        assert widget.groups["m"] == expected(run, "m", live=True)  # (not ended: not in them)
    bad.calls, bad.cost, bad.state = 2, Decimal("1.0"), State.COMPLETED  # its second call
    run.step_changed("m[30]")
    widget._redraw()
    widget._redraw()
    assert widget.groups["m"] == expected(run, "m", live=True)
    assert (widget.groups["m"]["n"], widget.groups["m"]["c"]) == (2, "1")


def test_the_view_follows_a_map_tallied_at_a_redraw(small: None) -> None:
    """A map found large at a redraw (its children added since the last): that redraw
    asks for the next (a map tallied there once left the view waiting for the run's end),
    and the next counts its children."""
    run = hand_run(0, items=60)
    widget = DagWidget(run)
    widget._throttle.close()
    for i in range(60):
        run.add_step(child(f"m[{i}]", job_id=i + 2, item_index=i))
    run.steps["m"].unstored = 0
    assert widget._redraw() is True
    assert "m" in widget._tallies.groups
    run.steps["m[10]"].state = State.EXECUTING
    run.step_changed("m[10]")
    widget._redraw()
    assert widget.groups["m"]["s"] == {"executing": 1, "pending": 59}
