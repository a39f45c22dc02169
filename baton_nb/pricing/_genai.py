"""genai-prices, the primary price source, behind the few calls baton_nb needs.

Imported on first use: its data module is 1.6 MB of Python that ``import baton_nb`` should
not pay for. baton_nb never starts its network auto-update (``genai_prices.UpdatePrices``),
so prices change only when the package is upgraded; a user who starts that updater gets the
prices it fetched, and the source label says so.

genai-prices is used through its data model (providers, models, ``ModelPrice`` with
conditional prices and price variants) rather than ``calc_price(model_ref)``, because its
model matching takes a family's first model for a newer sibling it does not list
(``gemini-1.5-flash-8b`` as ``gemini-1.5-flash``); baton_nb matches names itself
(``_match``) and asks genai-prices only for the prices of the model it found.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from copy import copy
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from types import ModuleType
from typing import Any

from .._errors import ConfigurationError
from ._match import NameIndex, normalise

__all__ = [
    "GenaiPrices",
    "find_provider",
    "label",
    "maker",
    "model_names",
    "module",
    "provider_index",
    "providers",
    "same_model",
    "version",
]

# Provider names baton_nb uses that genai-prices spells differently.
_PROVIDER_ALIASES = {"gemini": "google", "togetherai": "together"}
_BATCH = {"processing": "batch"}

_lock = threading.Lock()
_module: ModuleType | None = None
_indexes: dict[tuple[int, str], NameIndex[Any]] = {}


def module() -> ModuleType:
    """``genai_prices``, imported once (thread-safe)."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                try:
                    import genai_prices
                except ImportError as exc:  # a broken install: it is a hard dependency
                    raise ConfigurationError(
                        "baton_nb prices calls with the genai-prices package, which is not "
                        f"importable ({exc}); reinstall baton-nb (pip install -U baton-nb)"
                    ) from exc
                _module = genai_prices
    return _module


def version() -> str:
    return str(module().__version__)


def _snapshot() -> Any:
    module()
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def label() -> str:
    """``genai-prices 0.2.5``, plus when its prices were fetched if a user-started updater
    replaced the bundled ones."""
    snapshot = _snapshot()
    text = f"genai-prices {version()}"
    if snapshot.from_auto_update:
        text += f" (prices fetched {snapshot.timestamp:%Y-%m-%d %H:%M})"
    return text


def providers() -> list[Any]:
    return list(_snapshot().providers)


def find_provider(name: str) -> Any | None:
    """The genai-prices provider called ``name``: its id, an exact name it declares
    (``xai`` for ``x-ai``) or one of baton_nb's names for it (``gemini``)."""
    name = _PROVIDER_ALIASES.get(name, name)
    all_providers = providers()
    for provider in all_providers:
        if provider.id == name:
            return provider
    for provider in all_providers:
        if name in _equals_names(provider.provider_match):
            return provider
    return None


def maker(model: str) -> Any | None:
    """The provider that makes a model named without a provider (``gpt-4o``, ``claude-…``,
    ``gemini-…``), by genai-prices' own model rules; resellers declare none."""
    for provider in providers():
        rule = provider.model_match
        if rule is not None and rule.is_match(model):
            return provider
    return None


def provider_index(provider: Any) -> NameIndex[Any]:
    """The names of a provider's models (ids, then every name their match rules spell out)."""
    key = (id(_snapshot()), provider.id)
    found = _indexes.get(key)
    if found is None:
        found = NameIndex(((m, m.id, model_names(m)) for m in provider.models), first_wins=True)
        with _lock:
            if len(_indexes) > 256:  # a new snapshot (a user's updater): forget the old one
                _indexes.clear()
            _indexes[key] = found
    return found


def same_model(provider: str, model_id: str) -> Any | None:
    """genai-prices' entry of the model a price file's ``model_id`` names (its id or one of
    its aliases, not a snapshot), if genai-prices has the provider and the model."""
    found = find_provider(provider)
    if found is None:
        return None
    index = provider_index(found)
    name = normalise(model_id)
    return index.find(name, "exact") or index.find(name, "alias")


def model_names(model: Any) -> list[str]:
    """Names a model's match rule spells out: each ``equals``, and the stem of each
    ``starts_with``/``contains``/``ends_with`` (``claude-3-5-sonnet`` of
    ``starts_with: claude-3-5-sonnet``). Regex rules spell no name; a name only matches
    as itself or as a dated snapshot of itself, never as a substring."""
    return [n.rstrip("-@.") for n in _clause_names(model.match) if n.rstrip("-@.")]


def _clause_names(clause: Any) -> Iterator[str]:
    for attr in ("equals", "starts_with", "contains", "ends_with"):
        value = getattr(clause, attr, None)
        if isinstance(value, str):
            yield value
    for attr in ("or_", "and_"):
        for sub in getattr(clause, attr, None) or ():
            yield from _clause_names(sub)


def _equals_names(clause: Any) -> set[str]:
    if clause is None:
        return set()
    names = {getattr(clause, "equals", None)}
    for sub in getattr(clause, "or_", None) or ():
        names |= _equals_names(sub)
    return {n.lower() for n in names if isinstance(n, str)}


@dataclass(frozen=True)
class GenaiPrices:
    """A genai-prices model's prices in force at one moment."""

    standard: Any
    batch: Any | None
    valid_from: date | None
    valid_until: date | None
    note: str | None


def prices_at(model: Any, at: datetime) -> GenaiPrices:
    """The prices of ``model`` in force at ``at`` (aware UTC)."""
    standard = model.get_prices(at)
    valid_from, valid_until = _period(model, at.date())
    return GenaiPrices(standard, _batch_at(model, at, standard), valid_from, valid_until,
                       _time_of_day_note(model))  # fmt: skip


def _batch_at(model: Any, at: datetime, standard: Any) -> Any | None:
    """Batch prices at ``at``. genai-prices dates its batch variants from the day it checked
    them (2026-10-14 for most); the Batch APIs and their discounts are older (OpenAI since
    2024-04, Anthropic since 2024-10), so before a model's first batch variant starts, that
    variant's rates apply (a baton_nb override of genai-prices, see docs/pricing.md)."""
    variants = [v for v in model.price_variants or () if v.when == _BATCH]
    if not variants:
        return None
    first = batch_starts(model)
    if first is None or any(v.constraint is None or v.constraint.active(at) for v in variants):
        return model.get_prices(at, _BATCH)
    resolved = copy(standard)
    overrides: dict[str, Any] = {}
    for variant in variants:
        if getattr(variant.constraint, "start_date", None) == first:
            for key, value in vars(variant.prices).items():
                if value is not None:
                    overrides.setdefault(key, value)
    vars(resolved).update(overrides)
    return resolved


def batch_starts(model: Any) -> date | None:
    """The first day genai-prices itself applies a batch variant of ``model``, if dated."""
    starts = [
        v.constraint.start_date
        for v in model.price_variants or ()
        if v.when == _BATCH and v.constraint is not None and hasattr(v.constraint, "start_date")
    ]
    return min(starts) if starts else None


def _period(model: Any, day: date) -> tuple[date | None, date | None]:
    if not isinstance(model.prices, list):
        return None, None
    starts = sorted(
        {
            c.constraint.start_date
            for c in model.prices
            if c.constraint is not None and hasattr(c.constraint, "start_date")
        }
    )
    valid_from = max((s for s in starts if s <= day), default=None)
    valid_until = min((s for s in starts if s > day), default=None)
    return valid_from, valid_until


def time_of_day(model: Any) -> bool:
    """Whether the model's prices depend on the time of day (DeepSeek's off-peak hours)."""
    return isinstance(model.prices, list) and any(
        c.constraint is not None and hasattr(c.constraint, "start_time") for c in model.prices
    )


def _time_of_day_note(model: Any) -> str | None:
    if not isinstance(model.prices, list):
        return None
    spans = [
        f"{_hhmm(c.constraint.start_time)}-{_hhmm(c.constraint.end_time)} UTC"
        for c in model.prices
        if c.constraint is not None and hasattr(c.constraint, "start_time")
    ]
    if not spans:
        return None
    return "Prices depend on the time of day; other rates apply during " + ", ".join(spans) + "."


def _hhmm(value: time) -> str:
    if value.tzinfo is not None:
        value = datetime.combine(date(2000, 1, 1), value).astimezone(timezone.utc).time()
    return f"{value:%H:%M}"
