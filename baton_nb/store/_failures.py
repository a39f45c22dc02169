"""Storage failures as ``bn.StorageError``: what is wrong and what to do, never SQL text.

SQLAlchemy's own messages carry the statement and its parameters (step results, params,
prompts); the driver's message (SQLite's, Postgres's) is what the user needs, with advice
for the failures a user can fix: a read-only or damaged file, a full disk, a server that
is down, silent or refuses the login.
"""

from __future__ import annotations

import os
import re
import sqlite3
import ssl
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .._dburl import connect_timeout, safe_url, server_hosts, tls_files
from .._errors import StorageError

__all__ = ["driver_errors", "storage_error"]

# (what the driver says, in lower case) -> (what is wrong, what to do)
_SQLITE_ADVICE: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("readonly database", "read-only", "readonly"),
        "the database file is read-only",
        "Make the file (and its folder) writable by this user, or use another database "
        "(db= or BATON_NB_DB); the runs stored in it can still be read.",
    ),
    (
        ("malformed",),
        "the database file is damaged",
        "Keep a copy of it and recover what it holds (sqlite3 {file} .recover > dump.sql); "
        "use another database (db= or BATON_NB_DB) for new runs.",
    ),
    (
        ("not a database", "file is encrypted"),
        "the file is not an SQLite database (or its first page is damaged)",
        "Check that the file path is right (db= or BATON_NB_DB); if it holds your runs, keep "
        "a copy and recover what it can (sqlite3 {file} .recover > dump.sql).",
    ),
    (
        ("database or disk is full",),
        "the disk is full",
        "Free some space (bn.prune() deletes old runs), then resume the run.",
    ),
    (
        ("disk i/o error",),
        "the disk reported an I/O error",
        "Check the disk and the file, then resume the run.",
    ),
    (
        ("database is locked", "database table is locked"),
        "another connection held the database's write lock for too long",
        "Close other programs writing to this file, then try again.",
    ),
    (
        ("unable to open database file",),
        "the database file cannot be opened",
        "Check that the path is right and that its folder is readable and writable "
        "(db= or BATON_NB_DB).",
    ),
)
# Postgres SQLSTATE class (first two characters) or code -> what to do
_POSTGRES_ADVICE = {
    "08": "Check that the server is running and that host and port in the URL are right.",
    "28": "Check the user name and password in the URL (or ~/.pgpass).",
    "3D": "Create the database (createdb NAME) or fix its name in the URL.",
    "42501": "Grant this user the rights it needs on the database.",
    "53": "The server is out of resources (disk, memory or connections); free some, then "
    "try again.",
    "57": "The server ended the connection (shutting down, restarting, or an administrator "
    "ended it); check that it is running, then try again.",
    "25006": "The server accepts no writes (a read-only standby?); point the URL at the primary.",
}
_GENERIC_ADVICE = (
    "Check the database (db= or BATON_NB_DB); runs already stored are kept, and an "
    "interrupted run can be resumed with wf.run(run_id=...)."
)
_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def driver_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the database failed (SQLAlchemy's, the drivers', the network's).

    asyncpg's are included once it is imported: before that none can be raised.
    """
    errors: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error, OSError)
    asyncpg: Any = sys.modules.get("asyncpg")
    if asyncpg is not None:
        errors += (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    return errors


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection it ran on had ended (the server ended it, the
    network cut it): another connection may well work. Not a refused connect."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    exc = _driver_exception(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return True
    asyncpg: Any = sys.modules.get("asyncpg")
    if asyncpg is None or isinstance(exc, asyncpg.ClientConfigurationError):
        return False  # a bad URL or option (an InterfaceError too): another try fails alike
    return isinstance(
        exc,
        # a client-side error: asyncpg's protocol left mid-operation by the loss
        asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.AdminShutdownError,
    )


def storage_error(exc: BaseException, url: str, doing: str) -> StorageError:
    """A ``StorageError`` for ``exc``: ``"cannot {doing} database URL: problem. advice"``."""
    problem, advice = _explain(_driver_exception(exc), url)
    return StorageError(f"cannot {doing} database {safe_url(url)!r}: {problem}. {advice}")


def _driver_exception(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (and its asyncpg adapter)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("asyncpg"):
        exc = cause
    return exc


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, SQLAlchemyError):  # no driver message: SQLAlchemy's, without SQL
        text = str(exc).split("\n[SQL:", 1)[0]
        text = _BACKGROUND.sub("", text)
    else:
        text = str(exc)
    text = text.strip().splitlines()[0] if text.strip() else ""
    return text or type(exc).__name__


def _explain(exc: BaseException, url: str) -> tuple[str, str]:
    """(what is wrong, what to do) for the driver's exception ``exc``."""
    message = _first_line(exc)
    if isinstance(exc, TimeoutError):
        host = _host(url)
        return (
            f"no answer from {host} within {connect_timeout(url):g} s",
            "Check that a database server listens there (a firewall may swallow the "
            "connection); on a slow network raise connect_timeout= in the URL.",
        )
    if isinstance(exc, sqlite3.Error) or url.startswith("sqlite"):
        lowered = message.lower()
        for needles, problem, todo in _SQLITE_ADVICE:
            if any(n in lowered for n in needles):
                return f"{problem} ({message})", todo.format(file=_sqlite_path(url))
        return message, _GENERIC_ADVICE
    asyncpg: Any = sys.modules.get("asyncpg")
    if asyncpg is not None and isinstance(exc, asyncpg.ClientConfigurationError):
        # a setting asyncpg refuses as it connects (sslnegotiation=direct without
        # sslmode=require, verify-ca without a root certificate): not a broken connection
        about_tls = any(word in message.lower() for word in ("ssl", "tls", "certificate"))
        todo = _TLS_ADVICE if about_tls else "Fix the URL's parameters (docs/storage.md)."
        return f"asyncpg refuses the connection's settings ({message})", todo
    if isinstance(exc, OSError):  # refused, unreachable, unknown host; TLS
        tls = _tls_problem(exc, url)
        if tls is not None:
            return f"{tls} ({message})", _TLS_ADVICE
        return (
            f"cannot connect to {_host(url)} ({message})",
            _POSTGRES_ADVICE["08"],
        )
    state = str(getattr(exc, "sqlstate", "") or "")
    advice = _POSTGRES_ADVICE.get(state) or _POSTGRES_ADVICE.get(state[:2])
    client_side = (asyncpg.InterfaceError, asyncpg.InternalClientError) if asyncpg else ()
    if advice is None and isinstance(exc, client_side):
        # The connection closed or broke mid-operation (server restarted, backend
        # terminated, network cut); asyncpg's protocol may then be left mid-operation.
        return f"the connection to {_host(url)} broke ({message})", _POSTGRES_ADVICE["08"]
    return message, advice or _GENERIC_ADVICE


_TLS_ADVICE = (
    "Check the URL's sslmode= and the files it names (sslrootcert=, sslcert=, sslkey=: "
    "they must exist and be readable by this user); a server without TLS takes "
    "sslmode=prefer or sslmode=disable (on a network you trust), one with TLS its CA "
    "certificate as sslrootcert= (docs/storage.md)."
)


def _tls_problem(exc: OSError, url: str) -> str | None:
    """What went wrong with TLS as asyncpg connected, or None for another failure."""
    if "rejected SSL upgrade" in str(exc):
        return f"the server at {_host(url)} does not accept TLS, which the URL's sslmode= asks for"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the certificate of the server at {_host(url)} does not verify"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the server at {_host(url)} failed"
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        named = _unreadable_tls_file(exc, url)
        if named is not None:
            return f"a TLS file the URL names cannot be read ({named})"
    return None


def _unreadable_tls_file(exc: OSError, url: str) -> str | None:
    """``name=path`` of the TLS file (``sslrootcert=``, ``sslcert=``, ...) that ``exc``
    failed to read, or None when it is not about one: a Unix socket that is not there
    fails alike. OpenSSL's errors name no file (``exc.filename`` None): then the file
    asyncpg reads for the URL's ``sslmode`` that cannot be read now."""
    for name, path in tls_files(url).items():
        if exc.filename is not None:
            if os.fspath(exc.filename) == path:
                return f"{name}={path}"
        elif not (os.path.isfile(path) and os.access(path, os.R_OK)):
            return f"{name}={path}"
    return None


def _sqlite_path(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return (rest[1:] if rest.startswith("/") else rest).split("?", 1)[0] or "FILE"


def _host(url: str) -> str:
    """``host:port`` of a server URL, as written (default port 5432), never its
    credentials; a Unix socket's directory (``?host=/run/postgresql``) as it is."""
    hosts = server_hosts(url) or "localhost"
    if hosts.startswith("/"):
        return hosts
    return hosts if ":" in hosts.rpartition("]")[2] else f"{hosts}:5432"
