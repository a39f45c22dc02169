"""``bn.CostReport``: cost and tokens per (run, step, model), CSV and tables."""

from __future__ import annotations

import csv
import html
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._usage import Usage

if TYPE_CHECKING:
    from .._run import CallRecord, Run

__all__ = ["CSV_COLUMNS", "CostReport", "CostRow"]

CSV_COLUMNS = (
    "run_id",
    "workflow",
    "step",
    "model",
    "provider",
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "replayed_calls",
)


@dataclass
class CostRow:
    """Totals of one (run, step, model). Replayed calls are counted apart, never twice."""

    run_id: str
    workflow: str
    step: str
    model: str
    provider: str
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal | None = Decimal(0)  # None: some call had no known price
    latency_ms: float = 0.0
    replayed_calls: int = 0

    def add(self, call: CallRecord) -> None:
        if call.replayed:
            self.replayed_calls += 1
            return
        self.calls += 1
        self.usage = self.usage + call.usage
        self.latency_ms += call.latency_ms
        if call.cost is None or self.cost is None:
            self.cost = None
        else:
            self.cost += call.cost

    def as_record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "step": self.step,
            "model": self.model,
            "provider": self.provider,
            "calls": self.calls,
            **self.usage.to_dict(),
            "cost_usd": self.cost,
            "latency_ms": round(self.latency_ms, 3),
            "replayed_calls": self.replayed_calls,
        }


class CostReport:
    """What LLM calls cost, per (run, step, model)."""

    def __init__(self, rows: Sequence[CostRow]) -> None:
        self.rows = list(rows)

    @classmethod
    def from_runs(cls, runs: Iterable[Run]) -> CostReport:
        rows: dict[tuple[str, str, str], CostRow] = {}
        for run in runs:
            for call in run.calls:
                key = (run.id, call.step, call.model)
                if key not in rows:
                    rows[key] = CostRow(run.id, run.workflow, call.step, call.model, call.provider)
                rows[key].add(call)
        return cls(list(rows.values()))

    @property
    def total(self) -> Decimal:
        """USD of every priced call (see ``complete`` for whether any price was unknown)."""
        return sum((r.cost for r in self.rows if r.cost is not None), Decimal(0))

    @property
    def complete(self) -> bool:
        """False if some call's model had no known price: the total is then a lower bound."""
        return all(r.cost is not None for r in self.rows)

    @property
    def tokens(self) -> Usage:
        total = Usage()
        for row in self.rows:
            total = total + row.usage
        return total

    def _group(self, key: str) -> dict[str, CostRow]:
        out: dict[str, CostRow] = {}
        for row in self.rows:
            name = getattr(row, key)
            if name not in out:
                out[name] = CostRow("*", row.workflow, row.step if key == "step" else "*",
                                    row.model if key == "model" else "*", row.provider)
            agg = out[name]
            agg.calls += row.calls
            agg.usage = agg.usage + row.usage
            agg.latency_ms += row.latency_ms
            agg.replayed_calls += row.replayed_calls
            agg.cost = None if agg.cost is None or row.cost is None else agg.cost + row.cost
        return out

    def by_step(self) -> dict[str, CostRow]:
        return self._group("step")

    def by_model(self) -> dict[str, CostRow]:
        return self._group("model")

    def to_records(self) -> list[dict[str, Any]]:
        return [r.as_record() for r in self.rows]

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the CSV (contract columns, decimal strings) to ``path``; return its text."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in self.to_records():
            cost = record["cost_usd"]
            record["cost_usd"] = "" if cost is None else format(cost, "f")
            writer.writerow([record[c] for c in CSV_COLUMNS])
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        return text

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "CostReport.to_pandas() needs pandas: pip install 'baton-nb[pandas]'"
            ) from exc
        return pd.DataFrame(self.to_records(), columns=list(CSV_COLUMNS))

    def __str__(self) -> str:
        lines = [f"{'step':<32} {'model':<36} {'calls':>5} {'tokens':>9} {'cost_usd':>14}"]
        for r in self.rows:
            cost = "unknown" if r.cost is None else format(r.cost, "f")
            lines.append(f"{r.step:<32} {r.model:<36} {r.calls:>5} {r.usage.total_tokens:>9} {cost:>14}")
        mark = "" if self.complete else " (incomplete: some prices unknown)"
        lines.append(f"{'total':<32} {'':<36} {sum(r.calls for r in self.rows):>5} "
                     f"{self.tokens.total_tokens:>9} {format(self.total, 'f'):>14}{mark}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in ("step", "model", "calls", "tokens", "cost_usd"))
        body = "".join(
            f"<tr><td>{html.escape(r.step)}</td><td>{html.escape(r.model)}</td><td>{r.calls}</td>"
            f"<td>{r.usage.total_tokens}</td><td>{'unknown' if r.cost is None else r.cost}</td></tr>"
            for r in self.rows
        )
        return f"<table><tr>{head}</tr>{body}</table><p>Total: ${self.total}</p>"
