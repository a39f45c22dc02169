"""Price data types: what a price file holds once parsed, and what `lookup` returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._match import MatchKind

__all__ = [
    "RATE_KEYS",
    "CallPricing",
    "MatchKind",
    "ModelPrice",
    "ModelSpec",
    "PartialRates",
    "PeriodSpec",
    "PriceFile",
    "ProviderTable",
    "Rates",
    "Tier",
    "TierSpec",
]

RATE_KEYS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")


@dataclass(frozen=True, slots=True)
class PartialRates:
    """Rates as written in a file (USD per 1M tokens); a missing rate is ``None``."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def over(self, base: PartialRates) -> PartialRates:
        """These rates laid over ``base``: a rate set here wins, a missing one is inherited."""
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in merged.items():
            if value is None:
                merged[name] = getattr(base, name)
        return PartialRates(**merged)

    def resolve(self) -> Rates:
        """Fill the gaps: cached input and cache writes without a rate of their own cost input."""
        if self.input is None or self.output is None:
            raise ValueError("input and output rates are required")
        cache_write = self.cache_write if self.cache_write is not None else self.input
        return Rates(
            input=self.input,
            output=self.output,
            cached_input=self.cached_input if self.cached_input is not None else self.input,
            cache_write=cache_write,
            cache_write_1h=self.cache_write_1h if self.cache_write_1h is not None else cache_write,
        )


@dataclass(frozen=True, slots=True)
class Rates:
    """Rates in force for one call, USD per 1M tokens, every gap already filled.

    ``cached_input`` is the prompt-cache read rate, ``cache_write`` the 5-minute cache write
    rate and ``cache_write_1h`` the 1-hour one (Anthropic). A provider that has no such rate
    charges those tokens as ordinary input, and so do these rates. ``None``: the model is
    not priced per token of that kind (an image or audio model).
    """

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None
    cache_write: Decimal | None
    cache_write_1h: Decimal | None


@dataclass(frozen=True, slots=True)
class TierSpec:
    """A long-context tier as written: applies when a call's prompt exceeds ``above`` tokens."""

    above: int
    rates: PartialRates
    batch: PartialRates | None


@dataclass(frozen=True, slots=True)
class PeriodSpec:
    """Prices in force from ``start`` (UTC day) until the next period of the same model."""

    start: date
    rates: PartialRates
    batch: PartialRates | None
    tiers: tuple[TierSpec, ...]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of a price file."""

    id: str
    periods: tuple[PeriodSpec, ...]
    aliases: tuple[str, ...] = ()
    name: str | None = None
    note: str | None = None
    source: str | None = None
    until: date | None = None  # from this UTC day on the entry no longer applies

    def active(self, day: date) -> bool:
        return self.until is None or day < self.until


@dataclass(frozen=True, slots=True)
class ProviderTable:
    """The models of one provider, as read from one price file."""

    provider: str
    models: tuple[ModelSpec, ...]
    aliases: tuple[str, ...] = ()
    vendor_fallback: bool = False
    source: str | None = None
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class PriceFile:
    """A parsed, validated price file (see docs/pricing.md for the format)."""

    path: Path
    providers: tuple[ProviderTable, ...]

    def models(self) -> list[str]:
        """Every model of the file as ``provider/model``."""
        return [f"{t.provider}/{m.id}" for t in self.providers for m in t.models]


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates for a call whose prompt (``Usage.input_tokens``) exceeds ``above`` tokens.

    Above the threshold the *whole* call is charged at these rates, as Google and
    Anthropic charge long-context prompts.
    """

    above: int
    rates: Rates
    batch: Rates | None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The prices of one model in force at one moment, as returned by `lookup`.

    ``model`` is the id in the price table, ``query`` what was asked for, ``matched`` how
    the one was found from the other (``exact`` id, ``alias`` or dated ``snapshot``).
    ``price_source`` says which table answered: the user's file, baton_nb's shipped
    overrides or genai-prices (with its version). ``rates`` apply to prompts up to the
    first tier's threshold, ``batch`` to batch calls (``None``: no batch rates, so batch
    calls are charged at the standard rates). ``other_rates`` holds every further rate of
    the model by genai-prices' key (``web_searches_kcount``: USD per 1,000 web searches,
    ``input_audio_mtok`` ...). ``valid_from`` / ``valid_until`` bound the price period
    when the table dates it.
    """

    query: str
    provider: str
    model: str
    matched: MatchKind
    valid_from: date | None
    valid_until: date | None
    rates: Rates
    batch: Rates | None = None
    tiers: tuple[Tier, ...] = ()
    name: str | None = None
    note: str | None = None
    source: str | None = None
    aliases: tuple[str, ...] = field(default=())
    price_source: str = ""
    other_rates: tuple[tuple[str, Decimal], ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)

    @property
    def model_ref(self) -> str:
        """``provider/model`` of the matched price entry."""
        return f"{self.provider}/{self.model}"

    def rates_for(self, input_tokens: int, *, batch: bool = False) -> Rates:
        """The rates charged for a call with ``input_tokens`` prompt tokens."""
        rates, batch_rates = self.rates, self.batch
        for tier in self.tiers:
            if input_tokens > tier.above:
                rates, batch_rates = tier.rates, tier.batch
        if batch and batch_rates is not None:
            return batch_rates
        return rates


@dataclass(frozen=True, slots=True)
class CallPricing:
    """How one LLM call was priced: the name the tables were asked for (``priced_as``:
    the ``price_as=`` of the call, else its model), the source of the price (``None``
    when no table knows the model), the matched ``provider/model`` and the part of the
    cost that is per-request fees (web searches ...), never a binary float."""

    priced_as: str
    source: str | None = None
    model: str | None = None
    fees: Decimal | None = None
    batch: bool = False  # a provider batch call: priced at the model's batch rates

    def to_dict(self) -> dict[str, str | bool | None]:
        data: dict[str, str | bool | None] = {
            "priced_as": self.priced_as,
            "source": self.source,
            "model": self.model,
            "fees": None if self.fees is None else str(self.fees),
        }
        if self.batch:  # absent otherwise: completions stored before batches read the same
            data["batch"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallPricing:
        fees = data.get("fees")
        return cls(
            priced_as=str(data.get("priced_as") or ""),
            source=data.get("source"),
            model=data.get("model"),
            fees=None if fees is None else Decimal(str(fees)),
            batch=bool(data.get("batch", False)),
        )
