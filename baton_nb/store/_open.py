"""Opening a store from a URL: SQLite or Postgres (``SqlStore``), or memory (``MemoryStore``)."""

from __future__ import annotations

import os

from ._engine import resolve_url
from ._interface import RunStore
from ._memory import MemoryStore, is_memory_store_url
from ._sql_batches import SqlProviderBatches
from ._sql_read import SqlReads
from ._sql_runs import SqlRuns
from ._sql_spend import SqlSpend

__all__ = ["SqlStore", "Store"]


class SqlStore(SqlRuns, SqlReads, SqlProviderBatches, SqlSpend):
    """The repository on SQLite (aiosqlite) or Postgres (asyncpg), through SQLAlchemy.

    One class for both; the dialect differences live in ``_engine`` and in the few
    statements that branch on ``self.dialect``.
    """


class Store:
    """``await Store.open(db)``: the store at a database URL (a ``RunStore``)."""

    @staticmethod
    async def open(db: str | os.PathLike[str] | None = None, *, shared: bool = False) -> RunStore:
        """Open ``db`` (default: env ``BATON_NB_DB``, else ``sqlite:///baton.db``), creating
        or upgrading its schema. ``memory://NAME`` is the in-memory store. ``shared``: a
        Postgres database through the running loop's engine for it (a run's store:
        ``_shared_engines``)."""
        url = resolve_url(db)
        if is_memory_store_url(url):
            return MemoryStore(url)
        return await SqlStore.open(url, shared=shared)
