"""Exact cost arithmetic, done by genai-prices' own price model under a private context.

Every price, from genai-prices or from a baton_nb price file, is a genai-prices
``ModelPrice`` here, and ``ModelPrice.calc_price`` does the arithmetic: one cost engine
for every source, with its unit tree (cache reads, 5-minute and 1-hour cache writes and
reasoning tokens are parts of the input or output they belong to, charged at their own
rate where the model has one), its long-context tiers and its per-request fees.
genai-prices computes under the caller's ``decimal`` context (``prec=3`` would give
0.00211 for 0.00210855); here it always runs under ``_EXACT``.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation, localcontext
from functools import lru_cache
from typing import Any, Literal

from .._usage import Usage
from ._types import PartialRates, PeriodSpec, Rates, Tier

__all__ = [
    "CacheTTL",
    "Cost",
    "day_of",
    "engine_cost",
    "missing_rate",
    "period_prices",
    "rates_view",
    "tidy",
    "utc",
    "with_other_rates",
]

CacheTTL = Literal["5m", "1h"]

# Private context: a caller's decimal.getcontext() (say prec=4) must not round our sums.
_EXACT = Context(prec=60, traps=[InvalidOperation])

# Our rate names and genai-prices' price keys for the same token units.
_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}
TOKEN_KEYS = frozenset(_KEYS.values())


@dataclass(frozen=True, slots=True)
class Cost:
    """USD of one call: ``total`` includes ``fees`` (per-request charges such as web searches)."""

    total: Decimal
    fees: Decimal


def utc(at: datetime | None) -> datetime:
    """``at`` as an aware UTC datetime (now if ``None``; a naive datetime is taken as UTC)."""
    if at is None:
        return datetime.now(timezone.utc)
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime, got {type(at).__name__}")
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc)


def day_of(at: datetime | None) -> date:
    """The UTC day of ``at`` (now if ``None``; a naive datetime is taken as UTC)."""
    return utc(at).date()


def tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros (0.000210000 -> 0.00021) without turning 10 into 1E+1."""
    tidy = _EXACT.normalize(value)
    exponent = tidy.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return _EXACT.quantize(tidy, Decimal(1))
    return tidy


def _genai_usage(usage: Usage, cache_write_ttl: CacheTTL) -> Any:
    from genai_prices import Usage as GenaiUsage

    one_hour = usage.cache_write_1h_tokens
    if cache_write_ttl == "1h":
        one_hour = usage.cache_write_tokens
    cached, written = usage.cached_input_tokens, usage.cache_write_tokens
    # A usage that claims more cached tokens than prompt tokens is a normalisation slip
    # upstream; genai-prices would refuse it (a negative leaf): charge the cache reads and
    # writes reported, and no plain input, rather than a negative amount.
    return GenaiUsage(
        input_tokens=max(usage.input_tokens, cached + written),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        cache_write_5m_tokens=written - one_hour,
        cache_write_1h_tokens=one_hour,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=min(usage.reasoning_tokens, usage.output_tokens),
        web_searches=usage.web_search_requests,
    )


def missing_rate(price: Any, usage: Usage) -> str | None:
    """What ``usage`` needs that ``price`` (a genai-prices ``ModelPrice``) does not price, if
    anything: then the cost is unknown, not the sum of the parts that happen to be priced.
    A price with no rate at all is genai-prices' way of saying "free" (OpenRouter's
    ``:free`` variants, Gemma on the Gemini API): nothing is missing there."""
    if not any(v is not None for k, v in vars(price).items() if not k.startswith("_")):
        return None
    if usage.input_tokens and price.input_mtok is None:
        return "input tokens"
    if usage.output_tokens and price.output_mtok is None:
        return "output tokens"
    if usage.web_search_requests and price.web_searches_kcount is None:
        return "web searches"
    return None


def engine_cost(price: Any, usage: Usage, cache_write_ttl: CacheTTL = "5m") -> Cost:
    """USD of one call of ``usage`` under ``price`` (a genai-prices ``ModelPrice``), exact."""
    if cache_write_ttl not in ("5m", "1h"):
        raise ValueError(f"cache_write_ttl must be '5m' or '1h', got {cache_write_ttl!r}")
    fast = _token_cost(price, usage, cache_write_ttl)
    if fast is not None:
        return fast
    with localcontext(_EXACT):
        result = price.calc_price(_genai_usage(usage, cache_write_ttl))
        total: Decimal = result["total_price"]
        fees = total - result["input_price"] - result["output_price"]
    return Cost(tidy(total), tidy(fees))


# _token_cost prices the units a Usage reports: tokens (input, cache reads, 5-minute and
# 1-hour cache writes, output, reasoning), web searches and the request. Every other unit
# genai-prices knows (audio, image, video or text-only tokens, tool tokens, characters,
# seconds, pages, other tool calls) has a count of 0 for a Usage: genai-prices infers 0
# for a unit nothing reported falls under, so those rates add nothing and take nothing
# from the units above.


def _token_cost(price: Any, usage: Usage, cache_write_ttl: CacheTTL) -> Cost | None:
    """The same sum ``ModelPrice.calc_price`` makes, for the units a ``Usage`` has, without
    genai-prices' per-call validation of its unit tree (0.6 ms a call, on the event loop).
    ``None`` when the price has a unit this sum does not handle; then genai-prices computes.
    ``tests/pricing_audit.py`` checks that both agree on every model genai-prices lists."""
    values = _rates(price)
    if values is None:
        return None  # a key genai-prices' registry does not know: let it say what it makes of it
    n = usage.input_tokens

    def rate(key: str, fallback: Decimal | None) -> Decimal:
        value = values.get(key)
        if value is None:
            return fallback if fallback is not None else Decimal(0)
        if isinstance(value, Decimal):
            return value
        found = value.base  # TieredPrices: the whole call at the tier its prompt reaches
        for tier in value.tiers:
            if n > tier.start:
                found = tier.price
        return found  # type: ignore[no-any-return]

    cached, written = usage.cached_input_tokens, usage.cache_write_tokens
    one_hour = written if cache_write_ttl == "1h" else usage.cache_write_1h_tokens
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    plain = max(n - cached - written, 0)
    input_rate = rate("input_mtok", None)
    write_rate = rate("cache_write_mtok", input_rate)
    output_rate = rate("output_mtok", None)
    dot = _EXACT.fma
    tokens = Decimal(0)
    inputs = (
        (plain, input_rate),
        (cached, rate("cache_read_mtok", input_rate)),
        (written - one_hour, rate("cache_write_5m_mtok", write_rate)),
        (one_hour, rate("cache_write_1h_mtok", write_rate)),
    )
    for count, value in inputs:
        tokens = dot(Decimal(count), value, tokens)
    outputs = (
        (usage.output_tokens - reasoning, output_rate),
        (reasoning, rate("output_reasoning_mtok", output_rate)),
    )
    for count, value in outputs:
        tokens = dot(Decimal(count), value, tokens)
    fees = dot(Decimal(usage.web_search_requests), rate("web_searches_kcount", None), Decimal(0))
    fees = _EXACT.add(fees, rate("requests_kcount", None))  # one request
    tokens = _EXACT.scaleb(tokens, -6)
    fees = _EXACT.scaleb(fees, -3)
    return Cost(tidy(_EXACT.add(tokens, fees)), tidy(fees))


# A price's set rates, by the price's id (the price kept alive with them, so the id is
# not reused): read once per price, not once per call. genai-prices' prices are not
# changed once loaded; a price file loaded later makes new price objects.
_RATES: dict[int, tuple[Any, dict[str, Any] | None]] = {}
_RATES_KEPT = 4096


def _rates(price: Any) -> dict[str, Any] | None:
    """The rates ``price`` sets, or ``None`` when it has one ``_token_cost`` does not know."""
    kept = _RATES.get(id(price))
    if kept is not None and kept[0] is price:
        return kept[1]
    values = {k: v for k, v in vars(price).items() if v is not None and not k.startswith("_")}
    rates = values if set(values) <= _known_price_keys() else None
    if len(_RATES) >= _RATES_KEPT:
        _RATES.clear()
    _RATES[id(price)] = (price, rates)
    return rates


@lru_cache(maxsize=1)
def _known_price_keys() -> frozenset[str]:
    from genai_prices.units import _get_registry

    return frozenset(_get_registry()._all_price_keys)


# ── baton_nb price files -> genai-prices ModelPrice ─────────────────────────────


@lru_cache(maxsize=1024)
def period_prices(period: PeriodSpec) -> tuple[Any, Any | None]:
    """The standard and batch prices of one period of a price file, as genai-prices
    ``ModelPrice`` objects (cached: periods are immutable)."""
    standard = _model_price(period.rates, [(t.above, t.rates) for t in period.tiers])
    if period.batch is None:
        return standard, None
    batch_base = period.batch.over(period.rates)
    batch_tiers = [
        (t.above, (t.batch or PartialRates()).over(t.rates.over(period.rates)))
        for t in period.tiers
    ]
    return standard, _model_price(batch_base, batch_tiers)


def _model_price(base: PartialRates, tiers: list[tuple[int, PartialRates]]) -> Any:
    from genai_prices.types import ModelPrice, Tier, TieredPrices

    resolved = base.resolve()
    prices: dict[str, Any] = {}
    for ours, key in _KEYS.items():
        value = getattr(base, ours)
        steps = [(above, getattr(r, ours)) for above, r in tiers if getattr(r, ours) is not None]
        if steps:
            # a tier may state a rate its period leaves to the fallback (input): the base
            # of the tiered price is then that fallback
            start = value if value is not None else getattr(resolved, ours)
            prices[key] = TieredPrices(start, [Tier(above, rate) for above, rate in steps])
        elif value is not None:
            prices[key] = value
    return ModelPrice(**prices)


def with_other_rates(ours: Any, theirs: Any) -> Any:
    """``ours`` (a price file's token rates) plus every rate of ``theirs`` that is not a
    token rate a price file states (per-request fees, audio or image tokens ...)."""
    extra = {
        k: v
        for k, v in vars(theirs).items()
        if v is not None and not k.startswith("_") and k not in TOKEN_KEYS
        and getattr(ours, k, None) is None
    }  # fmt: skip
    if not extra:
        return ours
    merged = copy(ours)
    vars(merged).update(extra)
    return merged


# ── genai-prices ModelPrice -> the Rates shown by lookup() and `baton-nb price` ──


def rates_view(price: Any) -> tuple[Rates, tuple[Tier, ...], tuple[tuple[str, Decimal], ...]]:
    """Base rates, long-context tiers and every other rate of a genai-prices ``ModelPrice``."""
    from genai_prices.types import TieredPrices

    values: dict[str, Any] = {k: v for k, v in vars(price).items() if v is not None}
    starts = sorted(
        {t.start for v in values.values() if isinstance(v, TieredPrices) for t in v.tiers}
    )
    base = _rates_at(values, None)
    tiers = tuple(Tier(start, _rates_at(values, start), None) for start in starts)
    others = tuple(
        (key, value.base if isinstance(value, TieredPrices) else value)
        for key, value in sorted(values.items())
        if key not in TOKEN_KEYS and not key.startswith("_")
    )
    return base, tiers, others


def _rates_at(values: dict[str, Any], above: int | None) -> Rates:
    from genai_prices.types import TieredPrices

    def rate(key: str) -> Decimal | None:
        value = values.get(key)
        if not isinstance(value, TieredPrices):
            return value
        found = value.base
        for tier in value.tiers:
            if above is not None and above >= tier.start:
                found = tier.price
        return found

    def either(key: str, fallback: Decimal | None) -> Decimal | None:
        value = rate(key)
        return fallback if value is None else value

    input_rate = rate("input_mtok")
    cache_write = either("cache_write_mtok", input_rate)
    return Rates(
        input=input_rate,
        output=rate("output_mtok"),
        cached_input=either("cache_read_mtok", input_rate),
        cache_write=cache_write,
        cache_write_1h=either("cache_write_1h_mtok", cache_write),
    )
