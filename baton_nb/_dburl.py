"""Database URLs as users give them (no engine, no I/O)."""

from __future__ import annotations

import os

from ._errors import ConfigurationError

__all__ = ["DEFAULT_URL", "resolve_url"]

DEFAULT_URL = "sqlite:///baton.db"
_SCHEMES = ("sqlite", "postgresql", "sqlite+aiosqlite", "postgresql+asyncpg", "memory")


def resolve_url(db: str | os.PathLike[str] | None) -> str:
    """The URL to use: ``db``, else env ``BATON_NB_DB``, else ``sqlite:///baton.db``."""
    if db is None:
        db = os.environ.get("BATON_NB_DB") or DEFAULT_URL
    if isinstance(db, os.PathLike):
        return "sqlite:///" + os.fspath(db)
    if not isinstance(db, str) or not db.strip():
        raise ConfigurationError(f"db must be a database URL string, got {db!r}")
    db = db.strip()
    if db.startswith("postgres://"):
        db = "postgresql://" + db[len("postgres://") :]
    scheme = db.split("://", 1)[0] if "://" in db else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported db URL {db!r}: use 'sqlite:///path.db', 'sqlite:///:memory:', "
            "'postgresql://user@host:5432/dbname' or 'memory://' (in-memory, not durable)"
        )
    return db
