"""Where a price comes from: the user's files, then baton_nb's shipped overrides, then
genai-prices — and which model of which provider a name denotes.

A name is looked up by kind of match first and by layer second: an exact id in any
layer beats an alias, and an alias beats a dated snapshot, so ``gpt-4o-2024-05-13``
(genai-prices' own entry, $5/$15) is never priced as a snapshot of an override's
``gpt-4o``. Within a kind the user's files win, then the shipped overrides, then
genai-prices. A model the user's file gives the same id as a model found in a lower
layer replaces it under every name that finds it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from .._errors import ConfigurationError
from . import _genai
from ._match import MATCH_KINDS, MatchKind, NameIndex, normalise
from ._parse import load_price_file
from ._types import ModelSpec, ProviderTable

__all__ = [
    "OVERRIDE_SOURCE",
    "Found",
    "Layer",
    "add_overrides",
    "data_dir",
    "find",
    "known_models",
    "reset",
]

_PKG = Path(__file__).resolve().parent.parent  # .../baton_nb
OVERRIDE_SOURCE = "baton_nb override"
Layer = Literal["user", "override", "genai"]
_MEMO_SIZE = 4096
MOCK = "mock"  # the offline provider: its models are priced as the model they name


@dataclass(frozen=True, slots=True, eq=False)
class Found:
    """The price entry a name denotes: ``spec`` (a price file's model) or ``info`` (a
    genai-prices ``ModelInfo``). Compared and hashed by identity: the catalog memoises
    them, so prices computed from one can be memoised too."""

    provider: str
    model: str
    matched: MatchKind
    layer: Layer
    source: str
    spec: ModelSpec | None = None
    table: ProviderTable | None = None
    info: Any = None

    @property
    def model_ref(self) -> str:
        return f"{self.provider}/{self.model}"


def data_dir() -> Path:
    """Where the shipped overrides are: inside an installed wheel, else the source tree."""
    candidates = (_PKG / "_pricing_data", _PKG.parent / "pricing")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise ConfigurationError(
        f"baton_nb's price overrides are missing (looked in {looked}); reinstall baton-nb"
    )


def _canonical(name: str, table_aliases: dict[str, str]) -> str:
    """genai-prices' id for a provider it knows (``gemini`` -> ``google``), else the name
    the price files give it."""
    name = table_aliases.get(name, name)
    provider = _genai.find_provider(name)
    return str(provider.id) if provider is not None else name


class _TableLayer:
    """The models of some price files, per canonical provider, findable by name."""

    def __init__(self, layer: Layer, tables: Iterable[tuple[ProviderTable, str]]) -> None:
        tables = list(tables)
        self.layer = layer
        aliases: dict[str, str] = {}
        for table, _ in tables:
            for alias in table.aliases:
                aliases.setdefault(alias, table.provider)
        self.names: dict[str, str] = {}  # provider name or alias -> canonical
        self.vendor_fallback: set[str] = set()
        grouped: dict[str, list[tuple[ModelSpec, ProviderTable, str]]] = {}
        for table, source in tables:
            provider = _canonical(table.provider, aliases)
            for name in (table.provider, *table.aliases):
                self.names[name] = provider
            if table.vendor_fallback:
                self.vendor_fallback.add(provider)
            grouped.setdefault(provider, []).extend((m, table, source) for m in table.models)
        self.index = {
            provider: NameIndex((entry, entry[0].id, entry[0].aliases) for entry in entries)
            for provider, entries in grouped.items()
        }

    def find(self, provider: str, name: str, kind: MatchKind, day: date) -> Found | None:
        index = self.index.get(provider)
        hit = index.find(name, kind) if index is not None else None
        if hit is None or not hit[0].active(day):
            return None
        spec, table, source = hit
        return Found(provider, spec.id, kind, self.layer, source, spec=spec, table=table)

    def by_id(self, provider: str, model_id: str, day: date) -> Found | None:
        return self.find(provider, normalise(model_id), "exact", day)


class _Catalog:
    def __init__(self, shipped: list[ProviderTable], user: list[ProviderTable]) -> None:
        self.user = _TableLayer("user", ((t, _user_source(t)) for t in user))
        self.override = _TableLayer("override", ((t, OVERRIDE_SOURCE) for t in shipped))
        self._found: dict[tuple[str, date], Found | None] = {}

    def provider(self, name: str) -> str | None:
        for layer in (self.user, self.override):
            if name in layer.names:
                return layer.names[name]
        found = _genai.find_provider(name)
        return str(found.id) if found is not None else None

    def find(self, query: str, day: date) -> Found | None:
        """Memoised: a run asks for the same few models over and over."""
        key = (query, day)
        try:
            return self._found[key]
        except KeyError:
            if len(self._found) >= _MEMO_SIZE:
                self._found.clear()
            found = self._found[key] = self._find(query, day)
            return found

    def _find(self, query: str, day: date) -> Found | None:
        name = normalise(query)
        head, slash, rest = name.partition("/")
        if slash and head == MOCK:
            return self._mock(normalise(rest), day)
        provider = self.provider(head) if slash else None
        if provider is not None:
            return self._in_provider(provider, normalise(rest), day, fallback=True)
        # No provider named: the model's maker, by genai-prices' rules (`gpt-…` is
        # OpenAI's, `claude-…` Anthropic's); never a reseller's price.
        maker = _genai.maker(name)
        if maker is None:
            return None
        return self._in_provider(str(maker.id), name, day, fallback=False)

    def _mock(self, name: str, day: date) -> Found | None:
        """``mock/NAME``: a price file's ``mock`` entry for NAME, else NAME as its maker's
        (``mock/gpt-4o-mini`` costs what ``gpt-4o-mini`` costs). The one lookup of a mock
        model, for ``bn.price``, ``lookup``, the mock's calls and ``reprice`` alike."""
        provider = self.provider(MOCK)
        if provider is not None:
            found = self._in_provider(provider, name, day, fallback=False)
            if found is not None:
                return found
        return self._find(name, day)

    def _in_provider(self, provider: str, name: str, day: date, *, fallback: bool) -> Found | None:
        genai_provider = _genai.find_provider(provider)
        for kind in MATCH_KINDS:
            for layer in (self.user, self.override):
                found = layer.find(provider, name, kind, day)
                if found is not None:
                    return self._user_replacement(found, day)
            if genai_provider is not None:
                info = _genai.provider_index(genai_provider).find(name, kind)
                if info is not None:
                    found = Found(provider, info.id, kind, "genai", _genai.label(), info=info)
                    return self._user_replacement(found, day)
        return self._fallback(provider, genai_provider, name, day) if fallback else None

    def _user_replacement(self, found: Found, day: date) -> Found:
        if found.layer == "user":
            return found
        mine = self.user.by_id(found.provider, found.model, day)
        if mine is None:
            return found
        return Found(found.provider, mine.model, found.matched, "user", mine.source,
                     spec=mine.spec, table=mine.table)  # fmt: skip

    def _fallback(self, provider: str, genai_provider: Any, name: str, day: date) -> Found | None:
        """A provider that serves other vendors' models at their prices: genai-prices'
        ``fallback_model_providers`` (Azure: OpenAI's models), or a price file's
        ``vendor_fallback`` (OpenRouter's ``vendor/model`` names)."""
        for other in (genai_provider.fallback_model_providers or []) if genai_provider else []:
            found = self._in_provider(str(other), name, day, fallback=False)
            if found is not None:
                return found
        vendor, slash, model = name.partition("/")
        if slash and provider in (self.user.vendor_fallback | self.override.vendor_fallback):
            target = self.provider(vendor)
            if target is not None and target != provider:
                return self._in_provider(target, model, day, fallback=False)
        return None

    def models(self) -> list[str]:
        out = {f"{p}/{mid}" for layer in (self.user, self.override)
               for p, idx in layer.index.items() for mid in idx.ids()}  # fmt: skip
        for provider in _genai.providers():
            out.update(f"{provider.id}/{m.id}" for m in provider.models)
        return sorted(out)


def _user_source(table: ProviderTable) -> str:
    return f"user file {table.path.name}" if table.path is not None else "user file"


_lock = threading.Lock()
_shipped: list[ProviderTable] | None = None
_user: list[ProviderTable] = []
_catalog: _Catalog | None = None


def catalog() -> _Catalog:
    global _catalog, _shipped
    current = _catalog
    if current is not None:
        return current
    with _lock:
        if _catalog is None:
            if _shipped is None:
                files = sorted(data_dir().glob("*.json"))
                _shipped = [t for f in files for t in load_price_file(f).providers]
            _catalog = _Catalog(_shipped, list(_user))
        return _catalog


def find(query: str, day: date) -> Found | None:
    return catalog().find(query, day)


def known_models() -> list[str]:
    return catalog().models()


def add_overrides(tables: tuple[ProviderTable, ...]) -> None:
    """Lay user tables over everything loaded so far (the last one added wins)."""
    global _catalog
    with _lock:
        _user.extend(tables)
        _catalog = None


def reset() -> None:
    """Forget user files (tests use this)."""
    global _catalog
    with _lock:
        _user.clear()
        _catalog = None
