"""The widget's JSON projections of a ``Run`` (pure functions, no database, no loop)."""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

import baton_nb as bn
from baton_nb._counts import count_steps
from baton_nb._run import CallRecord, StepInfo
from baton_nb._states import NodeKind, State
from baton_nb.store import LogRow
from baton_nb.widget import _state
from baton_nb.widget._snapshot import (
    CHUNK,
    _details,
    details,
    in_detail_order,
    snapshot_bundle,
)
from baton_nb.widget._static import MAX_ROWS, static_html
from tests.widget_view import read_column

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
        "d": (),  # a JSON array
        "m": "mock/a",
        "i": None,
        "mx": 3,
    }
    assert list(graph[2]["d"]) == ["ask"]
    # plain values only: the garbage collector does not track a child's entry or its state
    run = small_run()
    run.steps["ask[mock/a]"].state = State.COMPLETED
    assert not gc.is_tracked(graph[1])
    assert not gc.is_tracked(_state.node_state(run.steps["ask[mock/a]"]))


def test_node_state_carries_tokens_cost_and_times() -> None:
    run = small_run()
    node = _state.node_state(run.steps["ask[mock/a]"])
    assert node["s"] == "completed" and node["a"] == 1
    assert (node["ti"], node["to"], node["n"], node["u"]) == (10, 5, 1, 0)
    assert node["c"] == "0.00012"  # a plain decimal string, no float
    assert node["t1"] - node["t0"] == 2500  # ms, ints: cheaper to encode than floats
    assert isinstance(node["t0"], int) and "l" not in node  # latency: per call (detail)
    pending = _state.node_state(run.steps["sum"])
    assert pending["c"] is None and pending["t0"] is None and pending["n"] == 0


def test_node_times_are_whole_milliseconds_since_the_epoch() -> None:
    """Integer arithmetic, not ``timestamp()``: the same milliseconds, floored exactly; an
    aware time in another zone and a naive one (read as local, as ``timestamp`` does) too."""
    east = timezone(timedelta(hours=5, minutes=30))
    times = [
        T0,
        T1,
        datetime(2026, 12, 6, 21, 40, 1, 999_999, tzinfo=timezone.utc),
        datetime(2026, 12, 6, 21, 40, 1, 999, tzinfo=east),
        datetime(1970, 1, 1, 0, 0, 0, 1_000, tzinfo=timezone.utc),
    ]
    step = StepInfo(name="s", job_id=1, state=State.COMPLETED)
    for at in times:
        exact = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
        step.started_at = step.finished_at = at
        node = _state.node_state(step)
        assert node["t0"] == node["t1"] == exact == _state._ms(at) == int(at.timestamp() * 1000)
    naive = datetime(2026, 12, 6, 21, 40, 1, 250_000)
    step.started_at, step.finished_at = naive, None
    node = _state.node_state(step)
    assert node["t0"] == _state._ms(naive) == int(naive.timestamp() * 1000) and node["t1"] is None


def test_long_errors_are_cut_for_the_node_but_whole_in_the_detail() -> None:
    run = small_run()
    step = run.steps["sum"]
    step.state, step.error = "discarded", "x" * 1000
    node = _state.node_state(step)
    assert len(node["e"]) == _state.ERROR_PREVIEW and node["e"].endswith("…")
    assert _state.detail(run, "sum")["error"] == "x" * 1000


def test_a_nodes_row_is_its_state_as_a_tuple() -> None:
    """``node_row`` (what the widget keeps per node) read as a dict is ``node_state``; the
    optional fields only when not 0, in a row always (0 when none)."""
    run = small_run()
    run.steps["sum"].unstored = 3
    rows, states = _state.node_rows(run), _state.node_states(run)
    assert list(rows) == list(states) == list(run.steps)
    assert {name: _state.row_dict(row) for name, row in rows.items()} == states
    assert states["sum"]["x"] == 3 and "ch" not in states["sum"]
    assert rows["ask[mock/a]"][len(_state.NODE_KEYS) :] == (0, 0)
    assert _state.row_dict(_state.PENDING_ROW) == _state.PENDING
    assert len(_state.PENDING_ROW) == len(_state.ROW_KEYS)


def test_rows_as_columns_read_back_as_the_rows() -> None:
    """``row_columns``: a list per field, ``{"all": v}`` when every row has that one, or
    ``{"all": v, "at": [...], "v": [...]}`` when all but a few do."""
    run = small_run()
    rows = _state.node_rows(run)
    cols = _state.row_columns(list(rows.values()), list(rows))
    assert cols["id"] == list(rows)
    for i, key in enumerate(_state.ROW_KEYS):
        column = cols[key]
        values = read_column(column, len(rows))
        assert values == [row[i] for row in rows.values()], key
    assert cols["x"] == {"all": 0}
    assert _state.row_columns([], []) == {"id": [], **{k: [] for k in _state.ROW_KEYS}}


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
            "ch": False,
            "est": False,
            "na": False,
        }
    ]
    assert _state.detail(run, "sum")["result"] is None
    assert _state.detail(run, "nope") == {"id": "nope", "missing": True}


def test_an_attempt_with_no_answer_is_a_labelled_charge_not_a_call() -> None:
    """A budget's worst-case charge for attempts with no answer: in the step's cost, no
    call of its own; its row in the call list says what it is."""
    run = small_run()
    lost = CallRecord.unanswered(
        "r1", "ask[mock/a]", 1, 0, "mock/a", "mock", Decimal("0.5"), T1
    )  # fmt: skip
    run.calls.append(lost)
    child = run.steps["ask[mock/a]"]
    child.add_call(lost)
    assert child.calls == 1 and child.cost == Decimal("0.50012")
    assert child.latency_ms == pytest.approx(12.34)
    item = _state.detail(run, "ask[mock/a]")
    assert [c["na"] for c in item["calls"]] == [False, True]


def _call(step: str, model: str, cost: str | None, tokens: int = 10) -> CallRecord:
    return CallRecord(
        run_id="r1",
        step=step,
        model=model,
        provider="mock",
        attempt=1,
        call_index=0,
        usage=bn.Usage(input_tokens=tokens, output_tokens=tokens),
        cost=None if cost is None else Decimal(cost),
        latency_ms=5.0,
        replayed=False,
        estimated=False,
        created_at=T1,
    )


def _add(run: bn.Run, name: str, **fields: object) -> StepInfo:
    step = StepInfo(name=name, job_id=len(run.steps) + 1, **fields)  # type: ignore[arg-type]
    run.steps[name] = step
    if step.parent is not None:
        run.steps[step.parent].children.append(name)
    return step


def failed_run() -> bn.Run:
    """A map of 1,000 items (3 discarded, 20 cancelled), a failed step and its cascade."""
    run = bn.Run("0123456789abcdef0123456789abcdef", "<i>wf</i>")
    run.status, run.created_at, run.started_at, run.finished_at = "failed", T0, T0, T1
    _add(run, "items", state="completed", attempt=1)
    _add(run, "work", kind="group", state="discarded", deps=["items"])
    for i in range(1000):
        state = "discarded" if i in (17, 512, 901) else "cancelled" if i >= 980 else "completed"
        child = _add(run, f"work[{i}]", kind="child", parent="work", state=state, item_index=i)
        child.attempt = 1
        if state == "discarded":
            child.error = f"RuntimeError: item {i}: <schema> mismatch"
        if state == "completed":
            call = _call(child.name, "mock/gpt-4o-mini", "0.00001")
            run.calls.append(call)
            child.add_call(call)
    _add(run, "<b>check</b>", state="discarded", attempt=3, max_attempts=3, error="ValueError: no")
    _add(run, "tally", state="cancelled", deps=["work"], error="dependency 'work' was discarded")
    call = _call("<b>check</b>", "mock/unknown-model", None)
    run.calls.append(call)
    run.steps["<b>check</b>"].add_call(call)
    return run


def test_counts_use_the_state_words_and_leave_groups_out() -> None:
    counts = count_steps(failed_run().steps.values())
    assert counts.total == 1003 and counts.completed == 978  # "work" is a group: not counted
    assert counts.text() == "978 completed · 4 discarded · 21 cancelled of 1,003 steps"
    assert counts.others() == "4 discarded · 21 cancelled"


def test_static_view_is_compact_and_says_what_failed_and_what_it_cost() -> None:
    run = failed_run()
    page = static_html(run)
    # escaped throughout
    assert "<b>check</b>" not in page and "&lt;b&gt;check&lt;/b&gt;" in page
    assert "<i>wf</i>" not in page and "&lt;schema&gt;" in page
    # the full run id, the counts per state, the cost with its unknown part named
    assert run.id in page and "978 completed · 4 discarded · 21 cancelled" in page
    assert "+ 1 call of unknown price" in page and "$0 " not in page
    # failed steps with their errors, cancelled ones named
    assert "RuntimeError: item 512: &lt;schema&gt; mismatch" in page
    assert "(attempt 3 of 3): ValueError: no" in page
    assert "<b>Cancelled</b>: <code>work[980]</code>" in page and "and 11 more" in page
    # the map is one row: its children counted and their tokens and cost summed
    row = page[page.index("<tr><td><code>work</code>") :].split("</tr>")[0]
    assert "977 completed · 3 discarded · 20 cancelled of 1,000 steps" in row
    assert f"{977 * 20:,}" in row and "$0.00977" in row
    # cost per model; bounded: not one row per item
    assert "<code>mock/gpt-4o-mini</code>" in page and "<code>mock/unknown-model</code>" in page
    assert page.count("<tr>") < 12 and len(page) < 5_000


def test_static_view_of_a_thousand_steps_lists_at_most_max_rows() -> None:
    run = bn.Run("r2", "wide")
    run.status = "completed"
    for i in range(1000):
        _add(run, f"s{i:03d}", state="completed", attempt=1)
    page = static_html(run)
    assert page.count("<tr>") == MAX_ROWS + 1  # + the header row
    assert f"… {1000 - MAX_ROWS:,} more: {1000 - MAX_ROWS:,} completed of" in page


def test_unknown_price_is_never_a_zero_cost() -> None:
    run = failed_run()
    assert run.cost is None and run.unpriced_calls == 1
    assert run.known_cost == Decimal("0.00977")
    assert run.cost_text() == "$0.00977 + 1 call of unknown price"
    assert "cost $0.00977 + 1 call of unknown price>" in repr(run)
    only_unpriced = bn.Run("r3", "wf")
    only_unpriced.calls.append(_call("a", "mock/unknown-model", None))
    assert only_unpriced.cost is None and only_unpriced.cost_text().startswith("unknown")
    head = _state.header(run, cancellable=False, cancelling=False, source="stored")
    assert (head["cost"], head["unpriced"]) == ("0.00977", 1)  # the view says "+ ?"


def test_repr_and_snapshot_text_show_the_full_id_and_what_counts_mean() -> None:
    run = failed_run()
    text = repr(run)
    assert text.startswith(f"<Run {run.id} '<i>wf</i>' failed: 978 completed · 4 discarded")
    bundle = snapshot_bundle(run, _state.stored_state(run))
    assert bundle["text/plain"] == text
    assert run.id in bundle["text/html"]


def test_snapshot_details_keep_the_captured_request() -> None:
    """The runtime stores a log's data as JSON text: the snapshot decoded it too late and
    its request box came out empty (the live panel had it)."""
    run = small_run()
    request = {"messages": [{"role": "user", "content": "Explain <tides>"}], "params": {}}
    run.add_log(LogRow(run.id, "ask[mock/a]", 1, "request", "", json.dumps(request), T1))
    saved = details(run)["ask[mock/a]"]["context"]
    live = _state.detail(run, "ask[mock/a]")["context"]
    assert saved == live == [{"k": "request", "a": 1, "t": "[user] Explain <tides>"}]


def test_snapshot_details_list_each_steps_calls_in_order() -> None:
    """The snapshot groups the calls by step once (a list only for a step with more than one):
    each node's calls as the live panel lists them, in the run's order; none for a step
    without calls."""
    run = small_run()
    (first,) = run.calls
    for i in (1, 2):  # the same step again, then another step between them
        run.calls.append(replace(first, call_index=i, latency_ms=float(i)))
        run.calls.append(replace(first, step="sum", call_index=i, latency_ms=10.0 + i))
    saved = details(run)
    for name in run.steps:
        assert saved[name]["calls"] == _state.detail(run, name)["calls"]
    assert [c["l"] for c in saved["ask[mock/a]"]["calls"]] == [12.3, 1.0, 2.0]
    assert [c["l"] for c in saved["sum"]["calls"]] == [11.0, 12.0]
    assert saved["ask"]["calls"] == []


@pytest.mark.parametrize("budget", [2, 500, 40_000, 10**9])
def test_snapshot_details_are_the_first_nodes_that_fit_in_the_budget(budget: int) -> None:
    """The details are encoded a chunk of nodes at a time: the same JSON as node by node,
    the nodes in the run's order while the JSON fits in the budget, none cut in two."""
    run = small_run()
    for i in range(CHUNK * 2 + 7):  # more than two chunks, the last one partial
        name = f"ask[{i}]"
        run.add_step(StepInfo(name=name, job_id=10 + i, kind="child", parent="ask"))
        run.set_result(name, "x" * (i % 50))
    kept, text = _details(run, budget)
    names = in_detail_order(run)
    assert list(kept) == names[: len(kept)]  # a prefix, in order
    assert json.loads(text) == kept and len(text) <= budget
    whole = {name: _state.detail(run, name) for name in names}
    assert kept == {name: whole[name] for name in kept}
    if len(kept) < len(names):  # the next node would not have fitted
        one_more = {**kept, names[len(kept)]: whole[names[len(kept)]]}
        assert len(json.dumps(one_more, ensure_ascii=False, separators=(",", ":"))) > budget
    else:
        assert budget == 10**9
    assert budget < 40_000 or len(kept) > CHUNK  # whole chunks, and part of the next


def test_snapshot_details_keep_the_named_steps_then_the_failures_first() -> None:
    """With more nodes than fit, a snapshot keeps the details a reader opens: the run's own
    steps, then the children that failed, then the other children in the run's order."""
    run = bn.Run("r-order", "order")
    run.add_step(StepInfo(name="items", job_id=0, state="completed"))
    run.add_step(StepInfo(name="each", job_id=1, kind=NodeKind.GROUP, state="completed"))
    for i in range(6):
        state = "discarded" if i in (2, 4) else "completed"
        child = StepInfo(name=f"each[{i}]", job_id=2 + i, kind=NodeKind.CHILD, parent="each")
        child.state = State(state)
        run.add_step(child)
    run.add_step(StepInfo(name="join", job_id=9, deps=["each"], state="completed"))
    order = in_detail_order(run)
    assert order == [
        "items", "each", "join", "each[2]", "each[4]", "each[0]", "each[1]", "each[3]", "each[5]"
    ]  # fmt: skip
    one = len(_snapshot_json({n: _state.detail(run, n) for n in order[:5]}))
    assert list(_details(run, one)[0]) == order[:5]


def _snapshot_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_detail_lists_the_attempts_of_a_retried_step() -> None:
    from baton_nb.store import AttemptRow

    run = small_run()
    run.steps["sum"].add_attempt(AttemptRow("r1", "sum", 1, "retryable", "E: " + "x" * 500, T0, T1))
    run.steps["sum"].add_attempt(AttemptRow("r1", "sum", 2, "completed", None, T1, T1))
    attempts = _state.detail(run, "sum")["attempts"]
    assert [(a["n"], a["s"], a["d"]) for a in attempts] == [
        (1, "retryable", 2.5),
        (2, "completed", 0),
    ]
    assert len(attempts[0]["e"]) == _state.ERROR_PREVIEW and attempts[1]["e"] is None
    assert _state.detail(run, "ask[mock/a]")["attempts"] == []


def test_static_sums_are_the_reports_totals_in_its_order_without_building_a_report() -> None:
    """The static view sums the calls in one pass: the same figures, models in the same
    order as ``run.report()`` (DAG order, not call order), replayed and cached calls adding
    nothing; and a snapshot of a run builds no report at all."""
    from dataclasses import replace

    from baton_nb.widget._static import sums

    run = failed_run()
    _add(run, "late", state="completed", attempt=1, deps=["work"])
    # called first, but "late" comes after "work" in the DAG: the report lists its model last
    first = _call("late", "mock/z-first-called", "0.5", tokens=3)
    run.calls.insert(0, first)
    run.calls.append(replace(first, replayed=True))
    run.calls.append(replace(first, model="mock/cached", cached=True, saved=Decimal("1")))
    for call in run.calls[:1] + run.calls[-2:]:  # what ``run.add_call`` tells the step
        run.steps["late"].add_call(call)
    report = run.report()
    by_step, by_model = sums(run)
    assert list(by_model) == list(report.by_model())
    for mine, theirs in ((by_step, report.by_step()), (by_model, report.by_model())):
        assert set(mine) == set(theirs)
        for name, t in theirs.items():
            got = mine[name]
            expected = (t.calls, t.usage.total_tokens, t.known_cost, t.unpriced_calls)
            assert (got.calls, got.tokens, got.known_cost, got.unpriced_calls) == expected

    def no_report(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the snapshot built a cost report")

    run.report = no_report  # type: ignore[method-assign]
    bundle = snapshot_bundle(run, _state.stored_state(run))
    assert "<code>mock/z-first-called</code>" in bundle["text/html"]


@pytest.mark.parametrize(
    "value",
    [0, -7, 2**70, 1.5, float("nan"), True, None, 'é"</\n', [1, {"a": None}], {"k": [1.0]}],
)
def test_compact_json_is_json_dumps(value: Any) -> None:
    encode = _state.compact_json(str)
    assert encode(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert encode(Decimal("1.5")) == '"1.5"'  # through ``default``


def _touched(field: str) -> StepInfo:
    """A new pending step with one field of its state moved off the initial value."""
    step = StepInfo(name="c", job_id=1, kind="child", parent="g")
    if field == "usage":
        step.usage = bn.Usage(input_tokens=0, output_tokens=3)
    elif field in ("started_at", "finished_at"):
        setattr(step, field, T0)
    elif field in ("state", "error"):
        setattr(step, field, "executing" if field == "state" else "boom")
    elif field == "has_result":
        step.has_result = True
    elif field != "none":
        setattr(step, field, 1)
    return step


@pytest.mark.parametrize(
    "field",
    [
        "none",
        "state",
        "attempt",
        "started_at",
        "finished_at",
        "calls",
        "error",
        "has_result",
        "unpriced_calls",
        "replayed_calls",
        "cached_calls",
        "usage",
        "unstored",
    ],
)
def test_is_pending_is_node_state_equal_to_pending(field: str) -> None:
    """The check made for every step added mid-run, instead of building its state."""
    step = _touched(field)
    assert _state.is_pending(step) == (_state.node_state(step) == _state.PENDING)
    assert _state.is_pending(step) == (field == "none")


@pytest.mark.parametrize(
    "field",
    [
        "none",
        "state",
        "attempt",
        "started_at",
        "finished_at",
        "calls",
        "error",
        "has_result",
        "unpriced_calls",
        "replayed_calls",
        "cached_calls",
        "usage",
        "unstored",
    ],
)
def test_the_end_check_finds_every_field_that_moved(field: str) -> None:
    """The end of a run's check of every node (``moved``): from a pending node and from a
    completed one, each field moved in turn."""
    step = _touched(field)
    assert (_state.node_row(step) == _state.PENDING_ROW) == (field == "none")
    run = small_run()
    run.steps["ask[mock/a]"].state = State.EXECUTING  # (one sent as completed is skipped)
    sent = _state.node_rows(run)
    assert _state.moved(run, sent) == []
    if field in ("state", "attempt", "error", "has_result", "calls", "unstored"):
        done = run.steps["ask[mock/a]"]
        moved = {"state": "cancelled", "attempt": 2, "calls": 2}.get(field, getattr(step, field))
        setattr(done, field, moved)
        assert _state.moved(run, sent) == ["ask[mock/a]"]
    del sent["sum"]
    assert "sum" in _state.moved(run, sent)  # a step never sent
    assert "sum" not in _state.moved(run, sent, {"sum"})  # to be computed anyway


def test_the_end_check_sees_a_completed_groups_items_stored_since() -> None:
    """A map group sent as completed with items unstored (a quorum met while chunks were
    stored) is checked at the end: its count drops with no event."""
    run = small_run()
    group = run.steps["ask"]
    group.state, group.unstored = State.COMPLETED, 3
    sent = _state.node_rows(run)
    group.unstored = 0  # not announced
    assert _state.moved(run, sent) == ["ask"]


def test_the_end_check_skips_steps_sent_as_completed() -> None:
    """A completed step is final within an execution: the end check does not compute its
    row again (what it still gets, a charge for an attempt with no answer, is announced)."""
    run = small_run()
    sent = _state.node_rows(run)
    done = run.steps["ask[mock/a]"]
    assert done.state == State.COMPLETED
    done.error = "changed, not announced"
    assert "ask[mock/a]" not in _state.moved(run, sent)
    done.state = State.RETRYABLE
    sent = _state.node_rows(run)
    done.error = "changed again, not announced"
    assert _state.moved(run, sent) == ["ask[mock/a]"]


def test_a_cost_text_is_looked_up_by_its_amount() -> None:
    """Node states format a cost once per distinct amount (a fan-out's calls cost a few):
    the text is ``fmt_money``'s, the same for equal amounts written differently, and the
    lookup stays bounded however many amounts there are."""
    from baton_nb._money import fmt_money

    step = StepInfo(name="c", job_id=1, state="completed", attempt=1, calls=1)
    for text in ("0.000006", "0.0000060", "0.000377350000", "12.000", "0", "1E-7"):
        step.cost = Decimal(text)
        assert _state.node_state(step)["c"] == fmt_money(Decimal(text))
    for i in range(5000):
        step.cost = Decimal(i) / 7
        assert _state.node_state(step)["c"] == fmt_money(Decimal(i) / 7)
    assert len(_state._COST_TEXT) <= 4096


def test_a_models_sums_are_its_steps_when_every_call_names_it() -> None:
    """A run whose calls all name one model: the static view's model row is its steps'
    sums (no pass over the calls), the same as the pass gives: paid, unpriced, replayed,
    cached and a charge for attempts with no answer (cost only) among them. A call of a
    step the run does not have (never in a real run) falls back to the pass."""
    from dataclasses import replace

    from baton_nb.pricing import CallPricing
    from baton_nb.store._rows import UNANSWERED
    from baton_nb.widget._static import _by_model, _models, census

    run = bn.Run("0123456789abcdef0123456789abcdef", "one-model")
    _add(run, "m", kind="group", state="completed")
    amounts = ("0.0000072", "0.000007200", None, "0.1")
    for i in range(40):
        child = _add(run, f"m[{i}]", kind="child", parent="m", state="completed", attempt=1)
        call = _call(child.name, "mock/a", amounts[i % 4], tokens=i)
        if i % 7 == 0:
            call = replace(call, replayed=True)
        elif i % 11 == 0:
            call = replace(call, cached=True, saved=Decimal("0.5"), cost=Decimal(0))
        elif i % 13 == 0:  # a charge: attempts with no answer, at the worst case
            pricing = CallPricing("mock/a", UNANSWERED)
            call = replace(call, pricing=pricing, cost=Decimal("0.3"), usage=bn.Usage())
        run.add_call(call)
    _add(run, "synth", state="completed", attempt=1)
    run.add_call(_call("synth", "mock/a", "0.02", tokens=100))
    expected = _by_model(run)
    got = _models(run, census(run))
    assert list(got) == ["mock/a"]
    mine, theirs = got["mock/a"], expected["mock/a"]
    assert (mine.calls, mine.tokens, mine.unpriced_calls) == (
        theirs.calls,
        theirs.tokens,
        theirs.unpriced_calls,
    )
    assert mine.known_cost == theirs.known_cost and mine.calls == 40 - 6 - 3 - 3 + 1
    run.calls.append(_call("gone", "mock/a", "1"))  # a step the run does not have
    assert _models(run, census(run))["mock/a"].known_cost == _by_model(run)["mock/a"].known_cost


def test_static_sums_of_a_map_with_mixed_amounts_are_exact() -> None:
    """A fan-out whose calls cost a few amounts (added once per amount, times its count),
    some unpriced, some replayed, over two models: the report's exact totals."""
    from dataclasses import replace

    from baton_nb.widget._static import sums

    run = failed_run()
    amounts = ("0.0000072", "0.000007200", "0.1", "123.456789012345", None)
    _add(run, "more", kind="group", state="completed", deps=["items"])
    for i in range(300):
        child = _add(run, f"more[{i}]", kind="child", parent="more", state="completed")
        model = "mock/a" if i % 3 else "mock/b"
        call = _call(child.name, model, amounts[i % len(amounts)], tokens=i)
        if i % 7 == 0:
            call = replace(call, replayed=True)
        run.calls.append(call)
        child.add_call(call)
    run.calls.reverse()  # answered out of the items' order: the models in the report's
    report = run.report()
    by_step, by_model = sums(run)
    assert list(by_model) == list(report.by_model())
    for mine, theirs in ((by_step, report.by_step()), (by_model, report.by_model())):
        assert set(mine) == set(theirs)
        for name, t in theirs.items():
            got = mine[name]
            expected = (t.calls, t.usage.total_tokens, t.known_cost, t.unpriced_calls)
            assert (got.calls, got.tokens, got.known_cost, got.unpriced_calls) == expected


@pytest.mark.parametrize("value", [0, -7, 2**70, 10**4000, True, False, 1.5, "x", None])
def test_a_scalar_result_is_its_json(value: Any) -> None:
    """An ``int`` result (a map child's usual one) is shown by its repr: its JSON."""
    run = bn.Run("r1", "wf")
    run.steps["s"] = StepInfo(name="s", job_id=1, has_result=True)
    run.results["s"] = value
    assert _state.detail(run, "s")["result"] == json.dumps(value, ensure_ascii=False)


def test_a_charge_for_attempts_with_no_answer_moves_the_node_at_the_end() -> None:
    """The end-of-run check (``moved``) sees a cost that moved without a call (a step not
    completed: what a completed step gets is announced, and the check skips it)."""
    run = small_run()
    child = run.steps["ask[mock/a]"]
    child.state = State.RETRYABLE
    sent = _state.node_rows(run)
    assert _state.moved(run, sent) == []
    lost = CallRecord.unanswered("r1", "ask[mock/a]", 1, 0, "mock/a", "mock", Decimal("0.5"), T1)
    run.calls.append(lost)
    child.add_call(lost)
    assert _state.moved(run, sent) == ["ask[mock/a]"]
