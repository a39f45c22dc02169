"""Exact cost arithmetic: tokens x rates, in Decimal, never float."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal

from .._usage import Usage
from ._types import MatchKind, ModelPrice, ModelSpec, PartialRates, PeriodSpec, Rates, Tier

__all__ = ["CacheTTL", "call_cost", "day_of", "model_price"]

CacheTTL = Literal["5m", "1h"]

# Private context: a caller's decimal.getcontext() (say prec=4) must not round our sums.
_EXACT = Context(prec=60, traps=[InvalidOperation])
_PER_MILLION = -6


def call_cost(rates: Rates, usage: Usage, cache_write_ttl: CacheTTL = "5m") -> Decimal:
    """USD for one call. ``usage.input_tokens`` includes cached and cache-write tokens;
    reasoning tokens are part of ``output_tokens`` and are not charged again."""
    if cache_write_ttl not in ("5m", "1h"):
        raise ValueError(f"cache_write_ttl must be '5m' or '1h', got {cache_write_ttl!r}")
    write_rate = rates.cache_write_1h if cache_write_ttl == "1h" else rates.cache_write
    cached, written = usage.cached_input_tokens, usage.cache_write_tokens
    # A usage that claims more cached tokens than prompt tokens is a normalisation slip
    # upstream; charge what is certain instead of a negative amount.
    plain = max(usage.input_tokens - cached - written, 0)
    total = Decimal(0)
    for tokens, rate in (
        (plain, rates.input),
        (cached, rates.cached_input),
        (written, write_rate),
        (usage.output_tokens, rates.output),
    ):
        total = _EXACT.add(total, _EXACT.multiply(Decimal(tokens), rate))
    return _tidy(_EXACT.scaleb(total, Decimal(_PER_MILLION)))


def _tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros (0.000210000 -> 0.00021) without turning 10 into 1E+1."""
    tidy = _EXACT.normalize(value)
    exponent = tidy.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return _EXACT.quantize(tidy, Decimal(1))
    return tidy


def day_of(at: datetime | None) -> date:
    """The UTC day of ``at`` (now if ``None``; a naive datetime is taken as UTC)."""
    if at is None:
        return datetime.now(timezone.utc).date()
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime, got {type(at).__name__}")
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc)
    return at.date()


def model_price(
    query: str, provider: str, spec: ModelSpec, matched: MatchKind, day: date
) -> ModelPrice:
    """The prices of ``spec`` in force on ``day`` (the first period also covers earlier days)."""
    index = 0
    for i, period in enumerate(spec.periods):
        if period.start <= day:
            index = i
    period = spec.periods[index]
    following = spec.periods[index + 1] if index + 1 < len(spec.periods) else None
    rates, batch, tiers = _resolved(period)
    return ModelPrice(
        query=query,
        provider=provider,
        model=spec.id,
        matched=matched,
        valid_from=period.start,
        valid_until=following.start if following else None,
        rates=rates,
        batch=batch,
        tiers=tiers,
        name=spec.name,
        note=spec.note,
        source=spec.source,
        aliases=spec.aliases,
    )


@lru_cache(maxsize=1024)
def _resolved(period: PeriodSpec) -> tuple[Rates, Rates | None, tuple[Tier, ...]]:
    """A period's rates with every gap filled (cached: periods are immutable)."""
    return period.rates.resolve(), _batch(period.batch, period.rates), _tiers(period)


def _batch(batch: PartialRates | None, standard: PartialRates) -> Rates | None:
    # Batch rates a table leaves out are the standard ones (as genai-prices does).
    return batch.over(standard).resolve() if batch is not None else None


def _tiers(period: PeriodSpec) -> tuple[Tier, ...]:
    tiers = []
    for spec in period.tiers:
        standard = spec.rates.over(period.rates)
        tiers.append(Tier(spec.above, standard.resolve(), _batch(spec.batch, standard)))
    return tuple(tiers)
