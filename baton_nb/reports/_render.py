"""Text and HTML tables of cost reports (no I/O)."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._money import fmt_money, no_math_html, plural
from ._rows import ModelComparison, Totals

if TYPE_CHECKING:
    from ._cost import Breakdown, CostReport

__all__ = [
    "MAX_HTML_ROWS",
    "breakdown_html",
    "breakdown_text",
    "grouped_text",
    "report_html",
    "report_text",
    "summary_text",
    "text_table",
]

_STYLE = (
    "<style>.bn-cost table{border-collapse:collapse;font-size:12px;margin:4px 0 10px}"
    ".bn-cost th,.bn-cost td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    ".bn-cost th:first-child,.bn-cost td:first-child,.bn-cost .l{text-align:left}"
    ".bn-cost tr.total td{font-weight:bold;border-top:2px solid #888}"
    ".bn-cost .unknown{color:#b35c00}.bn-cost .note{color:#666;font-size:11px}</style>"
)


# Rows of a table shown in a notebook (``_repr_html_``); the rest are counted in a line. The
# text, CSV, records and DataFrame keep every row.
MAX_HTML_ROWS = 50


# ── shared bits ───────────────────────────────────────────────────────────────


def _latency(t: Totals) -> str:
    mean = t.mean_latency_ms
    return "" if mean is None else f"{mean:,.0f} ms"


def _total_line(report: CostReport) -> str:
    total = f"${fmt_money(report.total)}"
    if report.complete:
        return total
    unpriced = plural(report.unpriced_calls, "call")
    models = list(dict.fromkeys(r.model for r in report.rows if r.unpriced_calls))
    named = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
    return f"at least {total} ({unpriced} with unknown price: {named}; incomplete)"


def _headline(report: CostReport) -> str:
    runs = len(report.run_ids)
    tokens = report.tokens
    totals = report.totals()
    calls = plural(report.calls, "call")
    if totals.batch_calls:
        calls += f" ({totals.batch_calls:,} of them in provider batches, at batch rates)"
    parts = [
        plural(runs, "run"),
        calls,
        f"{tokens.input_tokens:,} input + {tokens.output_tokens:,} output tokens",
    ]
    if totals.fees:
        parts.append(f"${fmt_money(totals.fees)} of it per-request fees (web searches)")
    if totals.unanswered:
        parts.append(
            f"${fmt_money(totals.unanswered)} of it no answer, counted at the worst case "
            "(attempts timed out, cut or cancelled in flight; not in the calls)"
        )
    if totals.batch_replays:
        parts.append(f"{_batch_reads(totals.batch_replays)} (paid once, in the calls)")
    replays = report.replayed_calls - totals.batch_replays
    if replays:
        parts.append(f"{replays} replayed (not charged again)")
    if report.cached_calls:
        saved = fmt_money(report.saved)
        parts.append(f"{report.cached_calls} answered from the cache (${saved} saved)")
    return "Cost: " + _total_line(report) + " for " + ", ".join(parts)


def _batch_reads(count: int) -> str:
    return f"{count:,} batch {'answer' if count == 1 else 'answers'} read back by their steps"


def _replayed_note(report: CostReport) -> str | None:
    """What the ``replayed`` column counts, when it holds batch answers: a batched call is
    paid once (in ``calls``, at batch rates) and replayed by its step as it reads it."""
    reads = report.totals().batch_replays
    if not reads:
        return None
    return (
        "replayed: answers read from the store, never charged again; among them, "
        f"{_batch_reads(reads)} (each paid once, in calls, at batch rates)"
    )


def _budget_lines(report: CostReport) -> list[str]:
    """``Budget of run abc: $0.42 spent of $2.50 (budget reached: ...)``, per run."""
    lines = []
    for run_id, spend in report.budgets.items():
        reason = f" ({spend.reason})" if spend.reason else ""
        lines.append(f"Budget of run {run_id}: {spend.text()}{reason}")
    return lines


def _step_model_rows(report: CostReport) -> list[tuple[str, str, Totals]]:
    """(step, model, totals) summed over runs, in first-seen order."""
    out: dict[tuple[str, str], Totals] = {}
    for row in report.rows:
        out.setdefault((row.step, row.model), Totals()).merge(row)
    return [(step, model, t) for (step, model), t in out.items()]


# The number columns of every cost table (text and HTML; per (step, model) and per step,
# model or run), each with its cell: the calls paid for, then the calls counted apart (no
# tokens, no cost): replayed from the store, and answered from the response cache.
_Column = tuple[str, Callable[[Totals], str]]
_COLUMNS: tuple[_Column, ...] = (
    ("calls", lambda t: str(t.calls)),
    ("replayed", lambda t: str(t.replayed_calls)),
    ("cached", lambda t: str(t.cached_calls)),
    ("input", lambda t: f"{t.usage.input_tokens:,}"),
    ("output", lambda t: f"{t.usage.output_tokens:,}"),
    ("cost_usd", lambda t: t.cost_text()),
    ("latency", _latency),
)


def _columns(rows: Iterable[Totals]) -> tuple[_Column, ...]:
    """The columns of a table of ``rows``: ``cached`` only when one of them has calls
    answered from the response cache (a row of them reads ``0 calls``, ``cost 0``: the
    column says why), so that other tables are no wider on a narrow terminal."""
    if any(t.cached_calls for t in rows):
        return _COLUMNS
    return tuple(column for column in _COLUMNS if column[0] != "cached")


def _names(columns: Sequence[_Column]) -> tuple[str, ...]:
    return tuple(name for name, _ in columns)


def _cells(t: Totals, columns: Sequence[_Column]) -> list[str]:
    return [cell(t) for _, cell in columns]


# ── text ──────────────────────────────────────────────────────────────────────


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain aligned table; the first ``left`` columns are left-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=False))
        out = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs]
        return "  ".join(out).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def _price_rows(report: CostReport) -> list[tuple[str, str, str]]:
    """(model, the price entry it matched, where the price came from), one per model."""
    rows = []
    for model, t in report.by_model().items():
        if not t.calls:
            continue
        matched = t.price_model or ("unknown price" if t.unpriced_calls else "")
        if t.price_models and t.unpriced_calls:
            matched += f" (+{plural(t.unpriced_calls, 'call')} unknown)"
        rows.append((model, matched, t.price_source))
    return rows


_PRICE_COLUMNS = ("model", "priced as", "price source")


def summary_text(report: CostReport) -> str:
    """The totals of :func:`report_text` without its tables: the ``Cost: $...`` line (runs,
    calls, tokens, replays, cache) and each run's budget line."""
    if not report.rows:
        return "Cost: no LLM calls."
    return "\n".join([_headline(report), *_budget_lines(report)])


def report_text(report: CostReport) -> str:
    if not report.rows:
        return "Cost: no LLM calls."
    columns = _columns(report.rows)
    body = [[step, model, *_cells(t, columns)] for step, model, t in _step_model_rows(report)]
    body.append(["total", "", *_cells(report.totals(), columns)])
    lines = [
        _headline(report),
        *_budget_lines(report),
        text_table(("step", "model", *_names(columns)), body, left=2),
    ]
    note = _replayed_note(report)
    if note:
        lines.append(note)
    prices = _price_rows(report)
    if prices:
        lines.append("\nprices:")
        lines.append(text_table(_PRICE_COLUMNS, [list(r) for r in prices], left=3))
    for step, models in report.fanout().items():
        lines.append(f"\nfan-out {step!r}, models side by side:")
        lines.append(_comparison_text(models))
    return "\n".join(lines)


def _comparison_text(models: Mapping[str, ModelComparison]) -> str:
    body = [[name, *row] for name, row in _comparison_rows(models)]
    return text_table(("", *models), body)


def breakdown_text(key: str, items: Mapping[str, Totals], total: Totals | None = None) -> str:
    """The table of ``report.by_step()`` (``by_model``, ``by_run``); with ``total``, ended
    by a ``total`` row as :func:`report_text`'s table."""
    columns = _columns([*items.values(), *([total] if total is not None else [])])
    body = [[name, *_cells(t, columns)] for name, t in items.items()]
    if total is not None:
        body.append(["total", *_cells(total, columns)])
    return text_table((key, *_names(columns)), body)


def grouped_text(report: CostReport, items: Breakdown) -> str:
    """``baton-nb report --by ...``: the totals of :func:`summary_text` (the ``Cost: $...``
    line, each run's budget line), then the table per step, model or run with its total
    row, as the ungrouped report starts and ends its table."""
    if not report.rows:
        return summary_text(report)
    return "\n".join([summary_text(report), breakdown_text(items.key, items, report.totals())])


# ── HTML ──────────────────────────────────────────────────────────────────────


def _td(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def _html_cells(t: Totals, columns: Sequence[_Column]) -> str:
    cost_cls = "unknown" if t.unpriced_calls else ""
    return "".join(_td(cell(t), cost_cls if name == "cost_usd" else "") for name, cell in columns)


def _html_table(header: Sequence[str], rows: Sequence[str], *, text_columns: int = 1) -> str:
    """``text_columns``: how many leading columns hold names (left-aligned, as their cells)."""
    head = "".join(
        f'<th class="l">{html.escape(h)}</th>' if i < text_columns else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def report_html(report: CostReport) -> str:
    if not report.rows:
        return no_math_html(f'<div class="bn-cost">{_STYLE}<p>Cost: no LLM calls.</p></div>')
    step_rows = _step_model_rows(report)
    columns = _columns(report.rows)
    rows = [
        f"<tr>{_td(step, 'l')}{_td(model, 'l')}{_html_cells(t, columns)}</tr>"
        for step, model, t in step_rows[:MAX_HTML_ROWS]
    ]
    total = _html_cells(report.totals(), columns)
    rows.append(f'<tr class="total">{_td("total", "l")}{_td("")}{total}</tr>')
    parts = [
        f'<div class="bn-cost">{_STYLE}<p><b>{html.escape(_headline(report))}</b></p>',
        *(f"<p>{html.escape(line)}</p>" for line in _budget_lines(report)),
        _html_table(("step", "model", *_names(columns)), rows, text_columns=2),
        _more_rows(
            len(step_rows),
            "(step, model) rows",
            "<code>report.by_step()</code> sums map and fan-out children into their step; "
            "<code>report.to_csv(path)</code>, <code>report.to_pandas()</code> and "
            "<code>report.to_records()</code> hold every row",
        ),
    ]
    prices = _price_rows(report)
    if prices:
        cells = [f"<tr>{''.join(_td(c, 'l') for c in row)}</tr>" for row in prices]
        parts.append("<p>Prices: the entry each model matched and its source</p>")
        parts.append(_html_table(_PRICE_COLUMNS, cells, text_columns=3))
    for step, models in report.fanout().items():
        parts.append(f"<p>Fan-out <b>{html.escape(step)}</b>: models side by side</p>")
        parts.append(_comparison_html(models))
    if report.replayed_calls:
        reads = report.totals().batch_replays
        batch = (
            f" {html.escape(_batch_reads(reads))} are among them: each batched call is paid "
            "once (in calls, at batch rates) and replayed by its step as it reads the answer."
            if reads
            else ""
        )
        parts.append(
            '<p class="note">Replayed calls were answered from the store (retry, resume or a '
            "provider batch's answer): their tokens and cost are counted once, by the call "
            f"they replay.{batch}</p>"
        )
    parts.append("</div>")
    return no_math_html("".join(parts))


def _more_rows(count: int, what: str, where: str) -> str:
    """The line under a table cut to ``MAX_HTML_ROWS``: how many rows are not shown, and
    where to see them ('' when none was cut)."""
    if count <= MAX_HTML_ROWS:
        return ""
    hidden = count - MAX_HTML_ROWS
    return (
        f'<p class="note">{hidden:,} more {what} not shown (the first {MAX_HTML_ROWS} of '
        f"{count:,}): {where}.</p>"
    )


def _comparison_html(models: Mapping[str, ModelComparison]) -> str:
    rows = [
        f"<tr>{_td(name, 'l')}{''.join(_td(c) for c in cells)}</tr>"
        for name, cells in _comparison_rows(models)
    ]
    return _html_table(("", *models), rows)


def breakdown_html(key: str, items: Mapping[str, Totals]) -> str:
    shown = list(items.items())[:MAX_HTML_ROWS]
    columns = _columns(items.values())
    rows = [f"<tr>{_td(name, 'l')}{_html_cells(t, columns)}</tr>" for name, t in shown]
    more = _more_rows(
        len(items),
        "rows",
        "<code>.to_records()</code> holds every row, <code>print()</code> shows them",
    )
    return no_math_html(
        f'<div class="bn-cost">{_STYLE}{_html_table((key, *_names(columns)), rows)}{more}</div>'
    )


# ── fan-out comparison ────────────────────────────────────────────────────────

_COMPARISON: tuple[tuple[str, Callable[[ModelComparison], str]], ...] = (
    ("cost_usd", lambda m: m.cost_text()),
    ("calls", lambda m: str(m.calls)),
    ("cached calls", lambda m: str(m.cached_calls)),  # shown when a model has some
    ("input tokens", lambda m: f"{m.usage.input_tokens:,}"),
    ("output tokens", lambda m: f"{m.usage.output_tokens:,}"),
    ("latency / call", _latency),
    ("children", lambda m: str(m.children)),
    ("discarded/cancelled", lambda m: str(m.failed)),  # DESIGN §3 words, as everywhere
    ("retries", lambda m: str(m.retries)),
    ("last error", lambda m: m.errors[-1][:60] if m.errors else ""),
)


def _comparison_rows(models: Mapping[str, ModelComparison]) -> list[tuple[str, list[str]]]:
    rows = [(label, [get(m) for m in models.values()]) for label, get in _COMPARISON]
    cached = any(m.cached_calls for m in models.values())
    return [
        (label, cells)
        for label, cells in rows
        if (label != "last error" or any(cells)) and (label != "cached calls" or cached)
    ]
