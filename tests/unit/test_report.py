"""CostReport from in-memory runs: rows, sums, replays, unknown prices, CSV, tables."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import baton_nb as bn
from baton_nb._errors import ConfigurationError
from baton_nb.pricing import CallPricing
from baton_nb.reports import (
    CSV_COLUMNS,
    as_duration,
    as_time,
    fmt_money,
    normalize_money,
    parse_duration,
)

NOW = datetime(2025, 6, 14, 18, 0, tzinfo=timezone.utc)
A, B = "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"


def call(
    step: str,
    model: str,
    cost: str | None,
    *,
    inp: int = 100,
    out: int = 20,
    replayed: bool = False,
    latency: float = 100.0,
    run_id: str = "r1",
) -> bn.CallRecord:
    return bn.CallRecord(
        run_id=run_id,
        step=step,
        model=model,
        provider=model.split("/")[0],
        attempt=1,
        call_index=0,
        usage=bn.Usage(input_tokens=inp, output_tokens=out, cached_input_tokens=inp // 4),
        cost=None if cost is None else Decimal(cost),
        latency_ms=latency,
        replayed=replayed,
        estimated=False,
        created_at=NOW,
        pricing=CallPricing(
            model,
            None if cost is None else "genai-prices 0.2.5",
            None if cost is None else model,
            None if cost is None else Decimal(0),
        ),
    )


def make_run(run_id: str = "r1") -> bn.Run:
    """answer[A], answer[B] (B failed after 3 attempts), merge (a replayed retry), judge
    (an unknown price)."""
    run = bn.Run(run_id, "wf")
    steps = [
        bn.StepInfo("answer", 1, kind="group", state="completed"),
        bn.StepInfo(f"answer[{A}]", 2, kind="child", parent="answer", model=A, attempt=1),
        bn.StepInfo(f"answer[{B}]", 3, kind="child", parent="answer", model=B, attempt=3),
        bn.StepInfo("merge", 4, deps=["answer"], attempt=2, state="completed"),
        bn.StepInfo("judge", 5, deps=["merge"], attempt=1, state="completed"),
    ]
    steps[1].state = "completed"
    steps[2].state, steps[2].error = "discarded", "RuntimeError: B is down"
    run.steps = {s.name: s for s in steps}
    run.calls = [
        call(f"answer[{A}]", A, "0.000123456789", run_id=run_id),
        call(f"answer[{B}]", B, "0.0002", run_id=run_id),
        call(f"answer[{B}]", B, "0.0002", replayed=True, run_id=run_id),
        call("merge", A, "0.1", inp=1000, out=200, run_id=run_id),
        call("merge", A, "0.1", inp=1000, out=200, replayed=True, run_id=run_id),
        call("judge", "mock/secret-model", None, run_id=run_id),
    ]
    return run


def test_rows_one_per_step_and_model_in_step_order() -> None:
    report = make_run().report()
    assert [(r.step, r.model) for r in report.rows] == [
        (f"answer[{A}]", A),
        (f"answer[{B}]", B),
        ("merge", A),
        ("judge", "mock/secret-model"),
    ]
    assert [r.parent for r in report.rows] == ["answer", "answer", None, None]


def test_replayed_calls_are_counted_apart_never_twice() -> None:
    run = make_run()
    report = run.report()
    merge = next(r for r in report.rows if r.step == "merge")
    assert (merge.calls, merge.replayed_calls) == (1, 1)
    assert merge.usage.input_tokens == 1000
    assert merge.cost == Decimal("0.1")
    assert report.replayed_calls == 2
    assert report.calls == 4
    assert report.total == run.known_cost == Decimal("0.100323456789")
    assert run.cost is None  # judge's call has no known price: the total is unknown
    assert report.tokens == run.tokens


def test_unknown_price_is_unknown_not_zero_and_total_incomplete() -> None:
    report = make_run().report()
    judge = next(r for r in report.rows if r.step == "judge")
    assert judge.cost is None
    assert judge.cost_text() == "unknown"
    assert not report.complete
    assert report.unpriced_calls == 1
    text = str(report)
    assert "unknown" in text and "incomplete" in text
    assert "unknown" in report._repr_html_()
    by_step = report.by_step()
    assert by_step["judge"].cost is None
    assert by_step["merge"].cost == Decimal("0.1")


def test_partially_priced_row_shows_known_part() -> None:
    run = bn.Run("r", "wf")
    run.calls = [call("s", A, "0.5"), call("s", A, None)]
    row = run.report().rows[0]
    assert row.cost is None and row.known_cost == Decimal("0.5")
    assert row.cost_text() == "0.5+?"


def test_csv_has_contract_columns_and_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "costs é.csv"
    text = make_run().report().to_csv(path)
    assert path.read_text(encoding="utf-8") == text
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0] == [
        "run_id", "workflow", "step", "model", "provider", "calls", "input_tokens",
        "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
        "cost_usd", "latency_ms", "replayed_calls",
        # after DESIGN §8's columns
        "cache_write_1h_tokens", "web_search_requests", "fees_usd", "price_source",
        "price_model",
        # the response cache (DESIGN §11)
        "cached_calls", "saved_usd",
    ]  # fmt: skip
    records = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert records[0]["cost_usd"] == "0.000123456789"
    assert records[0]["price_source"] == "genai-prices 0.2.5"
    assert records[0]["price_model"] == "openai/gpt-4o-mini"
    assert records[0]["fees_usd"] == "0"
    assert records[3]["price_source"] == "" and records[3]["price_model"] == ""
    assert records[0]["cached_input_tokens"] == "25"
    assert records[1]["replayed_calls"] == "1" and records[1]["calls"] == "1"
    assert records[3]["cost_usd"] == ""
    priced = sum(Decimal(r["cost_usd"]) for r in records if r["cost_usd"])
    assert priced == make_run().known_cost


def test_csv_text_without_path_and_no_float_rounding() -> None:
    run = bn.Run("r", "wf")
    run.calls = [call("s", A, "0.1"), call("s", A, "0.2"), call("s", A, "0.000000000001")]
    text = run.report().to_csv()
    assert text.splitlines()[1].split(",")[11] == "0.300000000001"


def test_by_step_folds_fanout_children_unless_asked() -> None:
    report = make_run().report()
    assert list(report.by_step()) == ["answer", "merge", "judge"]
    assert report.by_step()["answer"].calls == 2
    assert list(report.by_step(fanout_children=True))[:2] == [f"answer[{A}]", f"answer[{B}]"]


def test_by_model_and_by_run() -> None:
    report = bn.CostReport.from_runs([make_run("r1"), make_run("r2")])
    assert list(report.by_run()) == ["r1", "r2"]
    assert report.by_run()["r1"].known_cost == make_run().known_cost
    by_model = report.by_model()
    assert by_model[A].calls == 4
    assert by_model[A].cost == Decimal("0.200246913578")
    assert "model" in str(by_model) and "<table>" in by_model._repr_html_()
    assert by_model.to_records()[0]["model"] == A
    assert "Breakdown by model" in repr(by_model)


def test_fanout_puts_models_side_by_side_with_failures() -> None:
    report = make_run().report()
    fan = report.fanout()
    assert list(fan) == ["answer"]
    a, b = fan["answer"][A], fan["answer"][B]
    assert (a.children, a.failed, a.retries) == (1, 0, 0)
    assert (b.children, b.failed, b.retries) == (1, 1, 2)
    assert b.errors == ["RuntimeError: B is down"]
    assert b.replayed_calls == 1 and b.calls == 1
    html = report._repr_html_()
    assert "Fan-out <b>answer</b>" in html
    assert A in html and B in html and "RuntimeError: B is down" in html
    assert "side by side" in str(report)


def test_empty_report() -> None:
    report = bn.Run("r", "wf").report()
    assert report.total == 0 and report.complete and len(report) == 0
    assert "no LLM calls" in str(report) and "no LLM calls" in report._repr_html_()
    assert report.to_csv().strip() == ",".join(CSV_COLUMNS)


def test_html_escapes_names() -> None:
    run = bn.Run("r", "wf")
    run.calls = [call("<b>x</b>", A, "1")]
    assert "&lt;b&gt;x&lt;/b&gt;" in run.report()._repr_html_()


def test_records_and_pandas() -> None:
    pd = pytest.importorskip("pandas")
    report = make_run().report()
    records = report.to_records()
    assert list(records[0]) == list(CSV_COLUMNS)
    assert records[3]["cost_usd"] is None
    frame = report.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(CSV_COLUMNS)
    assert len(frame) == 4


def test_pandas_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"baton-nb\[pandas\]"):
        make_run().report().to_pandas()


def test_fmt_money() -> None:
    assert fmt_money(Decimal("0.000123450000")) == "0.00012345"
    assert fmt_money(Decimal("100")) == "100"
    assert fmt_money(Decimal("0E-12")) == "0"
    assert fmt_money(Decimal("1E-9")) == "0.000000001"
    # exact beyond the 28 digits of the default decimal context (NUMERIC(30,12) fits 30)
    big = "123456789012345678.123456789012"
    assert fmt_money(Decimal(big + "000")) == big
    assert fmt_money(Decimal("-0.000")) == "0" and fmt_money(Decimal("1.2E+3")) == "1200"
    assert fmt_money(Decimal("-12.50")) == "-12.5" and fmt_money(Decimal("7.000")) == "7"


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_fmt_money_is_the_normalised_amount_in_plain_digits(value: Decimal) -> None:
    assert fmt_money(value) == format(normalize_money(value), "f")
    assert Decimal(fmt_money(value)) == value


def test_usage_sum_adds_every_field() -> None:
    from baton_nb._usage import _FIELDS

    a = bn.Usage(**{name: 100 - i for i, name in enumerate(_FIELDS)})  # distinct, valid
    b = bn.Usage(**{name: 10 * (100 - i) for i, name in enumerate(_FIELDS)})
    assert (a + b).to_dict() == {name: 11 * (100 - i) for i, name in enumerate(_FIELDS)}
    assert a + b == bn.Usage(**(a + b).to_dict()) and hash(a + b) == hash(b + a)


def test_normalize_money_drops_trailing_zeros_exactly() -> None:
    assert repr(normalize_money(Decimal("0.000489700000"))) == "Decimal('0.0004897')"
    assert repr(normalize_money(Decimal("12.000"))) == "Decimal('12')"
    assert repr(normalize_money(Decimal("0E-12"))) == "Decimal('0')"
    assert repr(normalize_money(Decimal("100"))) == "Decimal('100')"  # never 1E+2
    big = Decimal("123456789012345678.123456789012000")
    assert normalize_money(big) == big and str(normalize_money(big)).endswith("9012")


def test_counts_in_text_are_singular_or_plural() -> None:
    report = make_run().report()  # one unpriced call, one run
    head = str(report).splitlines()[0]
    assert "(1 call with unknown price: incomplete)" in head and "for 1 run, 4 calls" in head
    assert repr(report) == (
        "<CostReport 1 run, 4 rows, 4 calls, $0.100323456789 (+1 unpriced call)>"
    )
    single = bn.Run("r", "wf")
    single.calls = [call("s", A, "0.0005")]
    assert "for 1 run, 1 call," in str(single.report())
    assert repr(single).endswith("cost $0.0005>")


def test_durations_and_times() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration(" 1.5m ") == timedelta(seconds=90)
    assert parse_duration("2W") == timedelta(weeks=2)
    for bad in ("7", "d", "7 days", "-1d", ""):
        with pytest.raises(ConfigurationError, match="invalid duration"):
            parse_duration(bad)
    assert as_duration(timedelta(hours=1), "x") == timedelta(hours=1)
    with pytest.raises(ConfigurationError, match="must not be negative"):
        as_duration(timedelta(seconds=-1), "older_than")
    ago = as_time("1h", "since")
    assert ago is not None
    assert abs((datetime.now(timezone.utc) - ago) - timedelta(hours=1)) < timedelta(seconds=5)
    assert as_time("2025-06-14T18:00+00:00", "since") == NOW
    assert as_time(NOW, "since") == NOW
    assert as_time(None, "since") is None
    with pytest.raises(ConfigurationError, match="invalid since"):
        as_time("yesterday", "since")
