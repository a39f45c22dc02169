"""The pricing functions the rest of baton_nb calls."""

from __future__ import annotations

import difflib
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

from .._usage import Usage
from . import _genai, _registry
from ._cost import (
    CacheTTL,
    Cost,
    engine_cost,
    missing_rate,
    period_prices,
    rates_view,
    with_other_rates,
)
from ._cost import utc as _utc
from ._parse import load_price_file
from ._registry import Found
from ._types import CallPricing, ModelPrice, Rates, Tier

__all__ = [
    "UnknownPriceWarning",
    "configure_pricing",
    "known_models",
    "lookup",
    "near_priced",
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


@dataclass(frozen=True, slots=True)
class _Prices:
    standard: Any  # genai-prices ModelPrice
    batch: Any | None
    valid_from: date | None
    valid_until: date | None
    note: str | None


def _prices(found: Found, when: datetime) -> _Prices:
    """The prices of a price entry in force at ``when``; memoised per day unless they
    depend on the time of day (DeepSeek's off-peak hours)."""
    if found.info is not None and _genai.time_of_day(found.info):
        return _prices_at(found, when)
    return _prices_on(found, when.date())


@lru_cache(maxsize=4096)
def _prices_on(found: Found, day: date) -> _Prices:
    return _prices_at(found, datetime.combine(day, time(12), timezone.utc))


def _prices_at(found: Found, when: datetime) -> _Prices:
    spec = found.spec
    if spec is None:
        at = _genai.prices_at(found.info, when)
        note = _join(found.info.price_comments, at.note)
        return _Prices(at.standard, at.batch, at.valid_from, at.valid_until, note)
    index = 0
    for i, period in enumerate(spec.periods):
        if period.start <= when.date():
            index = i
    period = spec.periods[index]
    following = spec.periods[index + 1].start if index + 1 < len(spec.periods) else spec.until
    standard, batch = period_prices(period)
    # A price file states token rates only: the per-request fees and the other units
    # (web searches, audio tokens ...) of the same model come from genai-prices.
    same = _genai.same_model(found.provider, spec.id)
    if same is not None:
        theirs = _genai.prices_at(same, when)
        standard = with_other_rates(standard, theirs.standard)
        if batch is not None:
            batch = with_other_rates(batch, theirs.batch or theirs.standard)
    return _Prices(standard, batch, period.start, following, spec.note)


def _model_price(query: str, found: Found, when: datetime) -> ModelPrice:
    prices = _prices(found, when)
    if found.spec is not None:
        name, aliases = found.spec.name, found.spec.aliases
        source = found.spec.source or (found.table.source if found.table else None)
    else:
        name, aliases, source = found.info.name, (), None
    rates, tiers, others = rates_view(prices.standard)
    batch_rates: Rates | None = None
    if prices.batch is not None:
        batch_rates, batch_tiers, _ = rates_view(prices.batch)
        by_start = {t.above: t.rates for t in batch_tiers}
        tiers = tuple(Tier(t.above, t.rates, by_start.get(t.above, batch_rates)) for t in tiers)
    return ModelPrice(
        query=query,
        provider=found.provider,
        model=found.model,
        matched=found.matched,
        valid_from=prices.valid_from,
        valid_until=prices.valid_until,
        rates=rates,
        batch=batch_rates,
        tiers=tiers,
        name=name,
        note=prices.note,
        source=source,
        aliases=aliases,
        price_source=found.source,
        other_rates=others,
        engine=(prices.standard, prices.batch),
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
    model: str,
    usage: Usage,
    *,
    called_as: str,
    at: datetime | None = None,
    batch: bool = False,
    stored: bool = False,
) -> tuple[Decimal | None, CallPricing]:
    """`price` for the LLM layer and for re-pricing stored calls: ``model`` is the name the
    price tables are asked for, ``called_as`` the ``provider/model`` of the call (they differ
    for ``mock/...`` and ``price_as=``); an unknown price warns naming both. ``batch``: a
    provider batch call, at batch rates. ``stored``: re-pricing a stored call. Returns the
    cost and how it was priced (source, matched model, per-request fees, batch)."""
    if stored and called_as.lower() == f"{_registry.MOCK}/{model}".lower():
        # A mock call stored before mock/NAME had one lookup recorded its bare NAME: priced
        # as mock/NAME is now (a live call's explicit price_as=NAME is priced as NAME).
        model = called_as
    cost, found = _price(model, usage, at=at, batch=batch, cache_write_ttl="5m",
                         called_as=called_as)  # fmt: skip
    if cost is None or found is None:
        return None, CallPricing(priced_as=model, batch=batch)
    return cost.total, CallPricing(
        model, found.source, f"{found.provider}/{found.model}", cost.fees, batch
    )


def _price(
    model: str,
    usage: Usage,
    *,
    at: datetime | None,
    batch: bool,
    cache_write_ttl: CacheTTL,
    called_as: str | None = None,
) -> tuple[Cost | None, Found | None]:
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be a baton_nb Usage, got {type(usage).__name__}")
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a str like 'openai/gpt-4o-mini', got {type(model).__name__}"
        )
    when = _utc(at)
    found = _registry.find(model, when.date())
    if found is None:
        _warn_unknown(model, called_as)
        return None, None
    prices = _prices(found, when)
    engine = prices.batch if batch and prices.batch is not None else prices.standard
    missing = missing_rate(engine, usage)
    if missing is not None:
        _warn_unknown(
            model, called_as, f"{found.provider}/{found.model} has no price for {missing}"
        )
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
    near = None if why else _near_priced(model, called_as)
    hint = f" Did you mean {near!r}? (a typo in a model name is priced as nothing)" if near else ""
    if _is_mock(called_as or model) and not why:
        # The mock answers any name, priced as the model it names: say so, and what is near.
        how = "the mock provider answers any model name, priced as the model it names"
        hint = (
            f" Did you mean {near!r}? ({how}: mock/gpt-4o-mini as gpt-4o-mini)"
            if near
            else f" {how[0].upper()}{how[1:]} (mock/gpt-4o-mini as gpt-4o-mini): "
            "name a priced one, e.g. 'mock/gpt-4o-mini'."
        )
    warnings.warn(
        f"no price known for model {named}{reason}: its cost is reported as unknown (None), "
        f"not 0.{hint} Add it to a price file and load that with "
        f"bn.configure(pricing='my_prices.json') (format: docs/pricing.md), or price the "
        f"calls as a known model with price_as=; `baton-nb price MODEL` shows what is known.",
        UnknownPriceWarning,
        stacklevel=_user_stacklevel(),
    )


def _near_priced(model: str, called_as: str | None) -> str | None:
    """A priced model whose name is a near miss of ``model``'s (``gpt-4o-mnii`` for
    ``gpt-4o-mini``), as the user would write it: ``called_as`` with its name corrected
    (``mock/gpt-4o-mini``), or the corrected ``price_as=`` name. None if none is close.
    Run once per unknown model (its warning is given once)."""
    prefix, _, name = model.rpartition("/")
    names = {known.rpartition("/")[2] for known in _registry.known_models()}
    # A mock model's name is made up more freely (``mock/gpt-9000``): a looser match there.
    cutoff = 0.6 if _is_mock(called_as or model) else 0.85
    found = difflib.get_close_matches(name.lower(), names, n=1, cutoff=cutoff)
    if not found or found[0] == name.lower():
        return None
    priced = f"{prefix}/{found[0]}" if prefix else found[0]
    if lookup(priced) is None:  # another provider's name: not priced under this one
        return None
    if called_as is not None:
        called_prefix, _, called_name = called_as.strip().rpartition("/")
        if called_name.lower() == name.lower():  # mock/NAME priced as NAME: fix NAME
            return f"{called_prefix}/{found[0]}" if called_prefix else found[0]
    return priced


def near_priced(model: str) -> str | None:
    """A priced model whose name is close to ``model``'s, written as ``model`` is (its
    provider kept: ``mock/gpt-4o-mini`` for ``mock/gpt-4o-mnii``); None if none is close."""
    return _near_priced(model, None)


def _is_mock(model: str) -> bool:
    return model.strip().lower().startswith(f"{_registry.MOCK}/")


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
