"""Database URLs as users give them (no engine, no I/O)."""

from __future__ import annotations

import math
import os
import re

from ._errors import ConfigurationError

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_URL", "connect_timeout", "resolve_url", "safe_url"]

DEFAULT_URL = "sqlite:///baton.db"
CONNECT_TIMEOUT = 10.0  # seconds to wait for a database server to answer a connection
_SCHEMES = ("sqlite", "postgresql", "sqlite+aiosqlite", "postgresql+asyncpg", "memory")
# ``scheme://user:password@`` -> ``scheme://user:***@`` (as SQLAlchemy renders it), done on
# the text so that a URL too broken to parse is still shown without its password.
_PASSWORD = re.compile(r"^([a-z0-9+]+://[^:/@?#]*):[^@/?#]*@", re.IGNORECASE)


def safe_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: fit for messages and logs."""
    return _PASSWORD.sub(r"\1:***@", url)


def resolve_url(db: str | os.PathLike[str] | None) -> str:
    """The URL to use: ``db``, else env ``BATON_NB_DB``, else ``sqlite:///baton.db``.

    Checked here, before any run writes: the scheme, a SQLite URL's file path (``sqlite://``
    and ``sqlite:///`` name no file: SQLAlchemy would make them an in-memory database that
    is gone at exit) and a server URL's port and connect_timeout. ``memory://NAME`` (the
    in-memory store) takes any NAME.
    """
    if db is None and os.environ.get("BATON_NB_DB"):
        try:
            return resolve_url(os.environ["BATON_NB_DB"])
        except ConfigurationError as e:  # the user wrote no db=: say where the URL came from
            raise ConfigurationError(
                f"{e} (the URL is the environment variable BATON_NB_DB: fix or unset it, "
                "or pass db=)"
            ) from None
    if db is None:
        db = DEFAULT_URL
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
            f"unsupported db URL {safe_url(db)!r}: use 'sqlite:///path.db', "
            "'sqlite:///:memory:', 'postgresql://user@host:5432/dbname' or 'memory://NAME' "
            "(in-memory, not durable)"
        )
    if scheme.startswith("sqlite"):
        _check_sqlite_path(db)
    elif scheme != "memory":  # memory://NAME: any NAME (no host, port or file)
        _check_port(db)
        connect_timeout(db)
    return db


def _check_sqlite_path(url: str) -> None:
    rest = url.split("://", 1)[1]
    path = rest[1:] if rest.startswith("/") else rest
    if not path.split("?", 1)[0]:
        raise ConfigurationError(
            f"db URL {url!r} names no database file; use 'sqlite:///runs.db' (a file, kept "
            "across sessions) or 'sqlite:///:memory:' (gone when the process exits)"
        )


def _check_port(url: str) -> None:
    """A ``host:port`` whose port is not a number in 1..65535 is refused, naming the URL."""
    netloc = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
    for host in netloc.rsplit("@", 1)[-1].split(","):  # asyncpg takes h1:p1,h2:p2
        tail = host.partition("]")[2] if host.startswith("[") else host  # after [IPv6]
        if ":" not in tail:
            continue
        port = tail.rpartition(":")[2]
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError(
                f"db URL {safe_url(url)!r}: port {port!r} is not a port number (1-65535); "
                "write it as postgresql://user@host:5432/dbname, or leave ':port' out for 5432"
            )


def connect_timeout(url: str) -> float:
    """Seconds to wait for a database server's answer when connecting: the URL's
    ``connect_timeout`` (libpq's name for it), else ``CONNECT_TIMEOUT``."""
    query = url.partition("?")[2]
    for pair in query.split("&") if query else ():
        name, _, value = pair.partition("=")
        if name != "connect_timeout":
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigurationError(
                f"db URL {safe_url(url)!r}: connect_timeout={value!r} must be a number of "
                "seconds > 0"
            )
        return seconds
    return CONNECT_TIMEOUT
