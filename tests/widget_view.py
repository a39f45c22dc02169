"""What dag.js reads of the widget's columns (``fromColumns``, ``column``), in Python: the
tests read what the kernel sends as the view does. ``test_widget.py`` checks these against
dag.js itself (node)."""

from __future__ import annotations

from typing import Any


def read_column(column: Any, size: int) -> list[Any]:
    """dag.js ``column``: a list; ``{"all": v}``; ``{"all": v, "at": [...], "v": [...]}``."""
    if isinstance(column, list):
        return column
    values = [column["all"]] * size
    for at, value in zip(column.get("at", ()), column.get("v", ()), strict=True):
        values[at] = value
    return values


def from_columns(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """dag.js ``fromColumns``: entries sent as columns (``_state.columns``), a dict each."""
    size = len(cols.get("id", []))
    lists = {key: read_column(col, size) for key, col in cols.items()}
    return [{key: values[i] for key, values in lists.items()} for i in range(size)]
