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

from bisect import bisect_left
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
    if not _plan(price).any_rate:
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
    ``tests/pricing_audit.py`` checks that both agree on every model genai-prices lists.

    Exact: each rate is an integer times a power of ten (a ``_Level``, made once per price
    and tier), so the sum is made in integers and becomes a ``Decimal`` once, instead of
    eight ``Decimal`` products per call (a third of the CPU the LLM layer adds to a call)."""
    plan = _plan(price)
    if plan.values is None:
        return None  # a key genai-prices' registry does not know: let it say what it makes of it
    n = usage.input_tokens
    level = bisect_left(plan.starts, n) if plan.starts else 0  # tier starts below the prompt
    rates = plan.levels.get(level)
    if rates is None:
        rates = plan.levels[level] = _level(plan.values, n)
    cached, written = usage.cached_input_tokens, usage.cache_write_tokens
    one_hour = written if cache_write_ttl == "1h" else usage.cache_write_1h_tokens
    output = usage.output_tokens
    reasoning = min(usage.reasoning_tokens, output)
    plain, read, write_5m, write_1h, out, think, search, request = rates.token_units
    tokens = (
        max(n - cached - written, 0) * plain
        + cached * read
        + (written - one_hour) * write_5m
        + one_hour * write_1h
        + (output - reasoning) * out
        + reasoning * think
    )
    fees = usage.web_search_requests * search + request  # one request
    exponent = rates.exponent
    return Cost(_tidy(tokens + fees, exponent), _tidy(fees, exponent))


_LONGEST = 10**_EXACT.prec  # more digits than this: rounded as ``tidy`` rounds them


def _tidy(value: int, exponent: int) -> Decimal:
    """``tidy(value * 10**exponent)``, made from the integer's digits (no context rounds
    it): trailing zeros dropped, a positive exponent written out."""
    if not value:
        return Decimal(0)
    while not value % 10:
        value //= 10
        exponent += 1
    if exponent > 0:
        value, exponent = value * 10**exponent, 0
    exact = Decimal(f"{value}E{exponent}")
    return exact if -_LONGEST < value < _LONGEST else tidy(exact)


@dataclass(frozen=True, slots=True)
class _Level:
    """A price's rates for prompts in one tier range, as integers at one power of ten:
    the per-token units (USD per million), the per-search and per-request fees (USD per
    thousand), all scaled so that ``count * unit`` sums to USD * 10**-exponent."""

    token_units: tuple[int, ...]
    exponent: int


@dataclass(slots=True)
class _Plan:
    """What ``_token_cost`` needs of one price, read once: its set rates (``values``;
    ``None`` when one is a unit it does not handle), whether it has any rate at all, the
    prompt sizes where a long-context tier starts, and the rates of each tier reached."""

    values: dict[str, Any] | None
    any_rate: bool
    starts: list[int]
    levels: dict[int, _Level]


def _level(values: dict[str, Any], n: int) -> _Level:
    """The rates for a prompt of ``n`` tokens (each tiered rate at the tier ``n`` reaches:
    it prices the whole call), in the order ``_token_cost`` multiplies them."""

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

    input_rate = rate("input_mtok", None)
    write_rate = rate("cache_write_mtok", input_rate)
    output_rate = rate("output_mtok", None)
    per_token = (
        input_rate,
        rate("cache_read_mtok", input_rate),
        rate("cache_write_5m_mtok", write_rate),
        rate("cache_write_1h_mtok", write_rate),
        output_rate,
        rate("output_reasoning_mtok", output_rate),
    )
    per_thousand = (rate("web_searches_kcount", None), rate("requests_kcount", None))
    # token rates are per million (10**-6), fees per thousand (10**-3)
    scaled = [(*_integer(r), 6) for r in per_token] + [(*_integer(r), 3) for r in per_thousand]
    exponent = min(e - shift for _, e, shift in scaled)
    units = tuple(m * 10 ** (e - shift - exponent) for m, e, shift in scaled)
    return _Level(units, exponent)


def _finite(rates: dict[str, Any]) -> bool:
    """Whether every rate (and tier of a tiered rate) is a finite number: the integer sum
    has no NaN; genai-prices says what it makes of one."""
    for value in rates.values():
        tiers = getattr(value, "tiers", None)
        parts = [value] if tiers is None else [value.base, *(t.price for t in tiers)]
        if not all(isinstance(p, Decimal) and p.is_finite() for p in parts):
            return False
    return True


def _integer(rate: Decimal) -> tuple[int, int]:
    """``rate`` as (integer, exponent): ``rate == integer * 10**exponent``."""
    sign, digits, exponent = rate.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"price rate is not a finite number: {rate}")
    value = int("".join(map(str, digits)) or "0")
    return (-value if sign else value), exponent


# Each price's plan, by the price's id (the price kept alive with it, so the id is not
# reused): read once per price, not once per call. genai-prices' prices are not changed
# once loaded; a price file loaded later makes new price objects.
_PLANS: dict[int, tuple[Any, _Plan]] = {}
_PLANS_KEPT = 4096


def _plan(price: Any) -> _Plan:
    kept = _PLANS.get(id(price))
    if kept is not None and kept[0] is price:
        return kept[1]
    rated = {k: v for k, v in vars(price).items() if v is not None and not k.startswith("_")}
    values = rated if set(rated) <= _known_price_keys() and _finite(rated) else None
    starts = sorted({t.start for v in (values or {}).values() for t in getattr(v, "tiers", ())})
    plan = _Plan(values, bool(rated), starts, {})
    if len(_PLANS) >= _PLANS_KEPT:
        _PLANS.clear()
    _PLANS[id(price)] = (price, plan)
    return plan


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
