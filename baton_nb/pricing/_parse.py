"""Read and strictly validate one price file (format: docs/pricing.md)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ._types import (
    RATE_KEYS,
    ModelSpec,
    PartialRates,
    PeriodSpec,
    PriceFile,
    ProviderTable,
    TierSpec,
)

__all__ = ["load_price_file", "parse_price_data"]

_PRICE_RE = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PROVIDER_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_DOCS = "see docs/pricing.md for the price file format"

_FILE_KEYS = frozenset({"provider", "models", "aliases", "vendor_fallback", "source", "note"})
_FILE_REQUIRED = frozenset({"provider", "models"})
_MODEL_KEYS = frozenset({"periods", "aliases", "name", "note", "source", "until"})
_PERIOD_KEYS = frozenset({"from", "batch", "tiers", *RATE_KEYS})
_PERIOD_REQUIRED = frozenset({"from", "input", "output"})
_TIER_KEYS = frozenset({"above", "batch", *RATE_KEYS})
_RATE_KEYS = frozenset(RATE_KEYS)


class _Where:
    """Where a value sits, for errors: ``file: model 'x', periods[0], 'input'``."""

    def __init__(self, path: str, parts: tuple[str, ...] = ()) -> None:
        self.path = path
        self.parts = parts

    def __truediv__(self, part: str) -> _Where:
        return _Where(self.path, (*self.parts, part))

    def error(self, problem: str) -> ConfigurationError:
        where = ", ".join(self.parts)
        return ConfigurationError(
            f"{self.path}: {where + ': ' if where else ''}{problem} ({_DOCS})"
        )


def load_price_file(path: str | os.PathLike[str]) -> PriceFile:
    """Read, parse and validate a price file; raise `ConfigurationError` (a ``ValueError``)
    naming the file and the offending field if anything is wrong."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"price file {file} not found; pass the path of a JSON price file ({_DOCS})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"price file {file} cannot be read: {exc}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{file}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _DuplicateKey as exc:
        raise ConfigurationError(
            f"{file}: key {exc.args[0]!r} appears twice in one object"
        ) from None
    return PriceFile(path=file, providers=parse_price_data(data, str(file), file))


def parse_price_data(
    data: object, name: str, path: Path | None = None
) -> tuple[ProviderTable, ...]:
    """Validate decoded JSON: one provider object, or ``{"providers": [...]}``."""
    where = _Where(name)
    if isinstance(data, dict) and "providers" in data:
        _check_keys(data, where, required=frozenset({"providers"}), allowed={"providers", "note"})
        items = _list(data["providers"], where / "'providers'")
        tables = tuple(
            _provider(item, where / f"providers[{i}]", path) for i, item in enumerate(items)
        )
    else:
        tables = (_provider(data, where, path),)
    _unique((t.provider for t in tables), where, "provider")
    return tables


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _provider(data: object, where: _Where, path: Path | None) -> ProviderTable:
    obj = _object(data, where)
    _check_keys(obj, where, required=_FILE_REQUIRED, allowed=_FILE_KEYS)
    provider = _provider_name(obj["provider"], where / "'provider'")
    aliases = tuple(
        _provider_name(a, where / "'aliases'")
        for a in _strings(obj.get("aliases", []), where / "'aliases'")
    )
    models_obj = _object(obj["models"], where / "'models'")
    if not models_obj:
        raise (where / "'models'").error("no models; add at least one")
    models = tuple(_model(mid, m, where / f"model {mid!r}") for mid, m in models_obj.items())
    _check_names(models, where)
    return ProviderTable(
        provider=provider,
        models=models,
        aliases=aliases,
        vendor_fallback=_bool(obj.get("vendor_fallback", False), where / "'vendor_fallback'"),
        source=_opt_str(obj.get("source"), where / "'source'"),
        path=path,
    )


def _model(model_id: str, data: object, where: _Where) -> ModelSpec:
    if not model_id.strip() or model_id != model_id.strip() or " " in model_id:
        raise where.error("model id must be a non-empty string without spaces")
    obj = _object(data, where)
    _check_keys(obj, where, required=frozenset({"periods"}), allowed=_MODEL_KEYS)
    items = _list(obj["periods"], where / "'periods'")
    if not items:
        raise (where / "'periods'").error("needs at least one period with a 'from' date")
    periods = tuple(_period(p, where / f"periods[{i}]") for i, p in enumerate(items))
    for earlier, later in pairwise(periods):
        if later.start <= earlier.start:
            raise (where / "'periods'").error(
                f"periods must be in increasing 'from' order; {later.start} follows {earlier.start}"
            )
    until = None
    if "until" in obj:
        until = _date(obj["until"], where / "'until'")
        if until <= periods[-1].start:
            raise (where / "'until'").error(
                f"must come after the last period's 'from' ({periods[-1].start}), got {until}"
            )
    return ModelSpec(
        id=model_id,
        periods=periods,
        aliases=_strings(obj.get("aliases", []), where / "'aliases'"),
        name=_opt_str(obj.get("name"), where / "'name'"),
        note=_opt_str(obj.get("note"), where / "'note'"),
        source=_opt_str(obj.get("source"), where / "'source'"),
        until=until,
    )


def _period(data: object, where: _Where) -> PeriodSpec:
    obj = _object(data, where)
    _check_keys(obj, where, required=_PERIOD_REQUIRED, allowed=_PERIOD_KEYS)
    rates = _rates(obj, where)
    batch = _batch(obj.get("batch"), where / "'batch'")
    tiers = tuple(
        _tier(t, where / f"tiers[{i}]", rates, batch)
        for i, t in enumerate(_list(obj.get("tiers", []), where / "'tiers'"))
    )
    for lower, upper in pairwise(tiers):
        if upper.above <= lower.above:
            raise (where / "'tiers'").error("tiers must be in increasing 'above' order")
    return PeriodSpec(
        start=_date(obj["from"], where / "'from'"), rates=rates, batch=batch, tiers=tiers
    )


def _tier(data: object, where: _Where, base: PartialRates, batch: PartialRates | None) -> TierSpec:
    obj = _object(data, where)
    _check_keys(obj, where, required=frozenset({"above"}), allowed=_TIER_KEYS)
    above = obj["above"]
    if not isinstance(above, int) or isinstance(above, bool) or above <= 0:
        raise (where / "'above'").error(f"must be a positive integer token count, got {above!r}")
    rates = _rates(obj, where)
    _require_same_rates(rates, base, where, "the period")
    tier_batch = _batch(obj.get("batch"), where / "'batch'")
    if batch is None and tier_batch is not None:
        raise (where / "'batch'").error("the period has no 'batch' rates; add them there too")
    if batch is not None:
        if tier_batch is None:
            raise where.error("the period has 'batch' rates, so each tier needs its own 'batch'")
        _require_same_rates(tier_batch, batch, where / "'batch'", "the period's 'batch'")
    return TierSpec(above=above, rates=rates, batch=tier_batch)


def _require_same_rates(rates: PartialRates, base: PartialRates, where: _Where, what: str) -> None:
    """A tier must restate every rate its base states: it may not silently inherit one."""
    for key in RATE_KEYS:
        if getattr(base, key) is not None and getattr(rates, key) is None:
            raise where.error(f"{what} sets {key!r}, so this tier must set it too")


def _batch(data: object, where: _Where) -> PartialRates | None:
    if data is None:
        return None
    obj = _object(data, where)
    _check_keys(obj, where, required=frozenset(), allowed=_RATE_KEYS)
    if not obj:
        raise where.error("is empty; give at least one rate or leave 'batch' out")
    return _rates(obj, where)


def _rates(obj: dict[str, Any], where: _Where) -> PartialRates:
    values = {k: _price(obj[k], where / repr(k)) for k in RATE_KEYS if k in obj}
    if not values:
        raise where.error(f"gives no rate; expected some of {', '.join(RATE_KEYS)}")
    return PartialRates(**values)


def _price(value: object, where: _Where) -> Decimal:
    if not isinstance(value, str):
        raise where.error(
            f'price must be a decimal string in USD per 1M tokens like "2.50", '
            f"got {value!r} ({type(value).__name__})"
        )
    if not _PRICE_RE.fullmatch(value):
        raise where.error(f'price must be a plain non-negative decimal like "0.075", got {value!r}')
    return Decimal(value)


def _date(value: object, where: _Where) -> date:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise where.error(f'must be a date string "YYYY-MM-DD", got {value!r}')
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise where.error(f"{value!r} is not a real date") from None


def _check_names(models: tuple[ModelSpec, ...], where: _Where) -> None:
    _unique((m.id for m in models), where / "'models'", "model id")
    ids = {m.id.lower() for m in models}
    seen: set[str] = set()
    for model in models:
        for alias in model.aliases:
            key = alias.lower()
            if key in ids:
                raise (where / f"model {model.id!r}").error(f"alias {alias!r} is also a model id")
            if key in seen:
                raise (where / f"model {model.id!r}").error(f"alias {alias!r} is used twice")
            seen.add(key)


def _unique(names: Iterable[str], where: _Where, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise where.error(f"{what} {name!r} appears twice (ids are case-insensitive)")
        seen.add(name.lower())


def _check_keys(
    obj: dict[str, Any], where: _Where, *, required: frozenset[str], allowed: Iterable[str]
) -> None:
    allowed = frozenset(allowed)
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        raise where.error(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - obj.keys())
    if missing:
        raise where.error(f"missing required field {missing[0]!r}")


def _object(value: object, where: _Where) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: object, where: _Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(f"must be a JSON list, got {type(value).__name__}")
    return value


def _strings(value: object, where: _Where) -> tuple[str, ...]:
    items = _list(value, where)
    for item in items:
        if not isinstance(item, str) or not item.strip() or " " in item:
            raise where.error(f"must be a list of non-empty strings without spaces, got {item!r}")
    return tuple(items)


def _opt_str(value: object, where: _Where) -> str | None:
    if value is not None and not isinstance(value, str):
        raise where.error(f"must be a string, got {type(value).__name__}")
    return value


def _bool(value: object, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"must be true or false, got {value!r}")
    return value


def _provider_name(value: object, where: _Where) -> str:
    if not isinstance(value, str) or not _PROVIDER_RE.fullmatch(value):
        raise where.error(f"provider names are lower-case like 'openai' without '/', got {value!r}")
    return value
