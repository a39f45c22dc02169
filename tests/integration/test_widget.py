"""The live DAG widget, ``bn.watch`` and the text progress line, at the Python level (DESIGN §7–§8).

The view itself (dag.js) is tested in a real browser (tests/acceptance/test_browser.py);
here we check what Python ships to it: graph, node states, header, throttled redraws,
cancel, watching runs of this and other processes, the text line and the saved snapshot.
Offline: mock models only.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
import baton_nb.widget as widget_pkg
from baton_nb._run import TERMINAL_STATES, StepInfo
from baton_nb._runview import NodeKind
from baton_nb.reports import fmt_money
from baton_nb.widget import Attached, DagWidget, TextProgress, _state
from baton_nb.widget._dag import WIDGET_MIME
from baton_nb.widget._snapshot import snapshot_bundle
from tests.widget_view import from_columns

pytestmark = pytest.mark.anyio

MODELS = ["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.0-flash"]
ROOT = Path(__file__).resolve().parents[2]
RANK = {"pending": 0, "executing": 1, "snoozed": 1, "retryable": 1}


def rank(state: str) -> int:
    return 2 if state in TERMINAL_STATES else RANK[state]


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DagWidget]]:
    """Make ``wf.run(display=True)`` take the kernel path, keeping the widget it shows."""
    widgets: list[DagWidget] = []

    def show(run: bn.Run) -> Attached:
        widget = DagWidget(run)
        widgets.append(widget)
        throttle = widget._throttle
        redraw = throttle.fn

        def recorded() -> None:  # when, by the throttle's own clock, each redraw happened
            REDRAWN_AT.setdefault(id(widget), []).append(throttle._clock())
            redraw()

        throttle.fn = recorded
        return Attached(widget)

    monkeypatch.setattr(widget_pkg, "in_kernel", lambda: True)
    monkeypatch.setattr(widget_pkg, "_show_widget", show)
    yield widgets


REDRAWN_AT: dict[int, list[float]] = {}


def fanout_workflow(name: str, db: str) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step(models=MODELS)
    async def answer(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="Explain durable execution in one line")).text

    @wf.step()
    async def summary(ctx: bn.Context, answer: list[str]) -> str:
        return (await ctx.synthesize(answer, model="mock/gpt-4o-mini")).text

    return wf


def done_total(widget: DagWidget) -> tuple[int, int]:
    """Steps done/total as the view counts them (groups are not steps)."""
    kinds = {g["id"]: g["k"] for g in _state.graph_entries(widget.graph)}
    mine = [n for name, n in widget.state().items() if kinds[name] != "group"]
    return sum(1 for n in mine if n["s"] in TERMINAL_STATES), len(mine)


# ── model state after a run ───────────────────────────────────────────────────


async def test_widget_state_after_a_fanout_run(
    shown: list[DagWidget], db_url: str, unique: str
) -> None:
    wf = fanout_workflow(f"wfan-{unique}", db_url)
    run = await wf.run(display=True)
    assert run.status == "completed"
    [widget] = shown

    children = [f"answer[{m}]" for m in MODELS]
    assert widget.graph["id"] == ["answer", *children, "summary"]
    graph = {g["id"]: g for g in _state.graph_entries(widget.graph)}
    assert graph["answer"]["k"] == "group"
    assert all(graph[c]["k"] == "child" and graph[c]["p"] == "answer" for c in children)
    assert [graph[c]["m"] for c in children] == MODELS
    assert list(graph["summary"]["d"]) == ["answer"]

    state = widget.state()
    assert set(state) == set(graph)
    assert all(n["s"] == "completed" for n in state.values())
    for name in [*children, "summary"]:
        node, step = state[name], run.steps[name]
        assert node["n"] == 1 and node["a"] == 1 and node["r"] is True
        assert node["ti"] == step.usage.input_tokens > 0
        assert node["to"] == step.usage.output_tokens > 0
        assert Decimal(node["c"]) == step.cost > 0
        assert node["t0"] is not None and node["t1"] >= node["t0"]
    assert state["answer"]["c"] is None  # the group made no call itself
    assert sum(Decimal(state[n]["c"]) for n in [*children, "summary"]) == run.cost

    header = widget.header
    assert done_total(widget) == (4, 4)
    assert header["status"] == "completed" and header["id"] == run.id
    assert header["wf"] == wf.name and header["failed"] == []
    assert header["cost"] == str(run.cost) and Decimal(header["cost"]) == run.cost
    assert header["ti"] == run.tokens.input_tokens and header["to"] == run.tokens.output_tokens
    assert header["cancellable"] is False and header["cancelling"] is False
    assert header["t1"] is not None
    # What the view has equals what the database has.
    loaded = await bn.Run.load(run.id, db=db_url)
    assert state == _state.node_states(loaded)
    assert loaded.cost == run.cost

    # Clicking a node: its result, calls and context come back as a message.
    sent: list[Any] = []
    widget.send = sent.append  # type: ignore[method-assign]
    widget._on_msg(widget, {"type": "detail", "id": "summary"}, [])
    widget._on_msg(widget, {"type": "detail", "id": "nope"}, [])
    widget._on_msg(widget, "not a dict", [])
    assert [m["id"] for m in sent] == ["summary", "nope"]
    detail = sent[0]["detail"]
    assert json.loads(detail["result"]) == run.results["summary"]
    assert [c["m"] for c in detail["calls"]] == ["mock/gpt-4o-mini"]
    assert sent[1]["detail"] == {"id": "nope", "missing": True}


# ── throttled redraws ─────────────────────────────────────────────────────────


async def test_redraws_are_throttled_during_a_thousand_step_run(
    shown: list[DagWidget], sqlite_url: str
) -> None:
    wf = bn.Workflow("wburst", db=sqlite_url)

    async def tick(ctx: bn.Context) -> int:
        await anyio.sleep(0.01)
        return 1

    for i in range(1000):
        wf.add(f"s{i:04d}", tick)
    run = await wf.run(display=True, concurrency=40)  # ~3,000 events over ~0.5 s
    [widget] = shown
    assert run.status == "completed"

    # live, but <= 10/s: throttled redraws at least an interval apart (the throttle's clock)
    redrawn = REDRAWN_AT.pop(id(widget))
    assert len(redrawn) == widget._throttle.calls >= 2
    gaps = [b - a for a, b in itertools.pairwise(redrawn)]
    assert all(gap >= 0.1 * 0.99 for gap in gaps), gaps  # loop timer resolution only
    # first full send + throttled patches + the final full send(s), nothing else
    assert widget.redraws <= widget._throttle.calls + 3
    # Final state complete and correct: no stale node.
    state = widget.state()
    assert len(state) == len(widget.graph["id"]) == 1000
    assert all(n["s"] == "completed" and n["a"] == 1 for n in state.values())
    assert state == _state.node_states(run)
    assert done_total(widget) == (1000, 1000) and widget.header["status"] == "completed"


def merge_changed(states: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
    """What dag.js (``mergeChanged``) does with ``changed``: each node's state replaced."""
    for node in from_columns(changed):
        states[node.pop("id")] = node
    return states


def test_columns_are_read_back_as_the_entries() -> None:
    """A column is a list of the entries' values, or one value for all (``{"all": v}``);
    ``id`` always a list; a field an entry lacks reads as None."""
    entries = [{"k": "child", "d": (), "i": i, "x": 3} for i in range(3)]
    entries[1].pop("x")
    cols = _state.columns(entries, ("k", "d", "i"), optional=("x",), ids=["a", "b", "c"])
    assert cols == {
        "id": ["a", "b", "c"],
        "k": {"all": "child"},
        "d": {"all": ()},
        "i": [0, 1, 2],
        "x": [3, None, 3],
    }
    back = from_columns(json.loads(json.dumps(cols)))
    assert back == [
        {"id": name, "k": "child", "d": [], "i": i, "x": None if i == 1 else 3}
        for i, name in enumerate("abc")
    ]
    one = _state.columns([{"id": "a", "k": "step"}], ("id", "k"))
    assert one == {"id": ["a"], "k": {"all": "step"}}  # an id stays a list
    assert _state.columns([{"k": "step"}], ("k",)) == {"k": {"all": "step"}}
    assert _state.columns([], ("id", "k"), optional=("x",)) == {"id": [], "k": [], "x": []}


def shown_as(node: dict[str, Any]) -> dict[str, Any]:
    """A node as the view reads it: an optional field sent as null or 0 reads as 0 (``x``:
    no item left unstored; ``ch``: no call answered from the cache)."""
    optional = _state.OPTIONAL_NODE_KEYS
    return {key: value for key, value in node.items() if not (key in optional and not value)}


def _as_dicts(nodes: dict[str, Any]) -> dict[str, Any]:
    """``nodes`` (each node's row) as each node's dict."""
    return {name: _state.row_dict(row) for name, row in nodes.items()}


def sent_nodes(widget: DagWidget) -> dict[str, Any]:
    """``nodes`` as a view opened now gets it (its JSON: each node's dict)."""
    nodes: dict[str, Any] = widget.get_state(["nodes"])["nodes"]
    return nodes


async def test_each_send_holds_only_what_changed_since_the_previous_one(
    shown: list[DagWidget], sqlite_url: str
) -> None:
    """The patch used to hold every change since the last full send, re-encoded at each
    redraw (at 20,000 calls the widget cost more CPU than the run); now ``changed`` holds
    the nodes changed since the previous send, each in full, as columns. The view replaces
    its states with them, and ends with what Python has."""
    wf = bn.Workflow("wpatch", db=sqlite_url)

    async def tick(ctx: bn.Context) -> int:
        await anyio.sleep(0.005)
        return 1

    for i in range(600):
        wf.add(f"s{i:04d}", tick)
    patches: list[dict[str, Any]] = []
    views: list[dict[str, Any]] = []  # what the view has after each send (one view, live)

    def observe(change: dict[str, Any]) -> None:
        patches.append(dict(change["new"]))
        widget = change["owner"]
        views.append(merge_changed(dict(views[-1] if views else sent_nodes(widget)), change["new"]))
        current = {
            k: _state.row_dict(v) for k, v in widget._rows.items() if v != _state.PENDING_ROW
        }
        assert {k: shown_as(v) for k, v in views[-1].items()} == {
            k: shown_as(v) for k, v in current.items()
        }
        # A view opened now starts from ``nodes`` and the last ``changed``: the same.
        again = merge_changed(dict(sent_nodes(widget)), widget.changed)
        assert {k: shown_as(v) for k, v in again.items()} == sent_nodes(widget) == current

    original_bind = DagWidget._bind

    def bind_and_observe(self: DagWidget, *args: Any) -> None:
        original_bind(self, *args)
        self.observe(observe, names=["changed"])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DagWidget, "_bind", bind_and_observe)
        run = await wf.run(display=True, concurrency=2)  # a few steps per redraw
    assert run.status == "completed"
    sends = [{n.pop("id"): n for n in from_columns(p)} for p in patches]
    assert len([p for p in sends if p]) >= 3
    for before, after in itertools.pairwise(sends):  # a node again only once it changed
        assert all(before[name] != node for name, node in after.items() if name in before)
    assert sum(len(p) for p in sends) <= 2 * 600
    # The fields every node of a send shares go once (the attempt, the counts: 0 or 1)
    assert any(p["a"] == {"all": 1} and p["e"] == {"all": None} for p in patches if p)
    assert {n: shown_as(v) for n, v in views[-1].items()} == {
        name: _state.node_state(step) for name, step in run.steps.items()
    }


async def test_the_view_never_shows_more_steps_executing_than_the_concurrency(
    shown: list[DagWidget], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's terminal state is announced after its commit, the next step's start at
    once: the view used to keep the finished step "executing" meanwhile (101 executing at
    concurrency=100). Every send must show at most ``concurrency`` executing."""
    seen: list[int] = []
    send_state = DagWidget.send_state

    def recording(self: DagWidget, key: Any = None) -> None:
        send_state(self, key)
        seen.append(sum(1 for n in self.state().values() if n["s"] == "executing"))

    monkeypatch.setattr(DagWidget, "send_state", recording)
    wf = bn.Workflow("wconc", db=sqlite_url)

    async def tick(ctx: bn.Context) -> int:
        await anyio.sleep(0.002)
        return 1

    for i in range(300):
        wf.add(f"s{i:03d}", tick)
    run = await wf.run(display=True, concurrency=8)
    assert run.status == "completed" and len(seen) > 3
    assert max(seen) <= 8, seen


async def test_a_burst_of_a_thousand_step_changes_is_one_redraw() -> None:
    """2,000 step changes of a live run, told as the runtime tells them (``Run.step_changed``):
    one redraw. The widget follows the Run, not the bus: nothing subscribes to the run's
    topics, so the runtime builds no event for it."""
    run = bn.Run(f"burst-{uuid.uuid4().hex[:8]}", "burst")
    run.status = "running"
    for i in range(1000):
        run.steps[f"s{i}"] = StepInfo(name=f"s{i}", job_id=i)
    widget = DagWidget(run)
    assert widget.redraws == 1  # the first full send
    topic = bn.topic_workflow(run.id)
    assert not bn.events.has_subscribers(topic, bn.topic_all())
    for state in ("executing", "completed"):
        for step in run.steps.values():
            if step.name != "s7" or state == "executing":  # s7 left executing
                step.state, step.attempt = state, 1
                run.step_changed(step.name)
    assert widget.redraws == 1  # followers only mark dirty; nothing is sent inline
    await anyio.sleep(0.01)
    assert widget.redraws == 2 and widget._throttle.calls == 1
    shown = widget.state()
    assert shown.pop("s7")["s"] == "executing"
    assert all(n["s"] == "completed" for n in shown.values())

    run.steps["s7"].state = "cancelled"  # a late change no one told, then the end of the run
    run.status = "failed"
    run.run_ended()
    assert widget.state()["s7"]["s"] == "cancelled" and widget.header["status"] == "failed"
    redraws = widget.redraws
    run.step_changed("s8")  # after the end: the widget no longer follows
    await anyio.sleep(0.01)
    assert widget.redraws == redraws and not run.followers


def test_a_change_marked_with_no_event_loop_running_is_drawn() -> None:
    """With no event loop running the throttle redraws inline at a mark: the step marked
    is in that redraw (it was added to the set the redraw had already taken)."""
    run = bn.Run(f"noloop-{uuid.uuid4().hex[:8]}", "noloop")
    run.status = "running"
    run.add_step(StepInfo(name="a", job_id=0))
    widget = DagWidget(run)
    run.steps["a"].state, run.steps["a"].attempt = "executing", 1
    widget._mark("a")
    assert widget.redraws == 2
    assert widget.state()["a"]["s"] == "executing"
    assert sent_nodes(widget)["a"]["s"] == "executing"


def test_a_step_marked_final_is_drawn_as_it_was_at_its_last_mark() -> None:
    """A step marked in a final state gets its row at the mark (its objects just written);
    a later mark computes it again (a change after it is drawn) or drops it (a step no
    longer final, e.g. a resumed one, is read at the redraw); groups are read at the redraw
    (their count of unstored items moves unmarked)."""
    run = bn.Run(f"final-{uuid.uuid4().hex[:8]}", "final")
    run.status = "running"
    for name in ("a", "b"):
        run.add_step(StepInfo(name=name, job_id=0, state="executing", attempt=1))
    run.add_step(StepInfo(name="g", job_id=2, kind=NodeKind.GROUP))
    widget = DagWidget(run)
    widget._throttle.close()  # redrawn by hand below
    a, b, g = run.steps["a"], run.steps["b"], run.steps["g"]
    a.state = b.state = g.state = "completed"
    for name in ("a", "b", "g"):
        widget._mark(name)
    assert set(widget._final) == {"a", "b"}  # computed at the mark; not the group's
    a.error = "a charge told later"  # a change, marked: computed again
    widget._mark("a")
    b.state = "executing"  # not final any more: dropped, read at the redraw
    widget._mark("b")
    assert set(widget._final) == {"a"}
    widget._redraw()
    assert widget._final == {}
    state = widget.state()
    assert state["a"]["e"] == "a charge told later" and state["b"]["s"] == "executing"
    assert state["g"]["s"] == "completed"
    widget.close()


@pytest.mark.parametrize("attached", [True, False])
async def test_the_last_changes_of_an_attached_widget_go_into_its_snapshot_unsent(
    attached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``attach``'s widget is replaced by its snapshot the moment the run ends: its last
    changes (and the end-of-run check's) go into the snapshot, not into a message for a view
    about to go. A widget displayed by hand (not closed at the end) still gets them sent."""
    import IPython.display

    updates: list[dict[str, Any]] = []

    class Handle:
        def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
            updates.append(bundle)

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: Handle())
    monkeypatch.setattr(widget_pkg, "in_kernel", lambda: True)
    run = bn.Run(f"last-{uuid.uuid4().hex[:8]}", "last")
    run.status = "running"
    for i in range(3):
        run.steps[f"s{i}"] = StepInfo(name=f"s{i}", job_id=i, state="executing", attempt=1)
    widget = DagWidget(run)
    widget._ipython_display_()
    if attached:
        Attached(widget)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(widget, "_send", lambda msg, buffers=None: sent.append(msg))
    for step in run.steps.values():
        step.state = "completed"
        run.step_changed(step.name)  # marked; the run ends before the throttle's redraw
    run.steps["s2"].error = "told nobody"  # a change only the end-of-run check sees
    run.status = "completed"
    run.run_ended()
    states = widget.state()
    assert all(n["s"] == "completed" for n in states.values()) and states["s2"]["e"]
    assert widget.header["status"] == "completed"
    [bundle] = updates
    page = bundle["text/html"]
    assert '"s":{"all":"completed"}' in page and '"told nobody"' in page
    if attached:
        assert sent == []
    else:
        [message] = [m for m in sent if "changed" in m["state"]]
        assert set(message["state"]["changed"]["id"]) == {"s0", "s1", "s2"}
        assert message["state"]["header"]["status"] == "completed"
    widget.close()


@pytest.mark.parametrize("live", [True, False])
async def test_children_added_mid_run_are_sent_without_resending_every_node(live: bool) -> None:
    """A map's children appear a chunk at a time: each chunk used to resend and recompute
    every node; now the graph grows, and ``changed`` holds the new nodes shown (not pending),
    their group (its count of unstored items) and the nodes events touched. A new node
    still pending gets no state computed: at 20,000 children, most of them. A run of this
    process marks every change (its new nodes are not looked at unless marked); a watched
    run's new nodes may come already started: each checked (``is_pending``)."""
    run = bn.Run(f"grow-{uuid.uuid4().hex[:8]}", "grow")
    run.status = "running"
    run.add_step(StepInfo(name="root", job_id=0, state="completed", attempt=1))
    run.add_step(StepInfo(name="m", job_id=1, kind=NodeKind.GROUP, unstored=6))
    widget = DagWidget(run)
    widget._throttle.close()  # redrawn by hand below
    if not live:
        widget._source = "watch"  # (what ``bn.watch`` feeds: events, not the runtime's marks)
    sent: list[str] = []
    widget.observe(
        lambda change: sent.append(change["name"]), names=["graph", "grown", "nodes", "changed"]
    )
    computed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        node_row = _state.node_row
        mp.setattr(_state, "node_row", lambda s: computed.append(s.name) or node_row(s))
        for i in range(3):  # a chunk of 3: one already running when the view redraws
            child = StepInfo(name=f"m[{i}]", job_id=i + 2, kind=NodeKind.CHILD, parent="m")
            run.add_step(child)
        run.steps["m"].unstored = 3
        run.steps["m[0]"].state, run.steps["m[0]"].attempt = "executing", 1
        if live:
            run.step_changed("m[0]")  # what the runtime does at each change
        widget._redraw()
    # not ``root`` again, nor the new children still pending (not computed)
    assert sorted(computed) == ["m", "m[0]"]
    assert widget.graph["id"] == ["root", "m", "m[0]", "m[1]", "m[2]"]
    assert sent == ["grown", "changed"]  # neither ``nodes`` nor ``graph`` sent again
    # the new entries only, as columns
    added = _state.columns(_state.graph(run)[2:], _state.GRAPH_KEYS)
    assert widget.grown == {"at": 2, "add": added}
    changed = {n.pop("id"): shown_as(n) for n in from_columns(widget.changed)}
    assert changed == {name: _state.node_states(run)[name] for name in ("m", "m[0]")}
    assert widget.state() == _state.node_states(run)
    widget.finish()


@pytest.mark.parametrize("settles", ["quorum", "fail_fast"])
async def test_a_settled_maps_later_children_are_drawn_cancelled_while_the_run_goes_on(
    shown: list[DagWidget], sqlite_url: str, monkeypatch: pytest.MonkeyPatch, settles: str
) -> None:
    """A map settled early (its quorum met, or an item failed with ``fail_fast``) stores its
    later chunks' children cancelled, and adopts its pending ones cancelled: the runtime
    adds and syncs them without marking each. The live view draws them cancelled while the
    run goes on (a 20,000-item map settled in its first chunk showed ~19,000 pending)."""
    import baton_nb.runtime._driver as driver_module

    monkeypatch.setattr(driver_module, "CHUNKS", (3, 6))
    wf = bn.Workflow(f"settle-{settles}", db=sqlite_url)
    seen: dict[str, Any] = {}

    @wf.step()
    async def src(ctx: bn.Context) -> list[int]:
        return list(range(40))

    options: dict[str, Any] = {"quorum": 2} if settles == "quorum" else {"fail_fast": True}

    @wf.step(map_over="src", max_attempts=1, **options)
    async def each(ctx: bn.Context) -> int:
        if settles == "fail_fast" and ctx.item == 1:
            raise ValueError("item 1")
        await anyio.sleep(0.05 if ctx.item > 2 else 0)
        return int(ctx.item)

    @wf.step()
    async def beside(ctx: bn.Context) -> int:  # runs on while the map settles
        [widget] = shown
        live = widget.run
        assert live is not None
        with anyio.fail_after(10):
            while live.steps.get("each") is None or live.steps["each"].state not in (
                "completed",
                "discarded",
            ):
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)  # its later chunks stored (cancelled)
        widget._throttle.flush()  # what the next redraw sends, now
        drawn = widget.state()
        seen["wrong"] = {
            name: (drawn[name]["s"], str(step.state))
            for name, step in live.steps.items()
            if drawn[name]["s"] != str(step.state)
        }
        seen["cancelled"] = sum(1 for step in live.steps.values() if step.state == "cancelled")
        return 1

    run = await wf.run(display=True)
    assert seen["cancelled"] >= 3 and seen["wrong"] == {}, seen
    [widget] = shown
    assert {n["s"] for n in widget.state().values()} >= {"cancelled"}
    assert run.status in ("completed", "failed")


def test_a_call_read_before_its_step_counts_in_the_steps_totals() -> None:
    """``bn.watch`` and ``Run.load`` read a run's calls apart from its nodes (Postgres read
    committed): a call may come before its step. Kept until the step comes, then added to
    its totals: its node, the static view's step and model rows all count it."""
    from baton_nb.store import CallRecord
    from baton_nb.widget._static import _by_model, census, sums

    run = bn.Run(f"early-{uuid.uuid4().hex[:8]}", "early")
    run.add_step(StepInfo(name="m", job_id=1, kind=NodeKind.GROUP, state="executing"))
    call = CallRecord(
        run.id, "m[0]", "mock/a", "mock", 1, 0, bn.Usage(input_tokens=10, output_tokens=5),
        Decimal("0.25"), 1.0, False,
        False, datetime.now(timezone.utc),
    )  # fmt: skip
    run.add_call(call)  # the call read first
    run.add_step(StepInfo(name="m[0]", job_id=2, kind=NodeKind.CHILD, parent="m"))
    step = run.steps["m[0]"]
    assert (step.calls, step.cost, step.usage.total_tokens) == (1, Decimal("0.25"), 15)
    by_step, by_model = sums(run)
    assert (by_step["m"].calls, by_step["m"].known_cost) == (1, Decimal("0.25"))
    assert by_model == _by_model(run) and census(run).by_step == by_step
    assert _state.node_state(step)["c"] == "0.25"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
async def test_the_first_patch_of_a_node_never_sent_is_merged_into_pending(tmp_path: Path) -> None:
    """A node's patch (an older kernel's, or a saved widget state's) holds what changed from
    PENDING; for a node the view never got, that may leave its state out (a map's count of
    unstored items). dag.js merged it into an empty node: state undefined, drawn as
    ``st-undefined``; now into pending. ``changed`` (this kernel's) replaces it whole."""
    run = bn.Run(f"first-{uuid.uuid4().hex[:8]}", "first")
    run.status = "running"
    run.add_step(StepInfo(name="root", job_id=0, state="completed", attempt=1))
    run.add_step(StepInfo(name="m", job_id=1, kind=NodeKind.GROUP))
    widget = DagWidget(run)
    view = sent_nodes(widget)  # what the view was sent
    assert "m" not in view
    run.add_step(StepInfo(name="m[0]", job_id=2, kind=NodeKind.CHILD, parent="m"))
    run.steps["m"].unstored = 3  # its first chunk stored, the group still pending
    widget._redraw()
    patch = {"m": {"x": 3}}  # what an older kernel sent
    module = tmp_path / "dag.mjs"  # node loads a .js file as CommonJS
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ mergePatch, mergeChanged }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify([mergePatch({json.dumps(view)}, {json.dumps(patch)}),"
        f" mergeChanged({json.dumps(view)}, {json.dumps(widget.changed)})]))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    merged, changed = json.loads(out.stdout)
    assert merged["m"] == {"s": "pending", "a": 0, "x": 3}
    assert shown_as(changed["m"]) == {**_state.PENDING, "x": 3} == sent_nodes(widget)["m"]
    assert merged["root"] == changed["root"] == sent_nodes(widget)["root"]
    widget.finish()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_token_counts_are_short_and_round_up_to_the_next_unit(tmp_path: Path) -> None:
    """dag.js ``fmtTokens``: at most 6 characters below a billion (a fan-out card's row
    sizes its token column by them); what rounds to 1,000k reads 1.0M (it read "1000k"),
    what rounds to 10.0k reads 10k."""
    counts = [0, 58, 999, 1000, 9949, 9950, 12_345, 999_499, 999_500, 1_000_000, 123_456_789]
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ fmtTokens }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify({json.dumps(counts)}.map(fmtTokens)))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    shown = json.loads(out.stdout)
    assert shown == ["0", "58", "999", "1.0k", "9.9k", "10k", "12k", "999k", "1.0M", "1.0M",
                     "123.5M"]  # fmt: skip
    assert max(map(len, shown)) <= 6


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_a_column_of_one_value_but_a_few_is_sent_once_with_its_exceptions(
    tmp_path: Path,
) -> None:
    """``encode_column``: a value shared by all but a quarter of the entries at most is sent
    once, with the positions and values of the others (a run's named steps before its
    children); dag.js's ``fromColumns`` reads every entry back, as from a list."""
    named = [{"id": n, "k": k, "p": None, "i": None} for n, k in (("a", "step"), ("m", "group"))]
    children = [{"id": f"m[{i}]", "k": "child", "p": "m", "i": i} for i in range(10)]
    entries = named + children
    cols = _state.columns(entries, ("id", "k", "p", "i"))
    assert cols["k"] == {"all": "child", "at": [0, 1], "v": ["step", "group"]}
    assert cols["p"] == {"all": "m", "at": [0, 1], "v": [None, None]}
    assert cols["i"] == [None, None, *range(10)]  # no value shared: a list
    assert _state.encode_column(["x", "y", "y", "y"]) == {"all": "y", "at": [0], "v": ["x"]}
    assert _state.encode_column(["x", "x", "y", "y"]) == ["x", "x", "y", "y"]  # half: a list
    assert _state.encode_column([(), ("a",), ()]) == [(), ("a",), ()]
    sent = json.loads(json.dumps(cols))
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ fromColumns }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify(fromColumns({json.dumps(sent)})))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == from_columns(sent) == entries


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_the_graph_grows_by_the_entries_sent_once(tmp_path: Path) -> None:
    """``grown`` carries the entries of the steps added since the graph had ``at`` of them:
    dag.js appends them where they follow; a view opened later, whose ``graph`` (kept current
    by the kernel) already holds them, does not add them twice."""
    entry = [
        {"id": f"m[{i}]", "k": "child", "p": "m", "d": [], "m": None, "i": i, "mx": 3}
        for i in range(4)
    ]
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    grown = {"at": 2, "add": _state.columns(entry[2:], _state.GRAPH_KEYS)}
    listed = {"at": 2, "add": entry[2:]}  # an older kernel's (or a saved state's): a list
    script = (
        f"import {{ growGraph }} from {json.dumps(module.as_uri())};"
        f"const grown = {json.dumps(grown)};"
        f"console.log(JSON.stringify([growGraph({json.dumps(entry[:2])}, grown),"
        f" growGraph({json.dumps(entry)}, grown), growGraph({json.dumps(entry[:2])}, {{}}),"
        f" growGraph({json.dumps(entry[:2])}, {json.dumps(listed)})]))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [entry, entry, entry[:2], entry]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
async def test_a_saved_snapshot_of_either_form_is_read_as_the_same_state(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The snapshot saves the graph and the node states as columns (a fifth of the JSON at
    20,000 nodes); notebooks saved before hold a list of entries and a dict of states:
    ``renderStatic`` reads both as the same state."""
    from baton_nb.widget._snapshot import _saved

    wf = bn.Workflow("wsaved", db=sqlite_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [1, 2, 3]

    @wf.step(map_over="items")
    async def double(ctx: bn.Context) -> int:
        return 2 * ctx.item

    run = await wf.run(display=False)
    old = _state.stored_state(run)
    new = _saved(old)
    assert "nodes" not in new and set(new["states"]["id"]) == set(old["nodes"])
    # the widget's form: every node's row in the graph's order, no ids (the graph's read)
    order = [entry["id"] for entry in old["graph"]]
    rows = {"graph": old["graph"], "rows": _state.node_rows(run), "header": old["header"]}
    newest = _saved({**rows, "rows": {name: rows["rows"][name] for name in order}})
    assert "id" not in newest["states"]
    shuffled = _saved({**rows, "rows": dict(reversed(rows["rows"].items()))})
    assert shuffled["states"]["id"] == order[::-1]  # not the graph's order: ids kept
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ savedState }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify([savedState({json.dumps(old)}),"
        f" savedState({json.dumps(new)}), savedState({json.dumps(newest)}),"
        f" savedState({json.dumps(shuffled)})]))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    from_old, *others = json.loads(out.stdout)
    assert from_old == json.loads(json.dumps(old))
    for from_new in others:
        assert from_new["graph"] == from_old["graph"] and from_new["header"] == from_old["header"]
        nodes = {name: shown_as(node) for name, node in from_new["nodes"].items()}
        assert nodes == from_old["nodes"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_a_view_opened_after_the_map_grew_draws_every_node(tmp_path: Path) -> None:
    """The page's model gets ``grown`` and ``changed`` before any view exists (a widget
    displayed after its run grew, an output drawn late): dag.js follows them from the
    model's creation (``initialize``), so the view opened later draws the kernel's whole
    graph and every node's state, not the first send plus the last change."""
    import copy

    run = bn.Run(f"late-{uuid.uuid4().hex[:6]}", "late")
    run.status = "running"
    run.add_step(StepInfo(name="root", job_id=0, state="completed", attempt=1))
    run.add_step(StepInfo(name="m", job_id=1, kind=NodeKind.GROUP, unstored=9))
    w = DagWidget(run)
    names = ("graph", "grown", "nodes", "changed")
    opened = {k: copy.deepcopy(getattr(w, k)) for k in names}  # the state the page opens with
    updates: list[dict[str, Any]] = []
    w.observe(lambda ch: updates.append({ch["name"]: copy.deepcopy(ch["new"])}), names=names)
    job = 2
    for chunk in range(3):
        for i in range(3):
            name = f"m[{chunk * 3 + i}]"
            run.add_step(StepInfo(name=name, job_id=job, kind=NodeKind.CHILD, parent="m"))
            job += 1
        run.steps[f"m[{chunk * 3}]"].state = "executing"
        run.steps[f"m[{chunk * 3}]"].attempt = 1
        run.step_changed(f"m[{chunk * 3}]")  # what the runtime does at each change
        w._redraw()
    module = tmp_path / "dag.mjs"
    source = (ROOT / "baton_nb" / "widget" / "dag.js").read_text()
    module.write_text(source + "\nexport { modelGraph, nodeStates };\n")
    script = f"""
import {{ initialize, modelGraph, nodeStates }} from {json.dumps(module.as_uri())};
class Model {{
  constructor(s) {{ this.s = s; this.h = {{}}; }}
  get(k) {{ return this.s[k]; }}
  on(ev, f) {{ (this.h[ev] ||= []).push(f); }}
  set(d) {{
    Object.assign(this.s, d);
    for (const k in d) for (const f of this.h["change:" + k] || []) f();
  }}
}}
const model = new Model({json.dumps(opened)});
initialize({{ model }});
for (const u of {json.dumps(updates)}) model.set(u);
const states = nodeStates(model);
console.log(JSON.stringify({{
  graph: modelGraph(model).map((g) => g.id),
  moving: Object.keys(states).filter((id) => states[id].s === "executing").sort(),
}}));
"""
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["graph"] == w.graph["id"] and len(seen["graph"]) == 11
    assert seen["moving"] == ["m[0]", "m[3]", "m[6]"]
    # At the end the page's graph and nodes are sent whole (kept current in place in the
    # kernel, so sent by name): a saved widget state holds every node.
    sent: list[Any] = []
    send_state = w.send_state
    w.send_state = lambda key=None: (sent.append(key), send_state(key))[1]  # type: ignore[method-assign]
    w.finish()
    assert ["graph", "nodes"] in sent


# ── cancel ────────────────────────────────────────────────────────────────────


async def test_cancel_message_cancels_the_run_and_it_resumes(
    shown: list[DagWidget], db_url: str, unique: str
) -> None:
    wf = bn.Workflow(f"wcancel-{unique}", db=db_url)
    slow_for = {"seconds": 30.0}

    @wf.step()
    async def quick(ctx: bn.Context) -> str:
        return "q"

    @wf.step()
    async def slow(ctx: bn.Context, quick: str) -> str:
        await anyio.sleep(slow_for["seconds"])
        return quick + "s"

    @wf.step()
    async def after(ctx: bn.Context, slow: str) -> str:
        return slow + "a"

    runs: list[bn.Run] = []

    async def go() -> None:
        runs.append(await wf.run(display=True))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            while not (shown and shown[0].state().get("slow", {}).get("s") == "executing"):
                await anyio.sleep(0.01)
            widget = shown[0]
            assert widget.header["cancellable"] is True
            widget._on_msg(widget, {"type": "cancel"}, [])
            assert widget.header["cancelling"] is True  # acknowledged at once
    [run] = runs
    assert run.status == "cancelled"
    state = widget.state()
    assert state["quick"]["s"] == "completed"
    assert state["slow"]["s"] == "cancelled" and state["after"]["s"] != "completed"
    assert widget.header["status"] == "cancelled" and widget.header["cancellable"] is False
    widget.cancel()  # after the end: nothing happens
    assert (await bn.Run.load(run.id, db=db_url)).status == "cancelled"

    slow_for["seconds"] = 0.0
    resumed = await wf.run(run_id=run.id, display=False)
    assert resumed.status == "completed"
    assert resumed.results == {"quick": "q", "slow": "qs", "after": "qsa"}


async def test_a_run_taken_over_shows_who_took_it_not_cancelled(
    shown: list[DagWidget], db_url: str, unique: str
) -> None:
    """The run's lease taken by another owner mid-step (docs/workers.md "Failures"): the
    widget shown by ``wf.run()`` ends ``taken_over`` by that owner (the header's ``by``),
    no Cancel button, no step drawn cancelled; its saved snapshot and static view say so
    too, as do ``baton-nb show``'s renderer and the run's repr."""
    from baton_nb.cli._show import render_run
    from tests.integration._takeover import taken_over_run

    run = await taken_over_run(db_url, f"wtaken-{unique}", "host-b:77:c0ffee00", display=True)
    [widget] = shown
    header = widget.header
    assert (header["status"], header["by"]) == ("taken_over", "host-b:77:c0ffee00")
    assert header["cancellable"] is False
    state = widget.state()
    assert state["a"]["s"] != "cancelled" and state["b"]["s"] == "pending"
    bundle = snapshot_bundle(run, widget._snapshot_state())
    assert '"status":"taken_over","by":"host-b:77:c0ffee00"' in bundle["text/html"]
    title = f"run <code>{run.id}</code>: <b>taken over by host-b:77:c0ffee00</b>"
    assert title in bundle["text/html"]
    assert "Cancelled" not in bundle["text/html"]  # the static view's cancelled steps line
    assert "taken over by host-b:77:c0ffee00" in bundle["text/plain"]
    assert render_run(run).startswith(
        f"run {run.id}  workflow {run.workflow!r}  taken over by host-b:77:c0ffee00\n"
    )
    # The stored run is the new owner's, running: read back it says so, nothing cancelled.
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.status == "running" and stored.taken_over_by is None
    assert {s.state for s in stored.steps.values()} == {"executing", "pending"}


async def test_widget_by_id_of_a_run_of_this_process_cancels_it(db_url: str, unique: str) -> None:
    """``bn.DagWidget(run_id)`` in the process that executes the run binds the live Run:
    its Cancel shows and cancels (before, it watched the database and could not)."""
    wf = bn.Workflow(f"wbyid-{unique}", db=db_url)
    executing = anyio.Event()

    @wf.step()
    async def slow(ctx: bn.Context) -> str:
        executing.set()
        await anyio.sleep(30)
        return "s"

    runs: list[bn.Run] = []

    async def go() -> None:
        runs.append(await wf.run(display=False))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await executing.wait()
            assert wf.last_run is not None and wf.last_run.status == "running"
            widget = DagWidget(wf.last_run.id, db=db_url)
            assert widget.run is wf.last_run
            assert widget.header["cancellable"] is True and widget.header["source"] == "live"
            widget._on_msg(widget, {"type": "cancel"}, [])
    [run] = runs
    assert run.status == "cancelled" and run is wf.last_run
    assert widget.header["status"] == "cancelled" and widget.header["cancellable"] is False
    assert (await bn.Run.load(run.id, db=db_url)).status == "cancelled"


# ── watching runs by id ───────────────────────────────────────────────────────


async def test_widget_by_id_of_a_finished_run_in_a_loop(db_url: str, unique: str) -> None:
    wf = fanout_workflow(f"wfin-{unique}", db_url)
    run = await wf.run(display=False)
    widget = DagWidget(run.id, db=db_url)
    assert widget.header["status"] == "loading" and widget.run is None
    assert "loading" in repr(widget)
    with anyio.fail_after(10):
        shown_run = await widget.wait()
    assert shown_run.status == "completed" and shown_run.cost == run.cost
    assert widget.header["status"] == "completed" and widget.header["source"] == "watch"
    assert widget.header["cost"] == str(run.cost) and widget.header["cancellable"] is False
    assert widget.state() == _state.node_states(await bn.Run.load(run.id, db=db_url))
    widget.cancel()  # a watched run is not cancelled from here
    assert (await bn.Run.load(run.id, db=db_url)).status == "completed"

    async with bn.watch(run.id, db=db_url) as live:
        updates = [u async for u in live]
    assert [type(u) for u in updates] == [bn.WorkflowFinished]
    assert updates[0].outcome == "completed" and live.run.cost == run.cost


def test_widget_by_id_outside_a_loop_shows_the_stored_snapshot(db_url: str, unique: str) -> None:
    wf = fanout_workflow(f"wsync-{unique}", db_url)
    run = anyio.run(lambda: wf.run(display=False))
    widget = DagWidget(run.id, db=db_url)
    assert widget.run is not None and widget.run.status == "completed"
    assert widget.header["status"] == "completed" and widget.header["source"] == "stored"
    assert widget.header["cost"] == str(run.cost)
    assert all(n["s"] == "completed" for n in widget.state().values())
    assert done_total(widget) == (4, 4)
    assert run.id in repr(widget) and "completed" in repr(widget)
    with pytest.raises(bn.RunNotFound):
        DagWidget("no-such-run", db=db_url)


async def test_widget_by_id_of_an_unknown_run_reports_the_error(sqlite_url: str) -> None:
    widget = DagWidget("no-such-run", db=sqlite_url)
    with anyio.fail_after(10), pytest.raises(bn.RunNotFound):
        await widget.wait()
    assert widget.header["status"] == "error" and "RunNotFound" in widget.header["error"]


SUBPROCESS_RUN = textwrap.dedent(
    """
    import sys

    import anyio

    import baton_nb as bn

    db, run_id, name = sys.argv[1:4]
    wf = bn.Workflow(name, db=db)


    async def work(ctx):
        await anyio.sleep(0.25)
        return ctx.step


    async def d(ctx):
        await anyio.sleep(0.25)
        return (await ctx.complete(model="mock/gpt-4o-mini", prompt="sum up")).text


    wf.add("a", work)
    wf.add("b", work, deps=["a"])
    wf.add("c", work, deps=["a"])
    wf.add("d", d, deps=["b", "c"])
    run = anyio.run(lambda: wf.run(run_id=run_id, display=False))
    print(run.status, flush=True)
    """
)


@pytest.mark.slow  # a real subprocess
async def test_watching_a_run_of_another_process(db_url: str, unique: str, tmp_path: Path) -> None:
    script = tmp_path / "child_run.py"
    script.write_text(SUBPROCESS_RUN, encoding="utf-8")
    run_id = f"sub-{unique}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url, run_id, f"wsub-{unique}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with anyio.fail_after(20):
            while True:  # the child writes the run row when it starts
                try:
                    await bn.Run.load(run_id, db=db_url)
                    break
                except bn.RunNotFound:
                    assert proc.poll() is None, proc.communicate()
                    await anyio.sleep(0.02)

            widget = DagWidget(run_id, db=db_url, poll_interval=0.05)
            widget_states: dict[str, list[str]] = {}

            def seen(change: dict[str, Any]) -> None:
                new = change["new"]
                shown = from_columns(new) if change["name"] == "changed" else []
                nodes = {n["id"]: n for n in shown} if shown else _as_dicts(new)
                for name, node in nodes.items():
                    states = widget_states.setdefault(name, [])
                    if not states or states[-1] != node["s"]:
                        states.append(node["s"])

            widget.observe(seen, names=["nodes", "changed"])
            async with bn.watch(run_id, db=db_url, poll_interval=0.05) as live:
                first = {name: s.state for name, s in live.run.steps.items()}
                updates = [u async for u in live]
            shown_run = await widget.wait()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "completed"
    assert first["d"] == "pending"  # we watched from (close to) the start

    # Forward-only, no duplicate terminal update, exactly one WorkflowFinished, last.
    finished = [u for u in updates if isinstance(u, bn.WorkflowFinished)]
    assert len(finished) == 1 and updates[-1] is finished[0]
    assert finished[0].outcome == "completed"
    steps: dict[str, list[str]] = {name: [state] for name, state in first.items()}
    for update in updates:
        if isinstance(update, bn.StepUpdated):
            steps.setdefault(update.step_name, []).append(update.state)
    for name, states in steps.items():
        ranks = [rank(s) for s in states]
        assert ranks == sorted(ranks), (name, states)
        assert sum(1 for s in states if s in TERMINAL_STATES) == 1, (name, states)
        assert states[-1] == "completed"
    assert "executing" in steps["d"]  # a live transition was seen, not only the end
    calls = [u for u in updates if isinstance(u, bn.CallFinished)]
    assert [(c.step_name, c.model) for c in calls] == [("d", "mock/gpt-4o-mini")]

    loaded = await bn.Run.load(run_id, db=db_url)
    for view in (live.run, shown_run):
        assert view.status == loaded.status == "completed"
        assert {n: (s.state, s.attempt) for n, s in view.steps.items()} == {
            n: (s.state, s.attempt) for n, s in loaded.steps.items()
        }
        assert view.results == loaded.results
        assert view.cost == loaded.cost > 0
        assert view.tokens == loaded.tokens

    # The widget followed the same run: forward-only too, and it ends equal to the database.
    for name, states in widget_states.items():
        ranks = [rank(s) for s in states]
        assert ranks == sorted(ranks), (name, states)
    assert widget_states["d"][-1] == "completed" and "executing" in widget_states["d"]
    assert widget.header["status"] == "completed"
    # Money as a plain decimal string without the trailing zeros of Postgres NUMERIC(30, 12).
    assert widget.header["cost"] == fmt_money(loaded.cost) and Decimal(widget.header["cost"]) > 0
    assert widget.state() == _state.node_states(loaded)


# ── text progress outside a kernel ────────────────────────────────────────────


async def test_text_progress_line(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = fanout_workflow("wtext", sqlite_url)
    streams: list[io.StringIO] = []

    def progress(run: bn.Run) -> TextProgress:
        streams.append(io.StringIO())
        return TextProgress(run, stream=streams[-1])

    monkeypatch.setattr(widget_pkg, "TextProgress", progress)
    run = await wf.run(display="text")
    [stream] = streams
    final = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert f"[{wf.name}]" in final and "4/4 completed" in final and "100%" in final
    assert f" · ${run.cost} · " in final and final.endswith("completed")
    assert f"{run.tokens.total_tokens} tok" in final
    assert capsys.readouterr().err == ""  # the line went to the given stream only
    monkeypatch.undo()

    # attach(run, "text") writes to stderr; for a finished run it shows its end state.
    handle = widget_pkg.attach(run, "text")
    assert isinstance(handle, TextProgress)
    handle.close()
    handle.close()  # idempotent
    err = capsys.readouterr().err
    assert "4/4 completed" in err and f"${run.cost}" in err and "completed" in err


async def test_text_progress_of_a_failed_run(sqlite_url: str) -> None:
    wf = bn.Workflow("wtextfail", db=sqlite_url)

    @wf.step(max_attempts=1)
    async def boom(ctx: bn.Context) -> None:
        raise RuntimeError("no")

    run = await wf.run(display=False)
    stream = io.StringIO()
    progress = TextProgress(run, stream=stream)
    progress.close()
    line = stream.getvalue().rstrip("\n").split("\r")[-1]
    # x/y counts completed steps; the others are named by their state (DESIGN §3)
    assert "0/1 completed" in line and "1 discarded" in line and line.endswith("failed")


async def test_auto_display_with_non_tty_stderr_prints_nothing(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = fanout_workflow("wquiet", sqlite_url)
    assert not widget_pkg.in_kernel()
    run = await wf.run()  # display=None: no kernel, stderr not a terminal
    assert run.status == "completed"
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


async def test_bad_display_is_refused_before_any_row_is_written(sqlite_url: str) -> None:
    wf = fanout_workflow("wbogus", sqlite_url)
    with pytest.raises(bn.ConfigurationError, match=r"display must be .*got 'bogus'"):
        await wf.run(display="bogus")
    with pytest.raises(bn.ConfigurationError, match="display must be"):
        await wf.run(display=1)  # type: ignore[arg-type]
    assert len(await bn.runs(db=sqlite_url)) == 0
    with pytest.raises(bn.ConfigurationError, match="display must be"):
        widget_pkg.attach(bn.Run("x", "wbogus"), "bogus")


# ── the saved snapshot ────────────────────────────────────────────────────────


async def test_snapshot_has_the_fallback_table_and_escapes_script_tags(sqlite_url: str) -> None:
    wf = bn.Workflow("wsnap", db=sqlite_url)
    evil = "</script><script>alert('x')</script><!-- <b>bold</b>"

    @wf.step()
    async def leak(ctx: bn.Context) -> str:
        return evil

    @wf.step(max_attempts=1)
    async def fails(ctx: bn.Context, leak: str) -> None:
        raise RuntimeError("<img src=x onerror=alert(1)>")

    run = await wf.run(display=False)
    assert run.status == "failed"
    widget = DagWidget(run)
    bundle = snapshot_bundle(run, widget._snapshot_state())
    page = bundle["text/html"]
    assert bundle["text/plain"] == repr(run)
    assert (
        repr(run) == f"<Run {run.id} 'wsnap' failed: 1 completed · 1 discarded of 2 steps, cost $0>"
    )

    # The static view: status line, counts, the failed step with its error, one row per step.
    assert (
        '<div class="bn-fallback tex2jax_ignore mathjax_ignore">' in page
        and "<th>step</th><th>state</th>" in page
    )
    assert "<tr><td><code>leak</code></td><td>completed</td><td>1/3</td>" in page
    assert "<tr><td><code>fails</code></td><td>discarded</td><td>1/1</td>" in page
    assert f"run <code>{run.id}</code>: <b>failed</b>" in page
    assert "<code>fails</code> (attempt 1 of 1): RuntimeError: &lt;img src=x" in page

    # Results and errors are embedded as data, never as markup: the script element ends
    # only at its own closing tag, and no "<!--" can change how the parser reads it.
    fallback = page[: page.index("</table></div>")]
    assert "<script" not in fallback and "<img" not in fallback
    assert page.count("</script>") == 1 and page.rstrip().endswith("</script>")
    assert "<!--" not in page
    assert r"<\/script><script>alert('x')<\/script><\!-- <b>bold<\/b>" in page


# ── a Run as a cell's result ──────────────────────────────────────────────────


async def test_a_run_shown_as_a_cells_result(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` as the last expression of a cell: the widget with the static view beside it
    in one bundle while the run goes (front ends without widgets show the static view),
    the saved snapshot once it finished; no widget (no comm) for a finished run."""
    import IPython.display

    shown: list[dict[str, Any]] = []

    class Handle:
        def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
            shown.append(bundle)

    def display(obj: Any, raw: bool = False, display_id: Any = None) -> Handle:
        assert raw
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(widget_pkg, "in_kernel", lambda: True)
    built: list[Any] = []
    monkeypatch.setattr(DagWidget, "__init__", _recording_init(DagWidget.__init__, built))

    wf = fanout_workflow("wshow", sqlite_url)
    run = await wf.run(display=False)
    run._ipython_display_()
    [finished] = shown
    assert WIDGET_MIME not in finished and not built
    assert "bn-snapshot" in finished["text/html"] and finished["text/plain"] == repr(run)
    assert run._repr_html_() in finished["text/html"]  # the static view, also _repr_html_

    live = bn.Run(f"live-{uuid.uuid4().hex}", "wshow")
    live.status = "running"
    live.steps["a"] = StepInfo(name="a", job_id=1, state="executing", attempt=1)
    shown.clear()
    live._ipython_display_()
    [bundle] = shown
    assert set(bundle) == {"text/plain", "text/html", WIDGET_MIME} and len(built) == 1
    assert bundle[WIDGET_MIME]["model_id"] == built[0].model_id
    assert (
        bundle["text/html"].startswith('<div class="bn-fallback tex2jax_ignore mathjax_ignore">')
        and live.id in bundle["text/html"]
    )
    assert "1 executing of 1 step" in bundle["text/html"]
    built[0].close()

    monkeypatch.setattr(widget_pkg, "in_kernel", lambda: False)
    shown.clear()
    run._ipython_display_()
    assert shown == [{"text/plain": repr(run)}]


def _recording_init(init: Any, built: list[Any]) -> Any:
    def recording(self: DagWidget, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        built.append(self)

    return recording


def _cached_workflow(db: str, prompts: tuple[str, ...]) -> bn.Workflow:
    wf = bn.Workflow("cachedpanel", db=db, cache=True)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        texts = [
            (await ctx.complete(prompt=p, model="mock/gpt-4o-mini", max_tokens=20)).text
            for p in prompts
        ]
        return " ".join(str(t) for t in texts)

    return wf


def test_a_steps_cache_hits_are_counted_apart_from_its_paid_calls(tmp_path: Path) -> None:
    """Calls answered from the response cache are in a step's ``n`` but sent apart (``ch``),
    with no tokens: the panel's paid calls and tokens are the report's, live and in the
    saved snapshot alike."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    anyio.run(lambda: _cached_workflow(db, ("x", "y")).run(display=False))
    again = anyio.run(lambda: _cached_workflow(db, ("x", "y", "z")).run(display=False))
    totals = again.report().by_step()["ask"]
    assert (totals.calls, totals.cached_calls) == (1, 2)
    step = again.steps["ask"]
    assert (step.calls, step.cached_calls, step.replayed_calls) == (3, 2, 0)
    state = _state.node_state(step)
    # dag.js: LLM calls = n - rp - ch, "+ 2 from the cache"; tokens ti + to
    assert state["n"] - state["rp"] - state["ch"] == totals.calls
    assert state["ti"] + state["to"] == totals.usage.total_tokens
    assert state["c"] == fmt_money(totals.known_cost)
    assert _state.row_dict(_state.node_row(step)) == state
    # the saved snapshot carries the same state (its nodes as columns, ``ch`` optional)
    w = DagWidget(again)
    snap = w._snapshot_state()
    assert _state.row_dict(snap["rows"]["ask"]) == state
    bundle = snapshot_bundle(again, snap)
    assert '"ch":{"all":2}' in bundle["text/html"].replace(" ", "")
    detail = _state.detail(again, "ask")
    assert [c["ch"] for c in detail["calls"]] == [True, True, False]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_the_gone_line_is_for_a_run_still_going(tmp_path: Path) -> None:
    """After a kernel restart, a view of a run still going says so; a finished run's view
    is whole and says nothing (every finished widget of the notebook said it)."""
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ goneLine, GONE_TEXT }} from {json.dumps(module.as_uri())};"
        "console.log(JSON.stringify(['running', 'pending', 'completed', 'cancelled']"
        ".map((s) => [goneLine(true, {status: s}).includes(GONE_TEXT),"
        " goneLine(false, {status: s})])))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [[True, ""], [True, ""], [False, ""], [False, ""]]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_costs_on_cards_round_half_up_on_the_exact_decimal(tmp_path: Path) -> None:
    """dag.js ``fmtCost``: the kernel sends money as exact decimal strings; a card showing
    three significant digits rounds them half up on the digits (``0.0001425`` read
    ``$0.000142``: the float below it, rounded by ``toFixed``); carries run through."""
    values = ["0.0001425", "0.0001424999", "0.000211625", "0.0999995", "9.995", "199.5", "0"]
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ fmtCost }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify({json.dumps(values)}.map(fmtCost)))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [
        "$0.000143", "$0.000142", "$0.000212", "$0.1000", "$10.00", "$200", "$0",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run dag.js")
def test_the_headers_budget_line_says_what_batches_cost_apart(tmp_path: Path) -> None:
    """dag.js ``spendLine``: with ``bt`` (what the run's provider batches cost, not held
    to the budget) the line says it apart, as ``SpendState.text()`` does; without, as
    before."""
    spends = [
        {"spend": {"b": "1", "s": "0", "r": "0", "why": None, "bt": "0.000211625"}},
        {"spend": {"b": "1", "s": "0.5", "r": "0", "why": None}},
    ]
    module = tmp_path / "dag.mjs"
    module.write_text((ROOT / "baton_nb" / "widget" / "dag.js").read_text())
    script = (
        f"import {{ spendLine }} from {json.dumps(module.as_uri())};"
        f"console.log(JSON.stringify({json.dumps(spends)}.map(spendLine)))"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    batched, plain = json.loads(out.stdout)
    assert (
        "<b>budget</b> $0 of $1.00 spent by calls held to the budget; $0.000212 in provider "
        "batches, not held to it</div>"
    ) in batched
    assert "<b>budget</b> $0.5000 spent of $1.00</div>" in plain
