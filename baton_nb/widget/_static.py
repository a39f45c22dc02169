"""The static view of a run: HTML without scripts, for where the widget cannot run.

GitHub's and nbviewer's notebook previews, untrusted notebooks (any notebook edited
outside Jupyter), front ends without widget support (VS Code without the Jupyter
extension) and ``Run._repr_html_``. Compact whatever the run's size: the run line, steps
per state, the failed steps with their errors, one row per step (a fan-out group is one
row, its children counted and summed) up to ``MAX_ROWS``, and the cost per model. Plain
tables and lists: it reads the same where styles are stripped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from .._counts import count_steps
from .._money import NO_MATH_CLASSES, add_money, fmt_cost, sum_amounts
from .._run import Run, StepInfo
from .._runview import status_text
from ..reports._cost import dag_order

__all__ = ["MAX_ERRORS", "MAX_ROWS", "Sums", "static_html", "sums"]

MAX_ROWS = 30  # step rows; the rest are counted in one line
MAX_ERRORS = 10  # failed steps listed with their error
ERROR_CHARS = 300


def _e(value: object) -> str:
    return html.escape(str(value))


def _tokens(n: int) -> str:
    return f"{n:,}"


def _seconds(step: StepInfo) -> str:
    return "" if step.duration is None else f"{step.duration:.2f}s"


def _cut(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def static_html(run: Run) -> str:
    """The run as script-free HTML (escaped throughout)."""
    by_step, by_model = sums(run)
    parts = [_title(run), f"<p>{_e(run.counts().text())}</p>"]
    parts += _failures(run)
    parts.append(_batches(run))
    parts.append(_steps_table(run, by_step))
    parts.append(_models_table(by_model))
    # amounts in $: a notebook's math typesetting must leave them as text
    return f'<div class="bn-fallback {NO_MATH_CLASSES}">{"".join(p for p in parts if p)}</div>'


@dataclass
class Sums:
    """What the static view shows of some calls: ``run.report()``'s ``Totals`` cut to the
    columns it draws (calls, tokens, priced cost, unpriced calls), same rules: replayed and
    cached calls add nothing."""

    calls: int = 0
    tokens: int = 0
    known_cost: Decimal = Decimal(0)
    unpriced_calls: int = 0


def sums(run: Run) -> tuple[dict[str, Sums], dict[str, Sums]]:
    """The run's calls summed per step (fan-out children into their step, as
    ``report.by_step()``) and per model (in ``report.by_model()``'s order), in one pass.

    ``run.report()`` made a row per (step, model), then grouped the rows twice: at 5,000
    map children, most of the time the end-of-run snapshot took. The pass counts into one
    slot per (step or fan-out, model) and keeps each slot's costs; the costs are added at
    the end, each distinct amount once times its count (a fan-out's calls cost a few
    distinct amounts): exact sums, as adding them one by one, in a fraction of the time.
    """
    by_step: dict[str, Sums] = {}
    by_model: dict[str, Sums] = {}
    # a step's fan-out (its parent) or itself: the steps' names made once, each a lookup
    # in the pass (a map's children each make their first call there)
    base_of = {name: info.parent or name for name, info in run.steps.items()}
    slots: list[tuple[Sums, Sums]] = []  # a (step or fan-out, model)'s sums
    slot_of: dict[tuple[str, str], int] = {}
    calls: list[int] = []
    tokens: list[int] = []
    unpriced: list[int] = []
    costs: list[list[Decimal]] = []
    for call in run.calls:
        model = call.model
        base = base_of.get(call.step, call.step)
        k = slot_of.get((base, model))
        if k is None:  # a (step or fan-out, model) first seen
            step_sums = by_step.get(base)
            if step_sums is None:
                step_sums = by_step[base] = Sums()
            model_sums = by_model.get(model)
            if model_sums is None:
                model_sums = by_model[model] = Sums()
            k = slot_of[base, model] = len(slots)
            slots.append((step_sums, model_sums))
            calls.append(0)
            tokens.append(0)
            unpriced.append(0)
            costs.append([])
        if call.replayed or call.cached:
            continue
        usage, cost = call.usage, call.cost
        if cost is not None and call.is_unanswered:  # a charge, not a call
            costs[k].append(cost)
            continue
        calls[k] += 1
        tokens[k] += usage.input_tokens + usage.output_tokens
        if cost is None:
            unpriced[k] += 1
        else:
            costs[k].append(cost)
    for k, (step_sums, model_sums) in enumerate(slots):
        total = sum_amounts(costs[k])
        for into_sums in (step_sums, model_sums):
            into_sums.calls += calls[k]
            into_sums.tokens += tokens[k]
            into_sums.unpriced_calls += unpriced[k]
            into_sums.known_cost = add_money(into_sums.known_cost, total)
    if len(by_model) < 2:
        return by_step, by_model
    # The report's order: its rows sorted by the steps' DAG order, then first seen. A
    # model's first (step, model) in that order: its call with the least (step's order,
    # position); the first call of a (step, model) is the one first seen.
    order = dag_order(run)
    last = (len(order), 0)
    rank: dict[str, tuple[tuple[int, int], int]] = {}
    for seen, call in enumerate(run.calls):
        key = (order.get(call.step, last), seen)
        now = rank.get(call.model)
        if now is None or key < now:
            rank[call.model] = key
    return by_step, {model: by_model[model] for model in sorted(rank, key=rank.__getitem__)}


def _title(run: Run) -> str:
    bits = [
        f"<b>{_e(run.workflow)}</b> run <code>{_e(run.id)}</code>: <b>{_e(status_text(run))}</b>"
    ]
    if run.started_at is not None and run.finished_at is not None and run.done:
        bits.append(f"{(run.finished_at - run.started_at).total_seconds():.2f}s")
    bits.append(f"{_tokens(run.tokens.total_tokens)} tokens")
    bits.append(f"cost {_e(run.cost_text())}")
    return f"<p>{' · '.join(bits)}</p>"


def _attempts(step: StepInfo) -> str:
    if step.kind == "group":
        return " (fan-out group)"
    return f" (attempt {step.attempt} of {step.max_attempts})"


def _failures(run: Run) -> list[str]:
    discarded = [s for s in run.steps.values() if s.state == "discarded"]
    cancelled = [s.name for s in run.steps.values() if s.state == "cancelled"]
    out: list[str] = []
    if discarded:
        items = "".join(
            f"<li><code>{_e(s.name)}</code>{_attempts(s)}: "
            f"{_e(_cut(s.error or 'no error recorded'))}</li>"
            for s in discarded[:MAX_ERRORS]
        )
        more = len(discarded) - MAX_ERRORS
        if more > 0:
            items += f"<li>… and {more:,} more discarded</li>"
        out.append(f"<p><b>Discarded</b></p><ul>{items}</ul>")
    if cancelled:
        shown = ", ".join(f"<code>{_e(n)}</code>" for n in cancelled[:MAX_ERRORS])
        more = len(cancelled) - MAX_ERRORS
        out.append(f"<p><b>Cancelled</b>: {shown}{f' and {more:,} more' if more > 0 else ''}</p>")
    return out


def _batches(run: Run) -> str:
    """The run's provider batches (DESIGN §12): state, answered of all, what they saved."""
    if not run.batches:
        return ""
    rows = [
        [
            f"<code>{_e(b.model)}</code>",
            _e(b.state),
            f"{b.succeeded:,} of {b.request_count:,}",
            _e(fmt_cost(b.saved, 0)) if b.saved is not None else "",
        ]
        for b in run.batches.values()
    ]
    return _table(("provider batch", "state", "answered", "saved"), rows)


def _row_cells(run: Run, step: StepInfo, costs: dict[str, Sums]) -> list[str]:
    totals = costs.get(step.name, Sums())
    if step.kind == "group":
        children = [run.steps[c] for c in step.children if c in run.steps]
        state = count_steps(children).text() if children else f"{step.state} (no items yet)"
        attempts = ""
    else:
        state, attempts = step.state, f"{step.attempt}/{step.max_attempts}"
    spent = totals.calls > 0 or totals.unpriced_calls > 0
    return [
        f"<code>{_e(step.name)}</code>",
        _e(state),
        attempts,
        _seconds(step),
        _tokens(totals.tokens) if spent else "",
        _e(fmt_cost(totals.known_cost, totals.unpriced_calls)) if spent else "",
    ]


def _table(header: Iterable[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _steps_table(run: Run, costs: dict[str, Sums]) -> str:
    top = [s for s in run.steps.values() if s.kind != "child"]
    rows = [_row_cells(run, step, costs) for step in top[:MAX_ROWS]]
    table = _table(("step", "state", "attempts", "duration", "tokens", "cost"), rows)
    rest = top[MAX_ROWS:]
    if not rest:
        return table
    rest_steps = [run.steps[c] for s in rest for c in (s.children or [s.name]) if c in run.steps]
    return table + f"<p>… {len(rest):,} more: {_e(count_steps(rest_steps).text())}</p>"


def _models_table(by_model: Mapping[str, Sums]) -> str:
    if not by_model:
        return ""
    rows = [
        [
            f"<code>{_e(model)}</code>",
            f"{t.calls:,}",
            _tokens(t.tokens),
            _e(fmt_cost(t.known_cost, t.unpriced_calls)),
        ]
        for model, t in by_model.items()
    ]
    return _table(("model", "calls", "tokens", "cost"), rows)
