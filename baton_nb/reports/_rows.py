"""Rows of a cost report: totals of LLM calls, keyed by (run, step, model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .._money import add_money, fmt_money, normalize_money
from .._states import FAILED_STATES
from .._usage import Usage
from ..store import CallRecord, FanoutChild, StatAggregate

__all__ = [
    "CSV_COLUMNS",
    "CostRow",
    "FanoutChild",
    "ModelComparison",
    "Totals",
]

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
    # added after the columns of DESIGN §8, which keep their order
    "cache_write_1h_tokens",
    "web_search_requests",
    "fees_usd",
    "price_source",
    "price_model",
    # the response cache (DESIGN §11): calls answered from it, and what they would have cost
    "cached_calls",
    "saved_usd",
    # attempts that reached the provider with no answer (timed out, cut, cancelled), counted
    # by a budget at their worst case: within cost_usd, not in calls or latency_ms
    "unanswered_usd",
    # calls of unknown price: not in cost_usd (empty when none of the row's calls was priced)
    "unpriced_calls",
)


@dataclass(kw_only=True, repr=False)
class Totals:
    """Sums over LLM calls. Replayed calls (answered from the store) are counted in
    ``replayed_calls`` only: their tokens, cost and latency were paid once, by the call
    they replay, and are never added twice."""

    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    known_cost: Decimal = field(default_factory=Decimal)
    fees: Decimal = field(default_factory=Decimal)
    unpriced_calls: int = 0
    estimated_calls: int = 0
    latency_ms: float = 0.0
    replayed_calls: int = 0
    cached_calls: int = 0  # answered from the response cache: cost 0, not in ``calls``
    saved: Decimal = field(default_factory=Decimal)  # what they would have cost
    # provider batches: paid calls sent in one (within ``calls``, at batch rates), and
    # replayed calls that are their steps reading the answers back (within ``replayed_calls``)
    batch_calls: int = 0
    batch_replays: int = 0
    # where the prices came from and the price entries matched, in first-seen order
    price_sources: dict[str, None] = field(default_factory=dict)
    price_models: dict[str, None] = field(default_factory=dict)
    # attempts with no answer, counted at their worst case: within the cost, not a call
    unanswered: Decimal = field(default_factory=Decimal)

    @property
    def cost(self) -> Decimal | None:
        """USD, or ``None`` (unknown) if any call's model has no known price."""
        return None if self.unpriced_calls else normalize_money(self.known_cost)

    @property
    def complete(self) -> bool:
        """True if every call was priced (``cost`` is then exact, not a lower bound)."""
        return self.unpriced_calls == 0

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms / self.calls if self.calls else None

    def add_call(self, call: CallRecord) -> None:
        pricing = call.pricing
        batch = pricing is not None and pricing.batch
        if call.replayed:
            self.replayed_calls += 1
            self.batch_replays += batch
            return
        if call.cached:
            self.cached_calls += 1
            self.saved = add_money(self.saved, call.saved or Decimal(0))
            return
        if call.is_unanswered and call.cost is not None:  # a charge, not a call
            self.known_cost = add_money(self.known_cost, call.cost)
            self.unanswered = add_money(self.unanswered, call.cost)
            return
        self.calls += 1
        self.batch_calls += batch
        self.usage = self.usage + call.usage
        self.latency_ms += call.latency_ms
        self.estimated_calls += int(call.estimated)
        if call.cost is None:
            self.unpriced_calls += 1
        else:
            self.known_cost = add_money(self.known_cost, call.cost)
        if pricing is not None:
            self.fees = add_money(self.fees, pricing.fees or Decimal(0))
            if pricing.source:
                self.price_sources[pricing.source] = None
            if pricing.model:
                self.price_models[pricing.model] = None

    def merge(self, other: Totals) -> None:
        self.calls += other.calls
        self.usage = self.usage + other.usage
        self.known_cost = add_money(self.known_cost, other.known_cost)
        self.fees = add_money(self.fees, other.fees)
        self.unpriced_calls += other.unpriced_calls
        self.estimated_calls += other.estimated_calls
        self.latency_ms += other.latency_ms
        self.replayed_calls += other.replayed_calls
        self.batch_calls += other.batch_calls
        self.batch_replays += other.batch_replays
        self.cached_calls += other.cached_calls
        self.saved = add_money(self.saved, other.saved)
        self.unanswered = add_money(self.unanswered, other.unanswered)
        self.price_sources.update(other.price_sources)
        self.price_models.update(other.price_models)

    @property
    def price_source(self) -> str:
        """Where the prices came from (``genai-prices 0.2.5``, ``baton_nb override``,
        ``user file …``, ``reported by openrouter``); ``; ``-separated if several."""
        return "; ".join(self.price_sources)

    @property
    def price_model(self) -> str:
        """The price entries matched (``openai/gpt-4o``); ``; ``-separated if several."""
        return "; ".join(self.price_models)

    def cost_text(self) -> str:
        """``0.0123``, ``unknown``, or ``0.0123+?`` when some calls had no price."""
        if not self.unpriced_calls:
            return fmt_money(self.known_cost)
        if self.known_cost == 0:
            return "unknown"
        return fmt_money(self.known_cost) + "+?"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_fields())})"

    def _repr_fields(self) -> list[str]:
        """The fields, readable: calls and cost always; tokens, latency and the other counts
        when not zero; money as text; the price sources and entries as lists."""
        usage = ", ".join(f"{k}={v}" for k, v in self.usage.to_dict().items() if v)
        fields = [f"calls={self.calls}", f"cost={self.cost_text()}"]
        if usage:
            fields.append(f"usage=Usage({usage})")
        if self.latency_ms:
            fields.append(f"latency_ms={self.latency_ms:,.1f}")
        counts = ("unpriced_calls", "estimated_calls", "replayed_calls", "cached_calls",
                  "batch_calls", "batch_replays")  # fmt: skip
        fields += [f"{name}={getattr(self, name)}" for name in counts if getattr(self, name)]
        money = ("fees", "saved", "unanswered")
        fields += [
            f"{name}={fmt_money(getattr(self, name))}" for name in money if getattr(self, name)
        ]
        for name in ("price_sources", "price_models"):
            if getattr(self, name):
                fields.append(f"{name}={list(getattr(self, name))!r}")
        return fields


@dataclass(kw_only=True, repr=False)
class CostRow(Totals):
    """Totals of one (run, step, model): one CSV row. ``parent`` names the fan-out step
    of a child step such as ``answer[openai/gpt-4o-mini]``."""

    run_id: str
    workflow: str
    step: str
    model: str
    provider: str
    parent: str | None = None

    def _repr_fields(self) -> list[str]:
        keys = [f"run_id={self.run_id!r}", f"workflow={self.workflow!r}", f"step={self.step!r}",
                f"model={self.model!r}"]  # fmt: skip
        return keys + super()._repr_fields()

    @property
    def csv_cost(self) -> Decimal | None:
        """The CSV's ``cost_usd``: the known cost, so that the rows sum to the report's
        known total (a row summing priced and unpriced calls keeps its priced part);
        None when nothing in the row was priced (its calls all unpriced, no charge)."""
        if self.unpriced_calls and self.unpriced_calls >= self.calls and not self.known_cost:
            return None
        return normalize_money(self.known_cost)

    @property
    def base_step(self) -> str:
        """The step as the user wrote it: the fan-out parent of a child, else the step."""
        return self.parent or self.step

    def as_record(self) -> dict[str, Any]:
        """The CSV columns, in order: ``cost_usd`` is the cost of the priced calls (a
        Decimal), or None when none of the row's calls was priced; ``unpriced_calls`` counts
        the calls it leaves out."""
        values = {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "step": self.step,
            "model": self.model,
            "provider": self.provider,
            "calls": self.calls,
            **self.usage.to_dict(),
            "cost_usd": self.csv_cost,
            "latency_ms": round(self.latency_ms, 3),
            "replayed_calls": self.replayed_calls,
            "fees_usd": normalize_money(self.fees),
            "price_source": self.price_source,
            "price_model": self.price_model,
            "cached_calls": self.cached_calls,
            "saved_usd": normalize_money(self.saved),
            "unanswered_usd": normalize_money(self.unanswered),
            "unpriced_calls": self.unpriced_calls,
        }
        return {column: values[column] for column in CSV_COLUMNS}

    @classmethod
    def from_aggregate(cls, row: StatAggregate) -> CostRow:
        """From one row of ``RunStore.aggregate_stats``."""
        return cls(
            run_id=row.run_id,
            workflow=row.workflow,
            step=row.step,
            model=row.model,
            provider=row.provider,
            parent=row.parent,
            calls=row.calls,
            usage=row.usage,
            known_cost=row.cost if row.cost is not None else Decimal(0),
            fees=row.fees if row.fees is not None else Decimal(0),
            price_sources=dict.fromkeys(row.price_sources),
            price_models=dict.fromkeys(row.price_models),
            unpriced_calls=row.unpriced_calls,
            estimated_calls=row.estimated_calls,
            latency_ms=row.latency_ms,
            replayed_calls=row.replayed_calls,
            cached_calls=row.cached_calls,
            saved=row.saved if row.saved is not None else Decimal(0),
            batch_calls=row.batch_calls,
            batch_replays=row.batch_replays,
            unanswered=row.unanswered if row.unanswered is not None else Decimal(0),
        )


@dataclass(kw_only=True)
class ModelComparison(Totals):
    """One model of a fan-out step, over every run of the report: cost and tokens of its
    calls, and how its children ended (``failed``: discarded or cancelled; ``retries``:
    attempts beyond the first)."""

    model: str
    children: int = 0
    failed: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)

    def add_child(self, child: FanoutChild) -> None:
        self.children += 1
        self.retries += max(child.attempt - 1, 0)
        if child.state in FAILED_STATES:
            self.failed += 1
            if child.error:
                self.errors.append(child.error)
