"""How a model name finds its price: an exact id, an alias, or a dated snapshot of the same
model — never another model of the family.

``gpt-4o-2024-08-06`` may find ``gpt-4o`` (a date is a snapshot of the same model), but
``gpt-5.5`` never finds ``gpt-5`` and ``claude-opus-4-7`` never finds ``claude-opus-4``:
what follows the known name must be a snapshot suffix, not any text after a ``-`` or
``.``. One matcher serves every price layer (user files, the shipped overrides and
genai-prices), so the three cannot disagree on what a name means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, Literal, TypeVar

__all__ = ["MATCH_KINDS", "MatchKind", "NameIndex", "normalise", "snapshot_base"]

MatchKind = Literal["exact", "alias", "snapshot"]
MATCH_KINDS: tuple[MatchKind, ...] = ("exact", "alias", "snapshot")

# A dated snapshot of a model: `-2024-08-06`, `-20250514`, `@20250514` (Vertex AI),
# `-0613` (a month and day, as `gpt-4-0613` or `grok-4-0709`), `-06-17` or `-09-2025`
# (Gemini previews: `gemini-2.5-flash-lite-preview-06-17`) or a version `-001` (Gemini).
# Months and days must be real: `-2411` or `-2512` (Mistral's year-month releases, which
# are different models) are not snapshots.
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_SNAPSHOT = re.compile(
    rf"(?:[-@](?:20\d\d-{_MONTH}-{_DAY}|20\d\d{_MONTH}{_DAY})"
    rf"|-{_MONTH}-?{_DAY}"
    rf"|-{_MONTH}-20\d\d"
    r"|-0\d\d)$"
)
_PREFIXES = ("models/",)  # Gemini's REST API names models `models/gemini-2.5-pro`

T = TypeVar("T")


def normalise(name: str) -> str:
    """Lower case, no surrounding blanks, no ``models/`` prefix."""
    name = name.strip().lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def snapshot_base(name: str) -> str | None:
    """The model a dated snapshot name belongs to (``gpt-4o-2024-08-06`` -> ``gpt-4o``),
    or ``None`` if the name does not end with a snapshot suffix."""
    found = _SNAPSHOT.search(name)
    if found is None or found.start() == 0:
        return None
    return name[: found.start()]


class NameIndex(Generic[T]):
    """Names of the models of one price layer and provider: ids and aliases.

    ``first_wins`` keeps the first model that claims a name (genai-prices' own order);
    otherwise a later model replaces an earlier one (a later user file wins).
    """

    def __init__(
        self, entries: Iterable[tuple[T, str, Iterable[str]]], *, first_wins: bool = False
    ) -> None:
        self._ids: dict[str, T] = {}
        self._aliases: dict[str, T] = {}
        self._spelled: dict[str, str] = {}  # normalised id -> as written
        for item, model_id, aliases in entries:
            self._spelled.setdefault(normalise(model_id), model_id)
            self._put(self._ids, normalise(model_id), item, first_wins)
            for alias in aliases:
                self._put(self._aliases, normalise(alias), item, first_wins)

    @staticmethod
    def _put(names: dict[str, T], name: str, item: T, first_wins: bool) -> None:
        if name and not (first_wins and name in names):
            names[name] = item

    def find(self, name: str, kind: MatchKind) -> T | None:
        """The model ``name`` (already normalised) denotes with this ``kind`` of match."""
        if kind == "exact":
            return self._ids.get(name)
        if kind == "alias":
            return self._aliases.get(name) if name not in self._ids else None
        base = snapshot_base(name)
        if base is None:
            return None
        return self._ids.get(base) or self._aliases.get(base)

    def ids(self) -> list[str]:
        """The model ids, as written."""
        return list(self._spelled.values())
