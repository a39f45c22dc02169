"""``bn.CostReport``: cost and tokens per (run, step, model), CSV and tables."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, overload

from .._money import LowerBound, fmt_money, normalize_money, plural, sum_money
from .._runview import SpendState, spend_state
from .._states import NodeKind
from .._usage import Usage
from ..store import FanoutChild, StatAggregate
from ._render import breakdown_html, breakdown_text, report_html, report_text
from ._rows import CSV_COLUMNS, CostRow, ModelComparison, Totals

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["GROUP_KEYS", "Breakdown", "CostReport"]

# What a row is summed under per grouping: ``by_step`` (fan-out children into their step),
# ``by_model``, ``by_run``, and the CLI's ``report --by ... --csv``.
GROUP_KEYS: dict[str, Callable[[CostRow], str]] = {
    "step": lambda r: r.base_step,
    "model": lambda r: r.model,
    "run": lambda r: r.run_id,
}


class Breakdown(Mapping[str, Totals]):
    """Totals keyed by one dimension (step, model or run), in first-seen order.

    A read-only mapping (``report.by_model()["openai/gpt-4o-mini"].cost``) that renders
    as a table in a notebook and as text with ``print``.
    """

    def __init__(self, key: str, items: Mapping[str, Totals]) -> None:
        self.key = key
        self._items = dict(items)

    def __getitem__(self, name: str) -> Totals:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: ${v.cost_text()}" for k, v in self._items.items())
        return f"<Breakdown by {self.key}: {{{body}}}>"

    def __str__(self) -> str:
        return breakdown_text(self.key, self._items)

    def _repr_html_(self) -> str:
        return breakdown_html(self.key, self._items)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per key: calls, tokens, ``cost_usd`` (Decimal or None), latency."""
        return [
            {
                self.key: name,
                "calls": t.calls,
                **t.usage.to_dict(),
                "cost_usd": t.cost,
                "latency_ms": round(t.latency_ms, 3),
                "replayed_calls": t.replayed_calls,
                "unpriced_calls": t.unpriced_calls,
            }
            for name, t in self._items.items()
        ]


class _RowTotals:
    """Totals over a report's rows (``CostReport``'s own, kept apart for its size)."""

    rows: list[CostRow]

    @property
    def total(self) -> Decimal:
        """USD of every priced call; a lower bound when ``complete`` is False, then a
        ``LowerBound`` (a ``Decimal`` whose repr says how many calls it misses)."""
        total = normalize_money(sum_money(r.known_cost for r in self.rows))
        unpriced = self.unpriced_calls
        return total if unpriced == 0 else LowerBound(total, unpriced)

    @property
    def complete(self) -> bool:
        """False if some call's model had no known price (``total`` is then a lower bound)."""
        return self.unpriced_calls == 0

    @property
    def unpriced_calls(self) -> int:
        return sum(r.unpriced_calls for r in self.rows)

    @property
    def calls(self) -> int:
        """Calls paid for (replayed calls not included)."""
        return sum(r.calls for r in self.rows)

    @property
    def replayed_calls(self) -> int:
        return sum(r.replayed_calls for r in self.rows)

    @property
    def cached_calls(self) -> int:
        """Calls answered from the response cache (cost 0; not in ``calls``)."""
        return sum(r.cached_calls for r in self.rows)

    @property
    def saved(self) -> Decimal:
        """USD the cached calls would have cost."""
        return normalize_money(sum_money(r.saved for r in self.rows))

    @property
    def tokens(self) -> Usage:
        """Token totals of the calls paid for (replayed calls not included)."""
        total = Usage()
        for row in self.rows:
            total = total + row.usage
        return total

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r.run_id for r in self.rows))

    def totals(self) -> Totals:
        """Everything summed into one ``Totals``."""
        out = Totals()
        for row in self.rows:
            out.merge(row)
        return out


class CostReport(_RowTotals):
    """What the LLM calls of one or more runs cost, per (run, step, model).

    Build it with ``run.report()`` or ``await bn.report(db=...)``. Replayed calls
    (answered from the store on a retry or resume) are counted apart in
    ``replayed_calls`` and never add tokens or cost twice. Calls to models without a
    known price make the affected costs ``None`` ("unknown") and ``complete`` False;
    ``total`` then sums the calls that were priced (a lower bound).
    """

    def __init__(self, rows: Sequence[CostRow], fanout: Sequence[FanoutChild] = ()) -> None:
        self.rows: list[CostRow] = list(rows)
        self.fanout_children: list[FanoutChild] = list(fanout)
        # run id -> its budget (DESIGN §11) as the run held it: reports of runs in memory
        self.budgets: dict[str, SpendState] = {}

    # ── building ──────────────────────────────────────────────────────────────

    @classmethod
    def from_runs(cls, runs: Iterable[Run], *, reprice: bool = False) -> CostReport:
        """A report of runs held in memory (``run.report()``); ``reprice=True`` prices each
        call again with today's tables (`CallRecord.repriced`)."""
        rows: list[CostRow] = []
        children: list[FanoutChild] = []
        budgets: dict[str, SpendState] = {}
        for run in runs:
            rows.extend(_rows_of_run(run, reprice))
            children.extend(_children_of_run(run))
            spend = spend_state(run)
            if spend is not None:
                budgets[run.id] = spend
        report = cls(rows, children)
        report.budgets = budgets
        return report

    @classmethod
    def from_aggregates(
        cls, rows: Iterable[StatAggregate], children: Iterable[FanoutChild] = ()
    ) -> CostReport:
        """A report from ``RunStore.aggregate_stats`` and ``RunStore.fanout_children`` rows."""
        return cls([CostRow.from_aggregate(r) for r in rows], list(children))

    # ── breakdowns ────────────────────────────────────────────────────────────

    def by_step(self, *, fanout_children: bool = False) -> Breakdown:
        """Totals per step. Fan-out children (``answer[model]``) are summed into their step
        (``answer``) unless ``fanout_children=True``."""
        return self._group("step", (lambda r: r.step) if fanout_children else GROUP_KEYS["step"])

    def by_model(self) -> Breakdown:
        """Totals per model (``provider/model``)."""
        return self._group("model", GROUP_KEYS["model"])

    def by_run(self) -> Breakdown:
        """Totals per run id."""
        return self._group("run", GROUP_KEYS["run"])

    def _group(self, key: str, name_of: Any) -> Breakdown:
        out: dict[str, Totals] = {}
        for row in self.rows:
            out.setdefault(name_of(row), Totals()).merge(row)
        return Breakdown(key, out)

    def fanout(self) -> dict[str, dict[str, ModelComparison]]:
        """Multi-model fan-out steps, models side by side: step -> model -> comparison
        (cost, tokens and latency of its calls; children, failures and retries)."""
        out: dict[str, dict[str, ModelComparison]] = {}

        def slot(step: str, model: str) -> ModelComparison:
            return out.setdefault(step, {}).setdefault(model, ModelComparison(model=model))

        for child in self.fanout_children:
            slot(child.parent, child.model).add_child(child)
        for row in self.rows:
            if row.parent is not None and row.step == f"{row.parent}[{row.model}]":
                slot(row.parent, row.model).merge(row)
        return out

    # ── export ────────────────────────────────────────────────────────────────

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per (run, step, model) with the CSV columns; ``cost_usd`` is the
        row's known cost (a ``Decimal``), ``None`` only when none of its calls was priced;
        ``unpriced_calls`` counts the calls it leaves out."""
        return [r.as_record() for r in self.rows]

    @overload
    def to_csv(self, path: None = None) -> str: ...

    @overload
    def to_csv(self, path: str | os.PathLike[str]) -> None: ...

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write the CSV to ``path`` (UTF-8, header row) and return None, as pandas does
        (a cell ending in ``report.to_csv("costs.csv")`` shows nothing); with no path,
        return the CSV's text.

        Columns, in order: ``run_id, workflow, step, model, provider, calls,
        input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, cost_usd, latency_ms, replayed_calls``, then
        ``cache_write_1h_tokens, web_search_requests, fees_usd, price_source,
        price_model, cached_calls, saved_usd, unanswered_usd``. ``cost_usd`` (which
        includes ``fees_usd``, the per-request fees such as web searches) is a plain
        decimal string (exact, no float rounding), empty when the price is unknown.
        ``price_source`` says where the price came from (``genai-prices 0.2.5``,
        ``baton_nb override``, ``user file …``, ``reported by openrouter``),
        ``price_model`` which price entry the model matched. ``cached_calls`` were
        answered from the response cache (cost 0, not in ``calls``), ``saved_usd`` is what
        they would have cost. ``unanswered_usd`` is the part of ``cost_usd`` charged for
        attempts with no answer, at the call's worst case.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in self.to_records():
            for money in ("cost_usd", "fees_usd", "saved_usd", "unanswered_usd"):
                value = record[money]
                record[money] = "" if value is None else fmt_money(value)
            writer.writerow([record[c] for c in CSV_COLUMNS])
        text = buf.getvalue()
        if path is None:
            return text
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        return None

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (CSV columns; ``cost_usd`` holds Decimals, and
        ``None`` for a row with no priced call, which pandas' ``sum()`` skips by default: use
        ``sum(skipna=False)``). ``frame.attrs`` carries ``complete`` and ``unpriced_calls``
        (as the report's), so a frame passed on still says that its costs miss some."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "CostReport.to_pandas() needs pandas, which is optional: "
                "pip install 'baton-nb[pandas]'"
            ) from exc
        frame = pd.DataFrame(self.to_records(), columns=list(CSV_COLUMNS))
        frame.attrs.update(complete=self.complete, unpriced_calls=self.unpriced_calls)
        return frame

    # ── display ───────────────────────────────────────────────────────────────

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        mark = "" if self.complete else f" (+{plural(self.unpriced_calls, 'unpriced call')})"
        return (
            f"<CostReport {plural(len(self.run_ids), 'run')}, {plural(len(self.rows), 'row')}, "
            f"{plural(self.calls, 'call')}, ${fmt_money(self.total)}{mark}>"
        )

    def __str__(self) -> str:
        return report_text(self)

    def _repr_html_(self) -> str:
        return report_html(self)


def _rows_of_run(run: Run, reprice: bool = False) -> list[CostRow]:
    rows: dict[tuple[str, str], CostRow] = {}
    for call in run.calls:
        if reprice and not call.replayed:
            call = call.repriced()
        key = (call.step, call.model)
        if key not in rows:
            info = run.steps.get(call.step)
            rows[key] = CostRow(
                run_id=run.id,
                workflow=run.workflow,
                step=call.step,
                model=call.model,
                provider=call.provider,
                parent=info.parent if info is not None else None,
            )
        rows[key].add_call(call)
    order = dag_order(run)
    return sorted(rows.values(), key=lambda r: order.get(r.step, (len(order), 0)))


def dag_order(run: Run) -> dict[str, tuple[int, int]]:
    """Sort keys of a run's steps: DAG order (the order the run stored its steps), a fan-out
    child at its group's place, map items in item order, models in the declared order.

    Map children are stored when their items are known, after every step of the run: by
    storage order alone they would come last. ``Store.stats_by_run_step_model`` sorts the
    same way in SQL.
    """
    top = {name: i for i, name in enumerate(n for n, s in run.steps.items() if s.kind != "child")}
    keys: dict[str, tuple[int, int]] = {name: (i, -1) for name, i in top.items()}
    for position, (name, step) in enumerate(run.steps.items()):
        if step.kind == "child" and step.parent in top:
            ordinal = step.item_index if step.item_index is not None else position
            keys[name] = (top[step.parent], ordinal)
    return keys


def _children_of_run(run: Run) -> list[FanoutChild]:
    return [
        FanoutChild(run.id, s.parent, s.name, s.model, s.state, s.attempt, s.error)
        for s in run.steps.values()
        if s.kind == NodeKind.CHILD and s.parent is not None and s.model is not None
    ]
