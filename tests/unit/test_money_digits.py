"""Costs the library hands out keep their exact value without spurious trailing zeros:
a sum of costs (``0.00012815 + 0.00006685``) is ``0.000195``, never ``0.00019500``, as
every other cost (``run.cost``, the report's total) already was."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import baton_nb as bn
from baton_nb._run import CallRecord
from baton_nb._runview import StepInfo
from baton_nb._states import NodeKind
from baton_nb.runtime._tools import ToolRun

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
COSTS = ("0.00012815", "0.00006685")  # their exact sum, 0.00019500 in Decimal arithmetic


def _completion(cost: str) -> bn.Completion:
    usage = bn.Usage(input_tokens=10, output_tokens=5)
    return bn.Completion("hi", "mock/a", "mock", usage, Decimal(cost), 1.0, {})


def _call(cost: str, step: str, index: int) -> CallRecord:
    return CallRecord(
        run_id="r1", step=step, model="mock/a", provider="mock", attempt=1,
        call_index=index, usage=bn.Usage(input_tokens=10, output_tokens=5),
        cost=Decimal(cost), latency_ms=1.0, replayed=False, estimated=False, created_at=T0,
    )  # fmt: skip


def test_a_tool_runs_cost_has_no_trailing_zeros() -> None:
    completions = [_completion(c) for c in COSTS]
    tool_run = ToolRun(completions[-1], [], completions)
    assert f"${tool_run.cost}" == "$0.000195"


def test_a_steps_cost_and_the_reports_rows_have_no_trailing_zeros() -> None:
    run = bn.Run("r1", "wf")
    run.add_step(StepInfo(name="ask", job_id=0, state="completed", attempt=1))
    run.add_step(StepInfo(name="fan", job_id=1, kind=NodeKind.GROUP))
    run.add_step(StepInfo(name="fan[a]", job_id=2, kind=NodeKind.CHILD, parent="fan"))
    run.add_step(StepInfo(name="fan[b]", job_id=3, kind=NodeKind.CHILD, parent="fan"))
    assert run.steps["fan"].children == ["fan[a]", "fan[b]"]
    for index, cost in enumerate(COSTS):
        run.add_call(_call(cost, "ask", index))
    run.add_call(_call(COSTS[0], "fan[a]", 0))
    run.add_call(_call(COSTS[1], "fan[b]", 0))
    assert str(run.steps["ask"].cost) == "0.000195"
    assert str(run.step_totals("fan").cost) == "0.000195"
    assert str(run.cost) == "0.00039"
    by_step = run.report().by_step()
    assert str(by_step["ask"].cost) == "0.000195" and str(by_step["fan"].cost) == "0.000195"
    (row,) = [r for r in run.report().rows if r.step == "ask"]
    assert str(row.as_record()["cost_usd"]) == "0.000195"
