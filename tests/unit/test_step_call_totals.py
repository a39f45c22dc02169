"""A step's running call totals on the live Run (``StepInfo.add_call``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import baton_nb as bn
from baton_nb._run import CallRecord, StepInfo

T = datetime(2026, 12, 6, tzinfo=timezone.utc)
CALL = CallRecord(
    run_id="r1",
    step="ask[0]",
    model="mock/a",
    provider="mock",
    attempt=1,
    call_index=0,
    usage=bn.Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2),
    cost=Decimal("0.00012"),
    latency_ms=12.5,
    replayed=False,
    estimated=False,
    created_at=T,
)


def test_a_first_call_keeps_its_usage_and_later_ones_add_up() -> None:
    """The first call's usage is the step's (frozen: shared, not copied per child); the
    next ones are summed into a new value, the first call's left as it was."""
    step = StepInfo(name="ask[0]", job_id=1)
    step.add_call(CALL)
    assert step.usage == CALL.usage
    assert (step.calls, step.cost, step.latency_ms) == (1, Decimal("0.00012"), 12.5)
    second = replace(CALL, call_index=1, usage=bn.Usage(input_tokens=1, output_tokens=1))
    step.add_call(second)
    assert step.usage == bn.Usage(input_tokens=11, output_tokens=6, reasoning_tokens=2)
    assert CALL.usage == bn.Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2)
    assert (step.calls, step.cost, step.latency_ms) == (2, Decimal("0.00024"), 25.0)


def test_replayed_calls_are_counted_not_summed() -> None:
    step = StepInfo(name="ask[0]", job_id=1)
    step.add_call(replace(CALL, replayed=True))
    assert step.usage == bn.Usage()
    assert (step.calls, step.replayed_calls, step.cost) == (1, 1, Decimal(0))
    step.add_call(CALL)
    assert step.usage == CALL.usage
    assert (step.calls, step.replayed_calls) == (2, 1)
