"""The widget's JSON projections of a ``Run`` (pure functions, no database, no loop)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import baton_nb as bn
from baton_nb._run import CallRecord, StepInfo
from baton_nb.widget import _state
from baton_nb.widget._snapshot import fallback_html

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = datetime(2025, 1, 1, 12, 0, 2, 500_000, tzinfo=timezone.utc)


def small_run() -> bn.Run:
    run = bn.Run("r1", "wf")
    run.status = "running"
    run.created_at = T0
    run.steps["ask"] = StepInfo(name="ask", job_id=1, kind="group")
    run.steps["ask[mock/a]"] = StepInfo(
        name="ask[mock/a]", job_id=2, kind="child", parent="ask", model="mock/a", max_attempts=3
    )
    run.steps["sum"] = StepInfo(name="sum", job_id=3, deps=["ask"], state="pending")
    child = run.steps["ask[mock/a]"]
    child.state, child.attempt, child.started_at, child.finished_at = "completed", 1, T0, T1
    call = CallRecord(
        run_id="r1",
        step="ask[mock/a]",
        model="mock/a",
        provider="mock",
        attempt=1,
        call_index=0,
        usage=bn.Usage(input_tokens=10, output_tokens=5),
        cost=Decimal("0.00012"),
        latency_ms=12.34,
        replayed=False,
        estimated=False,
        created_at=T1,
    )
    run.calls.append(call)
    child.add_call(call)
    return run


def test_graph_lists_every_node_in_run_order() -> None:
    graph = _state.graph(small_run())
    assert [g["id"] for g in graph] == ["ask", "ask[mock/a]", "sum"]
    assert graph[1] == {
        "id": "ask[mock/a]",
        "k": "child",
        "p": "ask",
        "d": [],
        "m": "mock/a",
        "i": None,
        "mx": 3,
    }
    assert graph[2]["d"] == ["ask"]


def test_node_state_carries_tokens_cost_and_times() -> None:
    run = small_run()
    node = _state.node_state(run.steps["ask[mock/a]"])
    assert node["s"] == "completed" and node["a"] == 1
    assert (node["ti"], node["to"], node["n"], node["u"]) == (10, 5, 1, 0)
    assert node["c"] == "0.00012"  # a plain decimal string, no float
    assert node["t1"] - node["t0"] == 2.5
    assert node["l"] == 12.3
    pending = _state.node_state(run.steps["sum"])
    assert pending["c"] is None and pending["t0"] is None and pending["n"] == 0


def test_long_errors_are_cut_for_the_node_but_whole_in_the_detail() -> None:
    run = small_run()
    step = run.steps["sum"]
    step.state, step.error = "discarded", "x" * 1000
    node = _state.node_state(step)
    assert len(node["e"]) == _state.ERROR_PREVIEW and node["e"].endswith("…")
    assert _state.detail(run, "sum")["error"] == "x" * 1000


def test_node_states_of_some_names_skip_unknown_ones() -> None:
    states = _state.node_states(small_run(), ["sum", "gone"])
    assert list(states) == ["sum"]


def test_header_totals() -> None:
    run = small_run()
    head = _state.header(run, cancellable=True, cancelling=False, source="live")
    assert head["cost"] == "0.00012" and (head["ti"], head["to"]) == (10, 5)
    assert head["status"] == "running" and head["t1"] is None
    assert head["cancellable"] is True and head["cancelling"] is False
    run.status, run.finished_at = "completed", T1
    run.cancel_requested = True
    head = _state.header(run, cancellable=True, cancelling=False, source="live")
    assert head["cancellable"] is False and head["cancelling"] is True
    assert head["t1"] == round(T1.timestamp(), 3)


def test_detail_of_a_node() -> None:
    run = small_run()
    run.results["ask[mock/a]"] = {"text": "hi"}
    item = _state.detail(run, "ask[mock/a]")
    assert item["result"] == '{\n  "text": "hi"\n}'
    assert item["calls"] == [
        {
            "m": "mock/a",
            "a": 1,
            "ti": 10,
            "to": 5,
            "c": "0.00012",
            "l": 12.3,
            "rp": False,
            "est": False,
        }
    ]
    assert _state.detail(run, "sum")["result"] is None
    assert _state.detail(run, "nope") == {"id": "nope", "missing": True}


def test_fallback_table_escapes_names_and_states() -> None:
    state = {
        "graph": [{"id": "<b>x</b>"}],
        "nodes": {"<b>x</b>": {"s": "completed", "a": 1, "ti": 3, "to": 4, "c": "0.5"}},
        "header": {"wf": "<i>wf</i>", "id": "r1", "status": "completed", "cost": "0.5"},
    }
    page = fallback_html(state)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;i&gt;wf&lt;/i&gt;" in page
    assert "<td>completed</td><td>1</td><td>7</td><td>$0.5</td>" in page
