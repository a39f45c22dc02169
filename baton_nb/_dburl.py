"""Database URLs as users give them (no engine, no I/O)."""

from __future__ import annotations

import difflib
import math
import os
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigurationError

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_URL",
    "ServerConnect",
    "connect_timeout",
    "resolve_url",
    "safe_url",
    "server_connect",
    "server_hosts",
    "tls_files",
]

DEFAULT_URL = "sqlite:///baton.db"
CONNECT_TIMEOUT = 10.0  # seconds to wait for a database server to answer a connection
_SCHEMES = ("sqlite", "postgresql", "sqlite+aiosqlite", "postgresql+asyncpg", "memory")
# ``user:password@`` after ``scheme://``, read with SQLAlchemy's own pattern (``make_url``):
# the user name runs to a ``:`` or ``/`` and may hold ``@`` (Azure's ``user@server``), the
# password runs to the first ``@`` whatever else it holds (an unencoded ``/`` or ``?`` in
# it is the password's, not the path's or query's). Done on the text so that a URL too
# broken to parse is still shown without its password.
_CREDENTIALS = re.compile(r"(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@")
_SECRET_PARAMETERS = ("password", "sslpassword")  # query values shown as ``***``
_QUERY_PAIRS = re.compile(r"[A-Za-z_][\w.%-]*=[^&]*(?:&[A-Za-z_][\w.%-]*=[^&]*)*")


def safe_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, and the values of the query's
    ``password=`` and ``sslpassword=``: fit for messages and logs. An ``@`` after the one
    that ends the credentials as SQLAlchemy reads them, before the path or query (a password
    with an unencoded ``@``: ``user:pa@ss@host``), hides all from ``scheme://`` to the last
    such ``@``: whatever it holds is not shown."""
    scheme, mark, rest = url.partition("://")
    if not mark:
        return _safe_query(url)
    end, password = _credentials(rest)
    stray = _stray_at(rest, end)
    if stray is None and not end and scheme.startswith("postgres"):
        # credentials SQLAlchemy does not read as such (a user name with a '/': ``u/x:pw@h``)
        stray = rest.partition("?")[0].rfind("@")
        stray = None if stray < 0 else stray
    if stray is not None:
        shown = f"{scheme}://***@{rest[stray + 1 :]}"
    elif password:
        user = rest[:end].partition(":")[0]
        shown = f"{scheme}://{user}:***@{rest[end:]}"
    else:
        shown = url
    return _safe_query(shown)


def _safe_query(url: str) -> str:
    """The query's ``password=`` and ``sslpassword=`` values as ``***``: a value runs to
    the next ``&`` (a ``#`` in it is the value's, as SQLAlchemy reads it); a name that
    decodes to one, its ``=`` encoded too (``password%3Ds3cr3t``), shows none of it."""
    head, mark, query = url.partition("?")
    if not mark:
        return url
    pieces = []
    for piece in query.split("&"):
        name, equals, _ = urllib.parse.unquote(piece).partition("=")
        if equals and name.lower() in _SECRET_PARAMETERS:
            piece = f"{piece.partition('=')[0] if '=' in piece else name}=***"
        pieces.append(piece)
    return f"{head}?{'&'.join(pieces)}"


def _credentials(rest: str) -> tuple[int, str | None]:
    """Where the credentials of ``rest`` (a URL after ``scheme://``) end, as SQLAlchemy
    reads them (0: none), and the password as written (None: none)."""
    found = _CREDENTIALS.match(rest)
    if found is None:
        return 0, None
    return found.end(), found.group("password")


def _stray_at(rest: str, end: int) -> int | None:
    """The last ``@`` a password (or user name) held unencoded: after the credentials' end
    (``end``) and before the path or query; with a password, anywhere before the query,
    or in a query that is not ``name=value`` pairs (``user:pa@ss/x@host``, ``pa@ss#x@host``,
    ``pa@ss?x@host``: SQLAlchemy cuts the password at its first ``@`` and reads the rest
    as the host, path or query, which messages would show). None when there is none: an
    ``@`` in a query value (``application_name=a@b``) is the value's."""
    tail = rest[end:]
    if _credentials(rest)[1] is None:  # no password (a SQLite path may hold an @)
        netloc = re.split(r"[/?#]", tail, maxsplit=1)[0]
        at = netloc.rfind("@")
        return None if at < 0 else end + at
    head, mark, query = tail.partition("?")
    at = head.rfind("@")
    if at >= 0:
        return end + at
    if mark and "@" in query and not _QUERY_PAIRS.fullmatch(query):
        return end + len(head) + 1 + query.rfind("@")
    return None


def _after_credentials(url: str) -> str:
    """What follows ``scheme://`` and the ``user:password@`` (if any): hosts, path, query.
    After the last ``@`` before the path or query, if any: never a piece of a password."""
    rest = url.split("://", 1)[-1]
    end = _credentials(rest)[0]
    stray = _stray_at(rest, end)
    return rest[(end if stray is None else stray + 1) :]


def server_hosts(url: str) -> str:
    """The ``host:port`` (or ``h1:p1,h2:p2``) of a server URL as written, never its
    credentials; the ``?host=`` (a Unix socket's directory) when the URL names no host;
    ``""`` when neither says (asyncpg's default)."""
    hosts = re.split(r"[/?#]", _after_credentials(url), maxsplit=1)[0]
    if hosts:
        return hosts
    return next((value for name, value in _query(url) if name == "host"), "")


def resolve_url(db: str | os.PathLike[str] | None) -> str:
    """The URL to use: ``db``, else env ``BATON_NB_DB``, else ``sqlite:///baton.db``.

    Checked here, before any run writes: the scheme, a SQLite URL's file path (``sqlite://``
    and ``sqlite:///`` name no file: SQLAlchemy would make them an in-memory database that
    is gone at exit) and a server URL's port and query (``server_connect``).
    ``memory://NAME`` (the in-memory store) takes any NAME.
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
        _check_at(db)
        _check_port(db)
        server_connect(db)  # its query: libpq's names, as asyncpg takes them (or refused)
    return db


def _check_sqlite_path(url: str) -> None:
    rest = url.split("://", 1)[1]
    path = rest[1:] if rest.startswith("/") else rest
    if not path.split("?", 1)[0]:
        raise ConfigurationError(
            f"db URL {url!r} names no database file; use 'sqlite:///runs.db' (a file, kept "
            "across sessions) or 'sqlite:///:memory:' (gone when the process exits)"
        )


def _check_at(url: str) -> None:
    """An ``@`` after the credentials as SQLAlchemy reads them, before the path or query,
    is refused: a password (or user name) that holds one unencoded (``user:pa@ss@host``)
    would be cut there, the rest read as the host (or SQLAlchemy's bare ``ValueError``
    about the port, showing part of the password)."""
    rest = url.split("://", 1)[1]
    if _stray_at(rest, _credentials(rest)[0]) is not None:
        raise ConfigurationError(
            f"db URL {safe_url(url)!r}: the password (or user name) holds an '@' that is not "
            "percent-encoded: write each '@' in it as %40 "
            "(postgresql://user:pa%40ss@host:5432/dbname)"
        )


def _check_port(url: str) -> None:
    """A ``host:port`` whose port is not a number in 1..65535 is refused, naming the URL."""
    netloc = re.split(r"[/?#]", _after_credentials(url), maxsplit=1)[0]
    for host in netloc.split(","):  # asyncpg takes h1:p1,h2:p2
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
    for name, value in _query(url):
        if name == "connect_timeout":
            return _positive(url, name, value)
    return CONNECT_TIMEOUT


# ── a Postgres URL's query: libpq's parameter names as asyncpg takes them ─────────────
#
# SQLAlchemy hands every query parameter of a ``postgresql+asyncpg`` URL to
# ``asyncpg.connect`` as a keyword argument, and asyncpg has none named like libpq's
# (``sslmode=require`` made ``TypeError: connect() got an unexpected keyword argument``).
# Each name is translated here to what asyncpg does the same with, or refused.

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# libpq's names that asyncpg reads as libpq does from a connection URI (its ``dsn``), and
# only from there (no keyword argument takes a certificate file): passed in a ``dsn`` that
# holds nothing else; the URL's host, user and database still come from SQLAlchemy.
_IN_DSN: dict[str, tuple[str, ...] | None] = {  # name -> the values allowed (None: any)
    "sslmode": _SSLMODES,
    "sslrootcert": None,
    "sslcert": None,
    "sslkey": None,
    "sslcrl": None,
    "sslpassword": None,
    "ssl_min_protocol_version": _TLS_VERSIONS,
    "ssl_max_protocol_version": _TLS_VERSIONS,
    "sslnegotiation": ("postgres", "direct"),
    "service": None,
}
# libpq's names that are ``asyncpg.connect`` arguments of the same name and meaning
_AS_ARGUMENT: dict[str, tuple[str, ...] | None] = {
    "target_session_attrs": _SESSION_ATTRS,
    "passfile": None,
    "servicefile": None,
    "krbsrvname": None,
    "gsslib": ("gssapi", "sspi"),
}
# startup parameters libpq sends the server as they are: asyncpg's ``server_settings``
_SETTINGS = ("application_name", "options")
# asyncpg's own (and SQLAlchemy's ``prepared_statement_cache_size``), as their docs write
# them in a URL: numbers, passed as numbers
_COUNTS = (
    "prepared_statement_cache_size",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
)
# libpq's choices asyncpg always makes: accepted with the values that say so (libpq's
# default among them: ``prefer`` is fine without), else refused
_ALWAYS = {
    "channel_binding": (
        ("disable", "prefer"),
        "asyncpg cannot do SCRAM channel binding (its password exchange is plain "
        "SCRAM-SHA-256): remove channel_binding= from the URL; sslmode=require still "
        "encrypts the connection, verify-full also checks the server's certificate",
    ),
    "gssencmode": (
        ("disable", "prefer"),
        "asyncpg does not encrypt with GSSAPI: remove gssencmode= from the URL, and use "
        "sslmode= for an encrypted connection",
    ),
    "load_balance_hosts": (
        ("disable",),
        "asyncpg tries several hosts in the order the URL gives them: remove "
        "load_balance_hosts= from the URL",
    ),
    "sslcertmode": (
        ("allow",),
        "asyncpg sends the client certificate sslcert= names, if any, whatever the server "
        "asks (libpq's sslcertmode=allow): remove sslcertmode= from the URL",
    ),
    "sslcompression": (
        ("0",),
        "TLS compression is off in every current server and client: remove "
        "sslcompression= from the URL",
    ),
    "sslsni": (
        ("1",),
        "asyncpg always sends the server's host name (SNI) when it uses TLS: remove "
        "sslsni= from the URL",
    ),
    "client_encoding": (
        ("UTF8", "utf8", "UTF-8", "utf-8", "unicode", "UNICODE"),
        "asyncpg always talks UTF-8 to the server: remove client_encoding= from the URL",
    ),
}
# libpq's names that asyncpg has nothing for: what to do instead
_NOT_IN_ASYNCPG = {
    "hostaddr": "write the address as the URL's host (postgresql://user@10.0.0.5:5432/db)",
    "dbname": "write the database as the URL's path (postgresql://user@host:5432/NAME)",
    "keepalives": "asyncpg keeps the operating system's TCP keepalive settings",
    "keepalives_idle": "asyncpg keeps the operating system's TCP keepalive settings",
    "keepalives_interval": "asyncpg keeps the operating system's TCP keepalive settings",
    "keepalives_count": "asyncpg keeps the operating system's TCP keepalive settings",
    "tcp_user_timeout": "asyncpg keeps the operating system's TCP settings",
    "sslkeylogfile": "asyncpg writes TLS keys to the file the SSLKEYLOGFILE variable names",
    "requirepeer": "asyncpg does not check a Unix socket's peer",
    "require_auth": "asyncpg answers whichever authentication the server asks for",
    "gssdelegation": "asyncpg does not delegate GSSAPI credentials",
    "replication": "baton_nb needs an ordinary connection, not a replication one",
    "min_protocol_version": "asyncpg speaks protocol version 3.0",
    "max_protocol_version": "asyncpg speaks protocol version 3.0",
}
_SQLALCHEMY = ("host", "port", "user", "password")  # read from the URL by SQLAlchemy itself
# asyncpg's own arguments SQLAlchemy used to pass on as they were (``?database=NAME``
# connected to NAME): ``asyncpg.connect`` arguments still, ``direct_tls`` as a bool
_ASYNCPG_OWN = ("database", "direct_tls")
_KNOWN = (
    "connect_timeout", *_IN_DSN, *_AS_ARGUMENT, *_SETTINGS, "fallback_application_name",
    "ssl", "command_timeout", *_COUNTS, *_ALWAYS, *_ASYNCPG_OWN,
)  # fmt: skip
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class ServerConnect:
    """How asyncpg connects for a Postgres URL: the query parameters taken out of the URL
    SQLAlchemy reads (``taken``) and the ``asyncpg.connect`` arguments they became."""

    taken: tuple[str, ...]
    arguments: dict[str, Any]


def server_connect(url: str) -> ServerConnect:
    """asyncpg's arguments for a Postgres URL's query, which uses libpq's names (what
    hosted Postgres hands out: ``?sslmode=require``); ``ConfigurationError`` naming a
    parameter asyncpg cannot honour, a value it does not take, or one given twice."""
    pairs = _query(url)
    given: dict[str, str] = {}
    for name, value in pairs:
        if "=" in name:  # never shown: ``password%3Ds3cr3t`` is the name ``password=s3cr3t``
            raise _bad(
                url,
                "a query parameter's name holds an encoded '=' (%3D): write each as "
                "NAME=VALUE with a plain '='",
            )
        if name in _SQLALCHEMY:
            continue  # ?host=/run/postgresql (a socket), several hosts: SQLAlchemy's
        if name in given:
            raise _bad(url, f"{name}= is given twice: keep one")
        if name not in _KNOWN:
            raise _bad(url, _unknown(name))
        if not value:
            raise _bad(url, f"{name}= has no value: give one, or leave {name}= out")
        given[name] = value
    dsn: dict[str, str] = {}
    arguments: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    settings: dict[str, str] = {}
    for name, value in given.items():
        if name == "connect_timeout":
            arguments["timeout"] = _positive(url, name, value)
        elif name == "command_timeout":
            arguments[name] = _positive(url, name, value)
        elif name in _COUNTS:
            arguments[name] = _count(url, name, value)
        elif name in _IN_DSN:
            dsn[name] = _one_of(url, name, value, _IN_DSN[name])
        elif name in _AS_ARGUMENT:
            arguments[name] = _one_of(url, name, value, _AS_ARGUMENT[name])
        elif name in _SETTINGS:
            settings[name] = value
        elif name in _ALWAYS:
            allowed, why = _ALWAYS[name]
            if value not in allowed:
                raise _bad(url, f"{name}={value}: {why}")
        elif name == "database":
            arguments[name] = value
        elif name == "direct_tls":
            arguments[name] = _direct_tls(url, value, given.get("sslnegotiation"))
    if "fallback_application_name" in given:
        settings.setdefault("application_name", given["fallback_application_name"])
    if "ssl" in given:
        _ssl(url, given["ssl"], dsn)
    if dsn.get("sslrootcert") == "system":
        _system_roots(url, dsn)
    if settings:
        arguments["server_settings"] = settings
    if dsn:
        arguments["dsn"] = "postgresql://?" + urllib.parse.urlencode(dsn)
    return ServerConnect(tuple(given), arguments)


def _query(url: str) -> list[tuple[str, str]]:
    """The query's ``(name, value)`` pairs, as libpq reads them: split on ``&`` and ``=``,
    then percent-decoded (``+`` stays a ``+``: ``application_name=a+b`` is ``a+b``, not
    ``a b`` as ``parse_qsl`` would make it). A ``?`` in the password is not the query's."""
    query = _after_credentials(url).partition("?")[2].partition("#")[0]
    pairs = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return pairs


def tls_files(url: str) -> dict[str, str]:
    """The files asyncpg reads for a Postgres URL's TLS (``sslrootcert=``, ``sslcrl=``:
    with ``sslmode=require`` or above; ``sslcert=``, ``sslkey=``: unless it is
    ``disable``), as ``{name: path}``: what a file that cannot be read may be."""
    query = str(server_connect(url).arguments.get("dsn", "")).partition("?")[2]
    dsn = dict(urllib.parse.parse_qsl(query))  # urlencode's: parse_qsl's inverse
    mode = dsn.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"  # as asyncpg
    if mode not in _SSLMODES or mode == "disable":
        return {}
    names = ["sslrootcert", "sslcrl", "sslcert", "sslkey"]
    if _SSLMODES.index(mode) < _SSLMODES.index("require"):
        names = names[2:]  # allow, prefer: the server's certificate is not checked
    return {name: dsn[name] for name in names if name in dsn}


def _direct_tls(url: str, value: str, negotiation: str | None) -> bool:
    """``direct_tls=true`` (asyncpg's name for ``sslnegotiation=direct``) as a bool:
    SQLAlchemy passed the text, and asyncpg took ``"false"`` for true."""
    direct = _BOOLEANS.get(value.lower())
    if direct is None:
        raise _bad(url, f"direct_tls={value!r} must be true or false")
    if negotiation is not None and (negotiation == "direct") != direct:
        raise _bad(
            url,
            f"direct_tls={value} and sslnegotiation={negotiation} disagree: keep one of them",
        )
    return direct


def _bad(url: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"db URL {safe_url(url)!r}: {problem}")


def _unknown(name: str) -> str:
    if name in _NOT_IN_ASYNCPG:
        return (
            f"{name}= is a libpq parameter that asyncpg (baton_nb's Postgres driver) has no "
            f"equivalent for: remove it from the URL ({_NOT_IN_ASYNCPG[name]})"
        )
    near = difflib.get_close_matches(name, _KNOWN, n=1)
    known = f"did you mean {near[0]}=?" if near else f"it takes: {', '.join(sorted(_KNOWN))}"
    return (
        f"{name}= is not a connection parameter baton_nb can pass to asyncpg ({known}); "
        "a server setting goes in options=-c NAME=VALUE"
    )


def _one_of(url: str, name: str, value: str, allowed: tuple[str, ...] | None) -> str:
    if allowed is not None and value not in allowed:
        raise _bad(url, f"{name}={value!r} must be one of: {', '.join(allowed)}")
    return value


def _positive(url: str, name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise _bad(url, f"{name}={value!r} must be a number of seconds > 0")
    return seconds


def _count(url: str, name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise _bad(url, f"{name}={value!r} must be a whole number >= 0")
    return int(value)


def _ssl(url: str, value: str, dsn: dict[str, str]) -> None:
    """``ssl=`` (asyncpg's and SQLAlchemy's name; node-postgres's ``ssl=true``) as the
    ``sslmode`` it means: a mode as it is; ``true`` as asyncpg's ``ssl=True``, verify-full
    against the system's CAs (unless ``sslrootcert=`` names a file); ``false``: disable."""
    lowered = value.lower()
    if lowered not in ("true", "false") and value not in _SSLMODES:
        raise _bad(url, f"ssl={value!r} must be one of: {', '.join(_SSLMODES)}, true, false")
    mode = {"true": "verify-full", "false": "disable"}.get(lowered, value)
    if dsn.setdefault("sslmode", mode) != mode:
        raise _bad(url, f"ssl={value} and sslmode={dsn['sslmode']} disagree: keep one of them")
    if lowered == "true":
        dsn.setdefault("sslrootcert", "system")


def _system_roots(url: str, dsn: dict[str, str]) -> None:
    """``sslrootcert=system`` (libpq 16: the system's trusted CAs, and verify-full unless
    another mode is given, which is an error then): asyncpg reads a file, so the file of
    this Python's OpenSSL defaults (``SSL_CERT_FILE`` if set)."""
    mode = dsn.setdefault("sslmode", "verify-full")
    if mode != "verify-full":
        raise _bad(
            url,
            f"sslrootcert=system checks the server against the system's CAs, which only "
            f"sslmode=verify-full does: use it, or leave sslmode= out (not sslmode={mode})",
        )
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        raise _bad(
            url,
            "sslrootcert=system: this Python's OpenSSL names no file of trusted CAs; give "
            "one as sslrootcert=/path/to/ca-bundle.pem (or set SSL_CERT_FILE)",
        )
    dsn["sslrootcert"] = cafile
