"""The pricing functions the rest of baton_nb calls."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from datetime import date, datetime
from decimal import Decimal

from .._usage import Usage
from . import _genai, _registry
from ._cost import CacheTTL, Cost, engine_cost, missing_rate, period_prices, rates_view
from ._cost import utc as _utc
from ._parse import load_price_file
from ._registry import Found
from ._types import CallPricing, ModelPrice, Rates, Tier

__all__ = [
    "UnknownPriceWarning",
    "configure_pricing",
    "known_models",
    "lookup",
    "price",
    "price_call",
]


class UnknownPriceWarning(UserWarning):
    """No price is known for a model: its cost is reported as unknown (``None``), never 0."""


_warned: set[str] = set()
_warned_lock = threading.Lock()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def lookup(model: str, *, at: datetime | None = None) -> ModelPrice | None:
    """The rates of ``model`` (``provider/model`` or a bare name) in force at ``at``
    (default: now, UTC), or ``None`` if no table knows it. Never warns."""
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a str like 'openai/gpt-4o-mini', got {type(model).__name__}"
        )
    when = _utc(at)
    found = _registry.find(model, when.date())
    return None if found is None else _model_price(model, found, when)


def _model_price(query: str, found: Found, when: datetime) -> ModelPrice:
    valid_from: date | None
    if found.spec is not None:
        spec = found.spec
        index = 0
        for i, period in enumerate(spec.periods):
            if period.start <= when.date():
                index = i
        period = spec.periods[index]
        following = spec.periods[index + 1].start if index + 1 < len(spec.periods) else spec.until
        standard, batch = period_prices(period)
        valid_from, valid_until = period.start, following
        name, note, aliases = spec.name, spec.note, spec.aliases
        source = spec.source or (found.table.source if found.table else None)
    else:
        info = found.info
        at = _genai.prices_at(info, when)
        standard, batch = at.standard, at.batch
        valid_from, valid_until = at.valid_from, at.valid_until
        name, note, aliases = info.name, _join(info.price_comments, at.note), ()
        source = None
    rates, tiers, others = rates_view(standard)
    batch_rates: Rates | None = None
    if batch is not None:
        batch_rates, batch_tiers, _ = rates_view(batch)
        by_start = {t.above: t.rates for t in batch_tiers}
        tiers = tuple(Tier(t.above, t.rates, by_start.get(t.above, batch_rates)) for t in tiers)
    return ModelPrice(
        query=query,
        provider=found.provider,
        model=found.model,
        matched=found.matched,
        valid_from=valid_from,
        valid_until=valid_until,
        rates=rates,
        batch=batch_rates,
        tiers=tiers,
        name=name,
        note=note,
        source=source,
        aliases=aliases,
        price_source=found.source,
        other_rates=others,
        engine=(standard, batch),
    )


def _join(*parts: str | None) -> str | None:
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return text or None


def price(
    model: str,
    usage: Usage,
    *,
    at: datetime | None = None,
    batch: bool = False,
    cache_write_ttl: CacheTTL = "5m",
) -> Decimal | None:
    """USD cost of one call of ``model`` that used ``usage``, exact.

    The prompt size (``usage.input_tokens``) picks the long-context tier, which then prices
    the whole call; ``batch`` uses batch rates. Cache writes are charged at the 5-minute
    rate, except ``usage.cache_write_1h_tokens`` at the 1-hour rate;
    ``cache_write_ttl="1h"`` charges all of them at the 1-hour rate. An unknown model
    returns ``None`` and warns (`UnknownPriceWarning`) once per model per process.
    """
    cost, _ = _price(model, usage, at=at, batch=batch, cache_write_ttl=cache_write_ttl)
    return None if cost is None else cost.total


def price_call(
    model: str, usage: Usage, *, called_as: str, at: datetime | None = None
) -> tuple[Decimal | None, CallPricing]:
    """`price` for the LLM layer and for re-pricing stored calls: ``model`` is the name the
    price tables are asked for, ``called_as`` the ``provider/model`` of the call (they differ
    for ``mock/...`` and ``price_as=``); an unknown price warns naming both. Returns the
    cost and how it was priced (source, matched model, per-request fees)."""
    cost, found = _price(model, usage, at=at, batch=False, cache_write_ttl="5m",
                         called_as=called_as)  # fmt: skip
    if cost is None or found is None:
        return None, CallPricing(priced_as=model)
    return cost.total, CallPricing(model, found.price_source, found.model_ref, cost.fees)


def _price(
    model: str,
    usage: Usage,
    *,
    at: datetime | None,
    batch: bool,
    cache_write_ttl: CacheTTL,
    called_as: str | None = None,
) -> tuple[Cost | None, ModelPrice | None]:
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be a baton_nb Usage, got {type(usage).__name__}")
    found = lookup(model, at=at)
    if found is None:
        _warn_unknown(model, called_as)
        return None, None
    standard, batch_price = found.engine
    engine = batch_price if batch and batch_price is not None else standard
    missing = missing_rate(engine, usage)
    if missing is not None:
        _warn_unknown(model, called_as, f"{found.model_ref} has no price for {missing}")
        return None, found
    return engine_cost(engine, usage, cache_write_ttl), found


def configure_pricing(path: str | os.PathLike[str]) -> None:
    """Lay the prices of a user file over the shipped ones: a model with the same id (or a
    new one) takes the user's prices. Validates the whole file first; a bad file raises
    `ConfigurationError` (a ``ValueError``) naming the file and the field, and changes nothing."""
    _registry.add_overrides(load_price_file(path).providers)


def known_models() -> list[str]:
    """Every priced model as ``provider/model`` (user files, the shipped overrides and
    genai-prices), sorted; aliases not listed."""
    return _registry.known_models()


def _warn_unknown(model: str, called_as: str | None = None, why: str | None = None) -> None:
    key = f"{model.strip().lower()}|{why or ''}"
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    named = repr(model)
    if called_as is not None and called_as.strip().lower() != model.strip().lower():
        named = f"{called_as!r} (priced as {model!r})"
    reason = f" ({why})" if why else ""
    warnings.warn(
        f"no price known for model {named}{reason}: its cost is reported as unknown (None), "
        f"not 0. Add it to a price file and load that with "
        f"bn.configure(pricing='my_prices.json') (format: docs/pricing.md), or price the "
        f"calls as a known model with price_as=; `baton-nb price MODEL` shows what is known.",
        UnknownPriceWarning,
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points the warning at the first frame outside baton_nb: the
    user's ``bn.price(...)`` call or the step's ``await ctx.complete(...)`` line (awaiting
    coroutines are on the stack while the call is priced)."""
    frame = sys._getframe(1)  # _warn_unknown: stacklevel 1 points at its own warn() line
    level = 1
    while frame is not None:
        if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return 2
