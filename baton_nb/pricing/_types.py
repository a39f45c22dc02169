"""Price data types: what a price file holds once parsed, and what `lookup` returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

__all__ = [
    "RATE_KEYS",
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
MatchKind = Literal["exact", "alias", "prefix"]


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
    charges those tokens as ordinary input, and so do these rates.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal


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
    the one was found from the other. ``rates`` apply to prompts up to the first tier's
    threshold, ``batch`` to batch calls (``None``: the table has no batch rates, so batch
    calls are charged at the standard rates). ``valid_until`` is the day the next known
    price period starts, if any.
    """

    query: str
    provider: str
    model: str
    matched: MatchKind
    valid_from: date
    valid_until: date | None
    rates: Rates
    batch: Rates | None = None
    tiers: tuple[Tier, ...] = ()
    name: str | None = None
    note: str | None = None
    source: str | None = None
    aliases: tuple[str, ...] = field(default=())

    def rates_for(self, input_tokens: int, *, batch: bool = False) -> Rates:
        """The rates charged for a call with ``input_tokens`` prompt tokens."""
        rates, batch_rates = self.rates, self.batch
        for tier in self.tiers:
            if input_tokens > tier.above:
                rates, batch_rates = tier.rates, tier.batch
        if batch and batch_rates is not None:
            return batch_rates
        return rates
