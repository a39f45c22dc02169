"""Find a model in the price tables: exact id, then alias, then longest prefix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._types import MatchKind, ModelSpec, ProviderTable

__all__ = ["Catalog", "Match"]

# A prefix only matches where the rest of the name starts with one of these:
# `gpt-4o` prices `gpt-4o-2024-08-06` and `claude-sonnet-4` prices `claude-sonnet-4@20250514`,
# but `gpt-4` never prices `gpt-4o`.
_BOUNDARIES = frozenset("-.:@")
_STRIP = ("models/",)  # Gemini's REST API names models `models/gemini-2.5-pro`
_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Match:
    provider: str
    model: ModelSpec
    matched: MatchKind


class _ProviderIndex:
    """The merged models of one provider, indexed for the three kinds of match."""

    def __init__(self, provider: str, models: Sequence[ModelSpec]) -> None:
        self.provider = provider
        self.models: dict[str, ModelSpec] = {}
        aliases: dict[str, str] = {}
        for model in models:  # later models (user files) replace earlier ones
            self.models[model.id.lower()] = model
            for alias in model.aliases:
                aliases[alias.lower()] = model.id.lower()
        self.aliases = {a: mid for a, mid in aliases.items() if a not in self.models}
        keys = list(self.models) + list(self.aliases)
        self.prefixes = sorted(keys, key=len, reverse=True)

    def exact(self, name: str) -> Match | None:
        model = self.models.get(name)
        return Match(self.provider, model, "exact") if model else None

    def alias(self, name: str) -> Match | None:
        target = self.aliases.get(name)
        return Match(self.provider, self.models[target], "alias") if target else None

    def prefix(self, name: str) -> tuple[int, Match] | None:
        for key in self.prefixes:
            if len(name) > len(key) and name.startswith(key) and name[len(key)] in _BOUNDARIES:
                model = self.models.get(key) or self.models[self.aliases[key]]
                return len(key), Match(self.provider, model, "prefix")
        return None

    def find(self, name: str) -> Match | None:
        found = self.exact(name) or self.alias(name)
        if found:
            return found
        hit = self.prefix(name)
        return hit[1] if hit else None


class Catalog:
    """Every provider's merged table, searchable by ``provider/model`` or a bare model name."""

    def __init__(self, tables: Iterable[ProviderTable]) -> None:
        merged: dict[str, list[ModelSpec]] = {}
        self._names: dict[str, str] = {}  # provider name or alias -> canonical provider
        self._vendor_fallback: set[str] = set()
        for table in tables:
            provider = self._names.get(table.provider, table.provider)
            self._names[provider] = provider
            for alias in table.aliases:
                self._names.setdefault(alias, provider)
            if table.vendor_fallback:
                self._vendor_fallback.add(provider)
            merged.setdefault(provider, []).extend(table.models)
        self._index = {p: _ProviderIndex(p, models) for p, models in merged.items()}
        self._found: dict[str, Match | None] = {}

    def models(self) -> list[str]:
        """Every model as ``provider/model`` (ids as written, aliases left out)."""
        return sorted(f"{p}/{m.id}" for p, idx in self._index.items() for m in idx.models.values())

    def find(self, query: str) -> Match | None:
        """Memoised: a run asks for the same few models over and over."""
        try:
            return self._found[query]
        except KeyError:
            if len(self._found) >= _MEMO_SIZE:
                self._found.clear()
            found = self._found[query] = self._find(query)
            return found

    def _find(self, query: str) -> Match | None:
        name = query.strip().lower()
        head, slash, rest = name.partition("/")
        if slash and head in self._names:
            return self._in_provider(self._names[head], _strip(rest))
        return self._anywhere(_strip(name))

    def _in_provider(self, provider: str, name: str) -> Match | None:
        found = self._index[provider].find(name)
        if found or provider not in self._vendor_fallback:
            return found
        # a router (OpenRouter) names first-party models `vendor/model`: price them as the vendor
        vendor, slash, rest = name.partition("/")
        target = self._names.get(vendor) if slash else None
        if target is None or target == provider:
            return None
        return self._index[target].find(_strip(rest))

    def _anywhere(self, name: str) -> Match | None:
        indexes = list(self._index.values())
        for idx in indexes:
            found = idx.exact(name)
            if found:
                return found
        for idx in indexes:
            found = idx.alias(name)
            if found:
                return found
        best: tuple[int, Match] | None = None
        for idx in indexes:
            hit = idx.prefix(name)
            if hit and (best is None or hit[0] > best[0]):
                best = hit
        return best[1] if best else None


def _strip(name: str) -> str:
    for prefix in _STRIP:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
