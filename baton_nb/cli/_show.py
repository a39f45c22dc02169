"""A run as text: steps layer by layer (topological columns) with states, errors and cost."""

from __future__ import annotations

from .._counts import count_steps
from .._money import fmt_money, plural
from .._run import Run, StepInfo
from .._runview import status_text
from .._states import NodeKind
from ..reports import Totals, local_time, text_table
from ..store import LogRow

__all__ = ["CHILDREN_SHOWN", "layers", "render_run", "shown_children"]


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


def _money(totals: Totals) -> str:
    """The step's cost: its paid calls' and the charges of attempts with no answer."""
    if not totals.calls and not totals.known_cost:
        return ""
    text = fmt_money(totals.known_cost)
    return text + "+?" if totals.unpriced_calls else text


def step_call_totals(run: Run) -> dict[str, Totals]:
    """Each step's calls, counted as ``report`` counts them (``reports.Totals``): ``calls``
    the paid ones; replayed calls (answers read back from the store by a retry or a
    resume) and answers from the response cache apart, never in the tokens or the cost.
    A step's row adds its fan-out children's (``_row``)."""
    by_step: dict[str, Totals] = {}
    for call in run.calls:
        totals = by_step.get(call.step)
        if totals is None:
            totals = by_step[call.step] = Totals()
        totals.add_call(call)
    return by_step


def _row(run: Run, step: StepInfo, indent: str, calls: dict[str, Totals]) -> list[str]:
    totals = Totals()
    for name in (step.name, *step.children):
        if name in calls:
            totals.merge(calls[name])
    duration = "" if step.duration is None else f"{step.duration:.2f}s"
    deps = ", ".join(step.deps)
    return [
        step.state,
        indent + step.name,
        deps,
        _attempts(step),
        duration,
        str(totals.calls) if totals.calls else "",
        str(totals.replayed_calls) if totals.replayed_calls else "",
        str(totals.cached_calls) if totals.cached_calls else "",
        f"{totals.usage.total_tokens:,}" if totals.calls else "",
        _money(totals),
        step.ran_on,
    ]


_HEADER = (
    "state", "step", "deps", "attempt", "time", "calls", "replayed", "cached", "tokens",
    "cost_usd", "layer", "ran_on",
)  # fmt: skip


def _columns(row: list[str], layer: str, shown: tuple[str, ...]) -> list[str]:
    """A step's columns named in ``shown`` (its layer among them)."""
    *cells, ran_on = row
    values = dict(zip(_HEADER, [*cells, layer, ran_on], strict=True))
    return [values[name] for name in shown]


def _calls_text(totals: Totals) -> str:
    """The run's calls as ``report`` says them: paid ones, then replayed and cached apart."""
    apart = []
    if totals.replayed_calls:
        apart.append(f"{totals.replayed_calls} replayed, not charged again")
    if totals.cached_calls:
        apart.append(f"{totals.cached_calls} answered from the cache")
    text = plural(totals.calls, "call")
    return f"{text} ({'; '.join(apart)})" if apart else text


CHILDREN_SHOWN = 20  # a fan-out's children listed by ``show`` unless ``--all``


def shown_children(step: StepInfo, run: Run, limit: int | None) -> tuple[list[str], str]:
    """The children of ``step`` that ``show`` lists, in their order, and a line saying what
    the others are ('' when every child is listed): with more than ``limit``, the children
    that did not complete (the ones a reader looks for) and the first ones, ``limit`` in
    all; the others counted by state (a 1,000-item map printed 1,000 lines)."""
    children = [c for c in step.children if c in run.steps]
    if limit is None or len(children) <= limit:
        return children, ""
    unfinished = [c for c in children if run.steps[c].state != "completed"][:limit]
    completed = [c for c in children if run.steps[c].state == "completed"]
    listed = {*unfinished, *completed[: limit - len(unfinished)]}
    shown = [c for c in children if c in listed]
    rest = count_steps(run.steps[c] for c in children if c not in listed)
    states = rest.text().rsplit(" of ", 1)[0]  # "30 completed · 1 cancelled"
    more = (
        f"{step.name}: {len(shown):,} of its {len(children):,} children listed; "
        f"{rest.total:,} more: {states} (baton-nb show --all lists every child)"
    )
    return shown, more


def _unanswered(totals: Totals) -> str:
    """The part of the cost that bought no answer, as the report's headline says it."""
    if not totals.unanswered:
        return ""
    return f" (${fmt_money(totals.unanswered)} of it no answer, counted at the worst case)"


def render_run(run: Run, children: int | None = CHILDREN_SHOWN) -> str:
    """``baton-nb show``: header, one line per step (children indented, at most
    ``children`` a fan-out unless None), then errors."""
    duration = ""
    if run.started_at is not None and run.finished_at is not None and run.done:
        duration = f" in {(run.finished_at - run.started_at).total_seconds():.2f}s"
    calls = step_call_totals(run)
    everything = Totals()
    for totals in calls.values():
        everything.merge(totals)
    head = (
        f"run {run.id}  workflow {run.workflow!r}  {status_text(run)}{duration}\n"
        f"started {local_time(run.started_at or run.created_at)}  "
        f"{_calls_text(everything)}  "
        f"cost {run.cost_text()}{_unanswered(everything)}\n"
        f"steps: {run.counts().text()}"
    )
    # Columns only some runs need: replayed and cached calls when there are some, and the
    # worker that ran each step for a run submitted to workers (last).
    hidden = {
        "replayed": not everything.replayed_calls,
        "cached": not everything.cached_calls,
        "ran_on": not any(s.ran_on for s in run.steps.values()),
    }
    header = tuple(name for name in _HEADER if not hidden.get(name, False))
    rows: list[list[str]] = []
    in_part: list[str] = []  # fan-outs whose children are listed in part
    for level, names in enumerate(layers(run)):
        for name in names:
            step = run.steps[name]
            rows.append(_columns(_row(run, step, "", calls), str(level), header))
            listed, more = shown_children(step, run, children)
            rows.extend(_columns(_row(run, run.steps[c], "  ", calls), "", header) for c in listed)
            if more:
                in_part.append(more)
    table = text_table(header, rows, left=3)
    errors = _errors(run, children)
    parts = [head, "", table, *in_part]
    if errors:
        parts += ["", "errors:", *errors, _tracebacks(run)]
    history = _history(run)
    if history:
        parts += ["", "attempts (retried steps):", *history]
    return "\n".join(parts)


_NAMED = 3  # steps named before "and N more" when several share an error


def _errors(run: Run, limit: int | None) -> list[str]:
    """One line per distinct error, naming the steps that ended with it: a budget stop or a
    cancel gives every step it cancelled the same long message, said once here. At most
    ``limit`` of them (None: all), the others counted: a map's items fail each with its
    own message (1,000 lines for a 1,000-item map)."""
    steps: dict[str, list[str]] = {}
    for step in run.steps.values():
        if step.error:
            steps.setdefault(step.error, []).append(step.name)
    lines = []
    shown = list(steps.items())
    if limit is not None and len(shown) > limit:
        rest = shown[limit:]
        shown = shown[:limit]
        failed = sum(len(names) for _, names in rest)
        more = (
            f"  … {len(rest):,} other errors ({plural(failed, 'step')}; "
            "baton-nb show --all lists every one)"
        )
    else:
        more = ""
    for error, names in shown:
        if len(names) == 1:
            lines.append(f"  {names[0]}: {error}")
            continue
        listed = ", ".join(names[:_NAMED])
        others = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
        lines.append(f"  {listed}{others} ({len(names)} steps): {error}")
    return [*lines, more] if more else lines


def _tracebacks(run: Run) -> str:
    """Where the failed steps' tracebacks are: only their errors' messages are stored,
    unless the step ran with ``debug=True`` (its captured context keeps each traceback)."""
    kept = sorted({log.step for log in run.logs if _is_traceback(log)})
    where = f'run = await bn.Run.load("{run.id}", db=...)'
    if kept:
        return f"  tracebacks of {', '.join(kept)}: run.context(step) in Python ({where})"
    return (
        "  (messages only: a step run with debug=True keeps each failed attempt's traceback,\n"
        f"   read with run.context(step) in Python, {where})"
    )


def _is_traceback(log: LogRow) -> bool:
    return log.kind == "error" and '"traceback"' in (log.data or "")


def _history(run: Run) -> list[str]:
    """Each retried step's attempts: number, how it ended, how long, its error. A step that
    ended at its first attempt is not retried: its error is under ``errors:`` already."""
    lines = []
    for step in run.steps.values():
        if not any(attempt.state == "retryable" for attempt in step.attempts):
            continue
        for attempt in step.attempts:
            error = f"  {attempt.error}" if attempt.error else ""
            lines.append(
                f"  {step.name} #{attempt.attempt}  {attempt.state}  {attempt.duration:.2f}s{error}"
            )
    return lines
