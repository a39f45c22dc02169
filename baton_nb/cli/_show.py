"""A run as text: steps layer by layer (topological columns) with states, errors and cost."""

from __future__ import annotations

from decimal import Decimal

from .._money import fmt_money, plural
from .._run import Run, StepInfo
from .._runview import status_text
from .._states import NodeKind
from ..reports import local_time, text_table

__all__ = ["layers", "render_run"]


def layers(run: Run) -> list[list[str]]:
    """Top-level steps grouped by depth: a step sits one layer after its deepest dep."""
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            deps = [d for d in run.steps[name].deps if d in run.steps and d not in seen]
            depth[name] = 1 + max((depth_of(d, seen | {name}) for d in deps), default=-1)
        return depth[name]

    top = [s.name for s in run.steps.values() if s.kind != NodeKind.CHILD]
    out: list[list[str]] = []
    for name in top:
        level = depth_of(name)
        while len(out) <= level:
            out.append([])
        out[level].append(name)
    return out


def _attempts(step: StepInfo) -> str:
    if step.kind == NodeKind.GROUP:
        return ""
    return f"{step.attempt}/{step.max_attempts}"


def _money(step: StepInfo, cost: Decimal, unpriced: int) -> str:
    if not step.calls and step.kind != NodeKind.GROUP:
        return ""
    text = fmt_money(cost)
    return text + "+?" if unpriced else text


def _row(run: Run, step: StepInfo, indent: str) -> list[str]:
    totals = run.step_totals(step.name)
    cost, unpriced, calls, tokens = totals.cost, totals.unpriced_calls, totals.calls, totals.usage
    duration = "" if step.duration is None else f"{step.duration:.2f}s"
    deps = ", ".join(step.deps)
    return [
        step.state,
        indent + step.name,
        deps,
        _attempts(step),
        duration,
        str(calls) if calls else "",
        f"{tokens.total_tokens:,}" if calls else "",
        _money(step, cost, unpriced) if calls else "",
        step.ran_on,
    ]


def _columns(row: list[str], layer: str, workers: bool) -> list[str]:
    """A step's columns, its layer, then (runs on workers) the worker that ran it."""
    *shown, ran_on = row
    return [*shown, layer, ran_on] if workers else [*shown, layer]


def render_run(run: Run) -> str:
    """``baton-nb show``: header, one line per step (children indented), then errors."""
    duration = ""
    if run.started_at is not None and run.finished_at is not None and run.done:
        duration = f" in {(run.finished_at - run.started_at).total_seconds():.2f}s"
    head = (
        f"run {run.id}  workflow {run.workflow!r}  {status_text(run)}{duration}\n"
        f"started {local_time(run.started_at or run.created_at)}  "
        f"{plural(len([c for c in run.calls if not c.replayed]), 'call')}  "
        f"cost {run.cost_text()}\n"
        f"steps: {run.counts().text()}"
    )
    rows: list[list[str]] = []
    workers = any(s.ran_on for s in run.steps.values())
    for level, names in enumerate(layers(run)):
        for name in names:
            step = run.steps[name]
            rows.append(_columns(_row(run, step, ""), str(level), workers))
            rows.extend(_columns(_row(run, run.steps[c], "  "), "", workers) for c in step.children)
    header: tuple[str, ...] = (
        "state", "step", "deps", "attempt", "time", "calls", "tokens", "cost_usd", "layer",
    )  # fmt: skip
    if workers:  # a run submitted to workers: which one ran each step, last
        header = (*header, "ran_on")
    table = text_table(header, rows, left=3)
    errors = [f"  {s.name}: {s.error}" for s in run.steps.values() if s.error]
    parts = [head, "", table]
    if errors:
        parts += ["", "errors:", *errors]
    history = _history(run)
    if history:
        parts += ["", "attempts (retried steps):", *history]
    return "\n".join(parts)


def _history(run: Run) -> list[str]:
    """Each retried step's attempts: number, how it ended, how long, its error."""
    lines = []
    for step in run.steps.values():
        for attempt in step.attempts:
            error = f"  {attempt.error}" if attempt.error else ""
            lines.append(
                f"  {step.name} #{attempt.attempt}  {attempt.state}  {attempt.duration:.2f}s{error}"
            )
    return lines
