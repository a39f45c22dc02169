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
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter

from .._counts import StepCounts, count_steps
from .._money import NO_MATH_CLASSES, fmt_cost, sum_money
from .._run import Run, StepInfo
from .._runview import status_text
from .._states import FAILED_STATES
from ..reports._cost import dag_order

__all__ = ["MAX_ERRORS", "MAX_ROWS", "Census", "Sums", "census", "static_html", "sums"]

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


def static_html(run: Run, counted: Census | None = None) -> str:
    """The run as script-free HTML (escaped throughout); ``counted``: the run's ``census``,
    when the caller made it."""
    if counted is None:
        counted = census(run)
    parts = [_title(run), f"<p>{_e(counted.counts.text())}</p>"]
    parts += _failures(counted)
    parts.append(_batches(run))
    parts.append(_steps_table(run, counted))
    parts.append(_models_table(_models(run, counted)))
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


@dataclass
class Census:
    """What the static view shows of the steps, from one pass over them (each pass over
    20,000 map children cost ~5 ms in a run's end-of-run snapshot; there were five)."""

    counts: StepCounts  # every step (``count_steps``)
    by_step: dict[str, Sums]  # each step's calls, its fan-out children's in it
    children: dict[str, dict[str, int]]  # a fan-out's children per state
    top: list[StepInfo]  # the steps that are not fan-out children, in the run's order
    discarded: list[StepInfo]
    cancelled: list[str]
    failed_children: list[str]  # the fan-out children discarded or cancelled


@dataclass(slots=True)
class _Tally:
    """A step's, fan-out's or model's calls while they are counted (``census``,
    ``_by_model``); their costs added at the end."""

    calls: int = 0
    tokens: int = 0
    unpriced: int = 0
    costs: list[Decimal] = field(default_factory=list)

    def sums(self) -> Sums:
        return Sums(self.calls, self.tokens, sum_money(self.costs), self.unpriced)


def census(run: Run) -> Census:
    """One pass over the run's steps: the counts per state (``count_steps``' rules), each
    fan-out's children per state, the failed steps, and each step's calls summed from the
    totals the step keeps (``StepInfo.add_call``: replayed and cached calls count in its
    ``calls`` only; a charge for attempts with no answer in its cost only), a fan-out's
    children into it."""
    by_state: dict[str, int] = {}
    children: dict[str, dict[str, int]] = {}
    tallies: dict[str, _Tally] = {}
    top: list[StepInfo] = []
    discarded: list[StepInfo] = []
    cancelled: list[str] = []
    failed_children: list[str] = []
    total = 0
    for name, step in run.steps.items():
        state = step.state
        if state in FAILED_STATES:  # a fan-out group's own state included
            if state == "discarded":
                discarded.append(step)
            else:
                cancelled.append(name)
            if step.kind == "child":
                failed_children.append(name)
        if step.kind == "group":
            top.append(step)
            if step.unstored:  # a map's items with no child stored yet: pending
                by_state["pending"] = by_state.get("pending", 0) + step.unstored
                total += step.unstored
            continue
        by_state[state] = by_state.get(state, 0) + 1
        total += 1
        parent = step.parent
        if step.kind != "child":
            top.append(step)
        elif parent is not None:
            group = children.get(parent)
            if group is None:
                group = children[parent] = {}
            group[state] = group.get(state, 0) + 1
        base = parent or name
        if step.calls or step.cost:
            tally = tallies.get(base)
            if tally is None:
                tally = tallies[base] = _Tally()
            usage = step.usage
            tally.calls += step.calls - step.replayed_calls - step.cached_calls
            tally.tokens += usage.input_tokens + usage.output_tokens
            tally.unpriced += step.unpriced_calls
            tally.costs.append(step.cost)
    by_step = {base: tally.sums() for base, tally in tallies.items()}
    counts = StepCounts(by_state, total)
    return Census(counts, by_step, children, top, discarded, cancelled, failed_children)


def sums(run: Run) -> tuple[dict[str, Sums], dict[str, Sums]]:
    """The run's calls summed per step (fan-out children into their step, as
    ``report.by_step()``: from the totals each step keeps) and per model (in
    ``report.by_model()``'s order)."""
    return census(run).by_step, _by_model(run)


def _models(run: Run, counted: Census) -> dict[str, Sums]:
    """``_by_model``; for a run whose calls all name one model, each of a step of the run
    (as they always are), that model's sums are the steps' (``census``: the same rules),
    without the pass over its calls (a third of a 20,000-call run's static view)."""
    calls = run.calls
    models = set(map(_MODEL, calls))
    if len(models) != 1 or not set(map(_STEP, calls)) <= run.steps.keys():
        return _by_model(run)
    totals = list(counted.by_step.values())
    return {
        models.pop(): Sums(
            sum(t.calls for t in totals),
            sum(t.tokens for t in totals),
            sum_money(t.known_cost for t in totals),
            sum(t.unpriced_calls for t in totals),
        )
    }


_MODEL, _STEP = attrgetter("model"), attrgetter("step")


def _by_model(run: Run) -> dict[str, Sums]:
    """The run's calls summed per model, in ``report.by_model()``'s order, in one pass.

    ``run.report()`` made a row per (step, model), then grouped the rows twice: at 5,000
    map children, most of the time the end-of-run snapshot took. The pass counts into one
    slot per model and keeps its costs, added at the end (``sum_money``, exact).
    """
    tallies: dict[str, _Tally] = {}
    for call in run.calls:
        tally = tallies.get(call.model)
        if tally is None:
            tally = tallies[call.model] = _Tally()
        if call.replayed or call.cached:
            continue
        cost = call.cost
        if cost is not None and call.is_unanswered:  # a charge, not a call
            tally.costs.append(cost)
            continue
        usage = call.usage
        tally.calls += 1
        tally.tokens += usage.input_tokens + usage.output_tokens
        if cost is None:
            tally.unpriced += 1
        else:
            tally.costs.append(cost)
    by_model = {model: tally.sums() for model, tally in tallies.items()}
    if len(by_model) < 2:
        return by_model
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
    return {model: by_model[model] for model in sorted(rank, key=rank.__getitem__)}


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


def _failures(counted: Census) -> list[str]:
    discarded, cancelled = counted.discarded, counted.cancelled
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


def _row_cells(step: StepInfo, counted: Census) -> list[str]:
    totals = counted.by_step.get(step.name, Sums())
    if step.kind == "group":
        children = counted.children.get(step.name)
        state = (
            StepCounts(children, sum(children.values())).text()
            if children
            else f"{step.state} (no items yet)"
        )
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


def _steps_table(run: Run, counted: Census) -> str:
    top = counted.top
    rows = [_row_cells(step, counted) for step in top[:MAX_ROWS]]
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
