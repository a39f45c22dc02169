"""The pricing functions the rest of baton_nb calls."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from datetime import datetime
from decimal import Decimal

from .._usage import Usage
from . import _registry
from ._cost import CacheTTL, call_cost, day_of, model_price
from ._parse import load_price_file
from ._types import ModelPrice

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
    day = day_of(at)
    found = _registry.find(model)
    if found is None:
        return None
    return model_price(model, found.provider, found.model, found.matched, day)


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
    the whole call; ``batch`` uses batch rates; ``cache_write_ttl`` picks Anthropic's 5-minute
    or 1-hour cache-write rate. An unknown model returns ``None`` and warns
    (`UnknownPriceWarning`) once per model per process.
    """
    return _price(model, usage, at=at, batch=batch, cache_write_ttl=cache_write_ttl)


def price_call(
    model: str, usage: Usage, *, called_as: str, cache_write_ttl: CacheTTL = "5m"
) -> Decimal | None:
    """`price` for the LLM layer: ``model`` is the name the price tables are asked for,
    ``called_as`` the ``provider/model`` of the call (they differ for ``mock/...`` and
    ``price_as=``); an unknown price warns naming both."""
    return _price(model, usage, at=None, batch=False, cache_write_ttl=cache_write_ttl,
                  called_as=called_as)  # fmt: skip


def _price(
    model: str,
    usage: Usage,
    *,
    at: datetime | None,
    batch: bool,
    cache_write_ttl: CacheTTL,
    called_as: str | None = None,
) -> Decimal | None:
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be a baton_nb Usage, got {type(usage).__name__}")
    found = lookup(model, at=at)
    if found is None:
        _warn_unknown(model, called_as)
        return None
    rates = found.rates_for(usage.input_tokens, batch=batch)
    return call_cost(rates, usage, cache_write_ttl)


def configure_pricing(path: str | os.PathLike[str]) -> None:
    """Lay the prices of a user file over the shipped ones: a model with the same id (or a
    new one) takes the user's prices. Validates the whole file first; a bad file raises
    `ConfigurationError` (a ``ValueError``) naming the file and the field, and changes nothing."""
    _registry.add_overrides(load_price_file(path).providers)


def known_models() -> list[str]:
    """Every priced model as ``provider/model``, sorted (aliases not listed)."""
    return _registry.catalog().models()


def _warn_unknown(model: str, called_as: str | None = None) -> None:
    key = model.strip().lower()
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    named = repr(model)
    if called_as is not None and called_as.strip().lower() != key:
        named = f"{called_as!r} (priced as {model!r})"
    warnings.warn(
        f"no price known for model {named}: its cost is reported as unknown (None), not 0. "
        f"Add it to a price file and load that with bn.configure(pricing='my_prices.json') "
        f"(format: docs/pricing.md); `baton-nb price MODEL` shows what is known.",
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
