"""CostReport from in-memory runs: rows, sums, replays, unknown prices, CSV, tables."""

from __future__ import annotations

import csv
import io
import pickle
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import baton_nb as bn
from baton_nb._errors import ConfigurationError
from baton_nb._runview import SpendState
from baton_nb.pricing import CallPricing
from baton_nb.reports import (
    CSV_COLUMNS,
    RunList,
    RunSummary,
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
    report = make_run().report()
    assert report.to_csv(path) is None  # as pandas: a cell ending in it shows nothing
    text = path.read_text(encoding="utf-8")
    assert text == report.to_csv()
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
        # attempts with no answer, at their worst case (a budget's)
        "unanswered_usd",
        # calls of unknown price, left out of cost_usd
        "unpriced_calls",
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
    # a call of unknown price: the frame says so, and a sum that does not skip it is NaN
    assert not report.complete and report.unpriced_calls == 1
    assert frame.attrs == {"complete": False, "unpriced_calls": 1}
    assert frame["cost_usd"].isna().sum() == 1 and pd.isna(frame["cost_usd"].sum(skipna=False))


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


@given(
    st.lists(
        st.sampled_from(
            ["0.0003", "0.00030", "0E-12", "1.25", "-0.5", "123456789012.000000000001"]
        ),
        max_size=40,
    )
)
def test_sum_money_is_the_exact_sum(texts: list[str]) -> None:
    """``sum_money`` (the run's totals, the static view's sums, the reports) is the exact sum
    of the amounts, whatever the caller's decimal context (a notebook's ``prec=3``)."""
    import decimal
    from fractions import Fraction

    from baton_nb._money import sum_money

    values = [Decimal(t) for t in texts]
    with decimal.localcontext(decimal.Context(prec=3)):
        total = sum_money(values)
    assert Fraction(total) == sum(map(Fraction, values), Fraction(0))


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
    assert "(1 call with unknown price: mock/secret-model; incomplete)" in head
    assert "for 1 run, 4 calls" in head
    assert repr(report) == (
        "<CostReport 1 run, 4 rows, 4 calls, $0.100323456789 (+1 unpriced call)>"
    )
    # report.total alone says it is a lower bound (a notebook cell shows its repr); as a
    # Decimal it stays the bare number (str, format, arithmetic, pickling)
    total = report.total
    assert isinstance(total, Decimal) and total == Decimal("0.100323456789")
    assert repr(total) == "LowerBound('0.100323456789', 1 call of unknown price not counted)"
    assert str(total) == f"{total}" == "0.100323456789" and type(total + 0) is Decimal
    assert repr(pickle.loads(pickle.dumps(total))) == repr(total)
    priced = bn.Run("r", "wf")
    priced.calls = [call("s", A, "0.0005")]
    assert repr(priced.report().total) == "Decimal('0.0005')"  # complete: a plain Decimal
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


class _DollarsOutsideNoMath(HTMLParser):
    """The text with a ``$`` that no element of MathJax 2's and 3's ignore classes holds."""

    def __init__(self) -> None:
        super().__init__()
        self.ignored: list[bool] = []  # per open element: inside an ignored one
        self.exposed: list[str] = []
        self.shown: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        inside = bool(self.ignored and self.ignored[-1])
        self.ignored.append(inside or {"tex2jax_ignore", "mathjax_ignore"} <= set(classes))

    def handle_endtag(self, tag: str) -> None:
        self.ignored.pop()

    def handle_data(self, data: str) -> None:
        if "$" in data:
            self.shown.append(data)
            if not (self.ignored and self.ignored[-1]):
                self.exposed.append(data)


def _exposed_dollars(html_text: str) -> list[str]:
    parser = _DollarsOutsideNoMath()
    parser.feed(html_text)
    parser.close()
    assert parser.shown, "the HTML shows no amount in $ to check"
    return parser.exposed


def test_html_amounts_are_kept_from_notebook_math() -> None:
    """Two ``$`` in one output (``$0.0017 spent of $1``) make a MathJax formula in
    JupyterLab: every HTML the reports draw sits in MathJax's ignore classes."""
    run = make_run()
    run.spend = SpendState(Decimal(1), Decimal("0.00171655"), Decimal(0), None)
    report = run.report()
    html_text = report._repr_html_()
    assert "Budget of run r1: $0.00171655 spent of $1" in html_text
    assert _exposed_dollars(html_text) == []
    step = bn.Run("r", "wf")
    step.calls = [call("$x$", A, "1")]  # a name with $ signs
    assert _exposed_dollars(step.report().by_step()._repr_html_()) == []
    listing = RunList([RunSummary("r$1", "wf$", "completed", NOW, NOW, cost=Decimal("0.5"))])
    assert _exposed_dollars(listing._repr_html_()) == []
    assert "tex2jax_ignore mathjax_ignore" in bn.Run("r", "wf").report()._repr_html_()


def _map_run(items: int) -> bn.Run:
    """A map of ``items`` children, one call each: one report row per child."""
    run = bn.Run("r", "wf")
    steps = [bn.StepInfo("each", 1, kind="group", state="completed")]
    for i in range(items):
        steps.append(bn.StepInfo(f"each[{i}]", 2 + i, kind="child", parent="each", item_index=i))
    run.steps = {s.name: s for s in steps}
    run.calls = [call(f"each[{i}]", A, "0.001") for i in range(items)]
    return run


def test_notebook_table_shows_the_first_rows_and_says_how_to_see_the_rest() -> None:
    """1,000 map children: the HTML table stops at MAX_HTML_ROWS and says how many more and
    where they are; text, CSV, records and the DataFrame keep every row."""
    from baton_nb.reports._render import MAX_HTML_ROWS

    report = _map_run(1000).report()
    html_text = report._repr_html_()
    assert html_text.count("<td>each[") + html_text.count('<td class="l">each[') == MAX_HTML_ROWS
    assert '<td class="l">each[49]</td>' in html_text and "each[50]<" not in html_text
    assert "950 more (step, model) rows not shown (the first 50 of 1,000)" in html_text
    for method in ("report.by_step()", "report.to_csv(path)", "report.to_pandas()"):
        assert f"<code>{method}</code>" in html_text
    assert '<tr class="total"><td class="l">total</td><td></td><td>1000</td>' in html_text
    assert len(report.to_records()) == 1000 and len(report.to_csv().splitlines()) == 1001
    assert str(report).count("each[") == 1000
    children = report.by_step(fanout_children=True)
    assert "950 more rows not shown" in children._repr_html_() and len(children) == 1000
    assert "more" not in report.by_step()._repr_html_()  # one row: "each"
    few = _map_run(MAX_HTML_ROWS).report()._repr_html_()
    assert "not shown" not in few and f"each[{MAX_HTML_ROWS - 1}]" in few


def test_a_rows_calls_priced_at_zero_write_zero_not_empty() -> None:
    """``cost_usd`` is empty only when nothing in the row was priced: two calls priced at
    $0 beside an unpriced one write 0 (the unpriced call counted apart)."""
    from baton_nb.reports._rows import CostRow

    row = CostRow(run_id="r", workflow="w", step="s", model="mock/m", provider="mock")
    row.calls, row.unpriced_calls = 3, 1
    assert row.csv_cost == Decimal(0)
    row.calls = 1
    assert row.csv_cost is None


def _cached_run() -> bn.Run:
    """answer[A] answered from the response cache (two calls), answer[B] paid, merge half
    and half: the cache's calls cost 0 and are not in ``calls``."""
    from dataclasses import replace

    run = bn.Run("r", "wf")
    steps = [
        bn.StepInfo("answer", 1, kind="group", state="completed"),
        bn.StepInfo(f"answer[{A}]", 2, kind="child", parent="answer", model=A, attempt=1),
        bn.StepInfo(f"answer[{B}]", 3, kind="child", parent="answer", model=B, attempt=1),
        bn.StepInfo("merge", 4, deps=["answer"], attempt=1, state="completed"),
    ]
    run.steps = {s.name: s for s in steps}

    def hit(step: str, model: str) -> bn.CallRecord:
        empty = bn.Usage()
        return replace(call(step, model, "0"), usage=empty, cached=True, saved=Decimal("0.01"))

    run.calls = [
        hit(f"answer[{A}]", A),
        hit(f"answer[{A}]", A),
        call(f"answer[{B}]", B, "0.0002"),
        call("merge", A, "0.1"),
        hit("merge", A),
    ]
    return run


def _cells(table: str, first: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.startswith(first + " "))


def test_a_row_answered_from_the_cache_says_so_in_the_tables() -> None:
    """A row whose answers all came from the cache reads 0 calls, cost 0: the text and HTML
    tables (per step and model, per step, model or run) have a ``cached`` column beside
    ``replayed`` then, and the fan-out comparison a ``cached calls`` row. The CSV's columns
    are the contract's, unchanged."""
    report = _cached_run().report()
    header = ["step", "model", "calls", "replayed", "cached", "input", "output", "cost_usd"]
    table = str(report)
    assert table.splitlines()[1].split() == [*header, "latency"]
    assert _cells(table, f"answer[{A}]") == [f"answer[{A}]", A, "0", "0", "2", "0", "0", "0"]
    assert _cells(table, f"answer[{B}]")[2:5] == ["1", "0", "0"]
    assert _cells(table, "merge")[2:5] == ["1", "0", "1"]
    assert _cells(table, "total")[1:4] == ["2", "0", "3"]
    assert _cells(table, "cached calls")[2:] == ["2", "0"]  # fan-out: A, B side by side

    by_step = str(report.by_step())
    assert by_step.splitlines()[0].split()[:4] == ["step", "calls", "replayed", "cached"]
    assert _cells(by_step, "answer")[1:4] == ["1", "0", "2"]
    assert _cells(str(report.by_model()), A)[1:4] == ["1", "0", "3"]

    html_text = report._repr_html_()
    assert "<th>replayed</th><th>cached</th><th>input</th>" in html_text
    row = f'<td class="l">answer[{A}]</td><td class="l">{A}</td><td>0</td><td>0</td><td>2</td>'
    assert row in html_text
    assert "<th>cached</th>" in report.by_step()._repr_html_()

    assert tuple(report.to_csv().splitlines()[0].split(",")) == CSV_COLUMNS
    assert [r["cached_calls"] for r in report.to_records()] == [2, 0, 1]


def test_tables_without_cached_calls_have_no_cached_column() -> None:
    """No wider than they need: a report with no calls from the cache has no such column."""
    report = make_run().report()
    assert "cached" not in str(report).splitlines()[1]
    assert "cached" not in str(report.by_step()) and "cached calls" not in str(report)
    assert "<th>cached</th>" not in report._repr_html_()
