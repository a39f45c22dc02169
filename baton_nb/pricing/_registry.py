"""The process-wide price catalog: shipped tables, loaded lazily once, plus user overrides."""

from __future__ import annotations

import threading
from pathlib import Path

from .._errors import ConfigurationError
from ._match import Catalog, Match
from ._parse import load_price_file
from ._types import ProviderTable

__all__ = ["add_overrides", "catalog", "data_dir", "find", "reset"]

_PKG = Path(__file__).resolve().parent.parent  # .../baton_nb
# First-party providers first: a bare model name found in several tables is theirs.
_FIRST = ("openai", "anthropic", "google")

_lock = threading.Lock()
_shipped: tuple[ProviderTable, ...] | None = None
_overrides: list[ProviderTable] = []
_catalog: Catalog | None = None


def data_dir() -> Path:
    """Where the shipped tables are: inside an installed wheel, else the source tree."""
    candidates = (_PKG / "_pricing_data", _PKG.parent / "pricing")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise ConfigurationError(
        f"baton_nb's price tables are missing (looked in {looked}); reinstall baton-nb"
    )


def catalog() -> Catalog:
    global _catalog
    current = _catalog
    if current is not None:
        return current
    with _lock:
        if _catalog is None:
            _catalog = Catalog((*_load_shipped(), *_overrides))
        return _catalog


def find(query: str) -> Match | None:
    return catalog().find(query)


def add_overrides(tables: tuple[ProviderTable, ...]) -> None:
    """Lay user tables over everything loaded so far (the last one added wins)."""
    global _catalog
    with _lock:
        _overrides.extend(tables)
        _catalog = None


def reset() -> None:
    """Forget user overrides (tests use this)."""
    global _catalog
    with _lock:
        _overrides.clear()
        _catalog = None


def _load_shipped() -> tuple[ProviderTable, ...]:
    global _shipped
    if _shipped is None:
        files = sorted(data_dir().glob("*.json"), key=_file_order)
        _shipped = tuple(t for f in files for t in load_price_file(f).providers)
    return _shipped


def _file_order(path: Path) -> tuple[int, str]:
    rank = _FIRST.index(path.stem) if path.stem in _FIRST else len(_FIRST)
    return rank, path.stem
