"""Budget and cache figures in the views (DESIGN §11): the widget's header, the text
progress line, the report (pure functions over a ``Run``, no database, no loop)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import baton_nb as bn
from baton_nb._run import CallRecord
from baton_nb._runview import SpendState, cache_savings
from baton_nb.widget import _state
from baton_nb.widget._progress import spend_texts

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def _call(cost: str, *, cached: bool = False, saved: str | None = None) -> CallRecord:
    return CallRecord(
        run_id="r1",
        step="ask",
        model="mock/a",
        provider="mock",
        attempt=1,
        call_index=0,
        usage=bn.Usage(input_tokens=10, output_tokens=5),
        cost=Decimal(cost),
        latency_ms=1.0,
        replayed=False,
        estimated=False,
        created_at=T0,
        cached=cached,
        saved=None if saved is None else Decimal(saved),
    )


def _run() -> bn.Run:
    run = bn.Run("r1", "wf")
    run.calls += [_call("0.25"), _call("0", cached=True, saved="0.25")]
    run.spend = SpendState(Decimal("2.5"), Decimal("0.25"), Decimal("0.01"), None)
    return run


def test_cached_calls_are_counted_apart() -> None:
    run = _run()
    assert cache_savings(run) == (1, Decimal("0.25"))
    assert run.cost == Decimal("0.25") and run.tokens.input_tokens == 10  # the paid call only
    report = run.report()
    assert (report.calls, report.cached_calls, report.saved) == (1, 1, Decimal("0.25"))
    text = str(report)
    assert "1 answered from the cache ($0.25 saved)" in text
    assert "Budget of run r1: $0.25 spent of $2.5 ($0.01 reserved)" in text


def test_widget_header_and_text_progress() -> None:
    run = _run()
    header = _state.header(run, cancellable=False, cancelling=False, source="live")
    assert header["spend"] == {"b": "2.5", "s": "0.25", "r": "0.01", "why": None}
    assert (header["cached"], header["saved"]) == (1, "0.25")
    assert spend_texts(run) == [
        "budget: $0.25 spent of $2.5 ($0.01 reserved)",
        "1 call cached ($0.25 saved)",
    ]
    run.spend = SpendState(Decimal(1), Decimal("0.99"), Decimal(0), "budget reached: ...")
    assert spend_texts(run)[0] == "budget: $0.99 spent of $1 · budget reached"
    assert _state.header(run, cancellable=False, cancelling=False, source="live")["spend"][
        "why"
    ] == ("budget reached: ...")
    plain = bn.Run("r2", "wf")
    assert spend_texts(plain) == []
    assert _state.spend(plain) == {"spend": None, "cached": 0, "saved": "0"}
