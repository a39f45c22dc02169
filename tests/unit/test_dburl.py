"""Database URLs are checked before anything is written: no file, bad port, bad timeout."""

from __future__ import annotations

import ssl
import urllib.parse

import pytest
from sqlalchemy.engine import make_url

import baton_nb as bn
from baton_nb._dburl import (
    connect_timeout,
    resolve_url,
    safe_url,
    server_connect,
    server_hosts,
)
from baton_nb.cli import main as cli_main


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite+aiosqlite://", "sqlite:///?a=1"]
)
def test_sqlite_url_without_a_file_is_refused(url: str) -> None:
    """SQLAlchemy makes these an in-memory database: the run would 'complete' and be gone."""
    with pytest.raises(bn.ConfigurationError, match="names no database file") as info:
        bn.Workflow("w", db=url)
    assert "sqlite:///runs.db" in str(info.value) and "sqlite:///:memory:" in str(info.value)


@pytest.mark.anyio
async def test_sqlite_url_without_a_file_is_refused_by_run_and_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wf = bn.Workflow("w")

    @wf.step()
    async def a(ctx: bn.Context) -> int:
        return 1

    with pytest.raises(bn.ConfigurationError, match="names no database file"):
        await wf.run(db="sqlite://", display=False)
    with pytest.raises(bn.ConfigurationError, match="names no database file"):
        await bn.runs(db="sqlite:///")
    monkeypatch.setenv("BATON_NB_DB", "sqlite://")
    with pytest.raises(bn.ConfigurationError, match="names no database file"):
        await wf.run(display=False)


def test_a_bad_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATON_NB_DB", "mysql://localhost/x")
    with pytest.raises(bn.ConfigurationError, match="unsupported db URL") as info:
        resolve_url(None)
    assert "environment variable BATON_NB_DB" in str(info.value)
    with pytest.raises(bn.ConfigurationError) as given:  # given as db=: no word of it
        resolve_url("mysql://localhost/x")
    assert "BATON_NB_DB" not in str(given.value)
    monkeypatch.setenv("BATON_NB_DB", "sqlite:///runs.db")
    assert resolve_url(None) == "sqlite:///runs.db"


def test_memory_url_is_still_in_memory() -> None:
    assert resolve_url("sqlite:///:memory:") == "sqlite:///:memory:"


def test_cli_refuses_a_sqlite_url_without_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["runs", "--db", "sqlite://"]) == 2
    assert "names no database file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("postgresql://u:secret@h:notaport/db", "notaport"),
        ("postgresql://u:secret@h:/db", ""),
        ("postgresql://u:secret@h:70000/db", "70000"),
        ("postgresql://u:secret@[::1]:x/db", "x"),
        ("postgres://u:secret@h1:5432,h2:p2/db", "p2"),
    ],
)
def test_bad_port_names_the_url_without_its_password(url: str, port: str) -> None:
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w", db=url)
    message = str(info.value)
    assert "secret" not in message and "u:***@" in message, message
    assert f"port {port!r} is not a port number" in message, message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/db",
        "postgresql://u@[::1]:5432/db",
        "postgresql://u@h/db",
        "postgresql://u@h1:5432,h2:5433/db",
    ],
)
def test_good_ports_pass(url: str) -> None:
    assert resolve_url(url) == url


def test_connect_timeout_from_the_url() -> None:
    assert connect_timeout("postgresql://u@h/db") == 10.0
    assert connect_timeout("postgresql://u@h/db?connect_timeout=2.5") == 2.5
    for bad in ("0", "-1", "abc", "nan", "inf"):
        with pytest.raises(bn.ConfigurationError, match="connect_timeout"):
            resolve_url(f"postgresql://u:secret@h/db?connect_timeout={bad}")


def test_safe_url_hides_the_password_even_when_unparseable() -> None:
    assert safe_url("postgresql://u:pa:ss@h:x/db") == "postgresql://u:***@h:x/db"
    assert safe_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize("url", ["memory://", "memory://docs", "memory://a:b", "memory://x?y"])
def test_the_in_memory_store_takes_any_name(url: str) -> None:
    """``memory://NAME`` names no host, port or file: none of their checks apply."""
    assert resolve_url(url) == url


def test_an_unknown_scheme_names_every_choice_without_the_password() -> None:
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w", db="mysql://u:secret@h/db")
    message = str(info.value)
    assert "secret" not in message and "mysql://u:***@h/db" in message
    for choice in ("sqlite:///path.db", "postgresql://", "memory://NAME"):
        assert choice in message


# ── a Postgres URL's query: libpq's names translated for asyncpg, or refused ─────────


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("channel_binding=require", "channel_binding=require: asyncpg cannot do SCRAM"),
        ("gssencmode=require", "gssencmode=require: asyncpg does not encrypt with GSSAPI"),
        ("keepalives=1", "keepalives= is a libpq parameter that asyncpg"),
        ("hostaddr=10.0.0.5", "write the address as the URL's host"),
        ("dbname=other", "write the database as the URL's path"),
        ("sslmod=require", "sslmod= is not a connection parameter baton_nb can pass to asyncpg"),
        ("sslmode=required", "sslmode='required' must be one of: disable, allow, prefer"),
        ("sslmode=", "sslmode= has no value"),
        ("sslmode=require&sslmode=disable", "sslmode= is given twice"),
        ("ssl=require&sslmode=disable", "ssl=require and sslmode=disable disagree"),
        ("sslrootcert=system&sslmode=require", "only sslmode=verify-full does"),
        ("target_session_attrs=master", "target_session_attrs='master' must be one of"),
        ("ssl_min_protocol_version=TLSv9", "ssl_min_protocol_version='TLSv9' must be one of"),
        ("statement_cache_size=-1", "statement_cache_size='-1' must be a whole number"),
        ("search_path=x", "a server setting goes in options=-c NAME=VALUE"),
    ],
)
def test_a_url_parameter_asyncpg_cannot_take_is_refused_naming_it(query: str, said: str) -> None:
    """Refused before anything connects or writes: never a TypeError from asyncpg, never
    a parameter dropped in silence."""
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w", db=f"postgresql://u:secret@h/db?{query}")
    message = str(info.value)
    assert said in message and "secret" not in message, message


def test_the_cli_refuses_an_unsupported_url_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://u@127.0.0.1/db?sslmode=require&channel_binding=require"
    assert cli_main(["--db", url, "runs"]) == 2
    err = capsys.readouterr().err
    assert "channel_binding=require" in err and "Traceback" not in err, err


def test_libpq_parameters_become_asyncpg_arguments() -> None:
    """What each accepted name becomes (the connections themselves: test_postgres_url)."""
    taken = server_connect(
        "postgresql://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c.crt"
        "&sslkey=/c.key&target_session_attrs=read-write&application_name=nb"
        "&options=-c%20work_mem%3D64MB&connect_timeout=3&channel_binding=disable"
        "&gssencmode=disable&client_encoding=UTF8&prepared_statement_cache_size=0"
        "&command_timeout=30&host=h2"
    )
    assert "host" not in taken.taken  # SQLAlchemy's (a socket directory, several hosts)
    arguments = dict(taken.arguments)
    dsn = arguments.pop("dsn")
    assert dsn.startswith("postgresql://?") and "sslmode=verify-full" in dsn
    assert "sslrootcert=%2Fca.pem" in dsn and "sslkey=%2Fc.key" in dsn
    assert arguments == {
        "timeout": 3.0,
        "target_session_attrs": "read-write",
        "server_settings": {"application_name": "nb", "options": "-c work_mem=64MB"},
        "prepared_statement_cache_size": 0,
        "command_timeout": 30.0,
    }


def test_ssl_true_and_sslrootcert_system_verify_against_the_system_cas() -> None:
    cafile = ssl.get_default_verify_paths().cafile
    assert cafile, "this machine's OpenSSL names no CA file"
    for query in ("ssl=true", "sslrootcert=system", "sslmode=verify-full&sslrootcert=system"):
        dsn = server_connect(f"postgresql://u@h/db?{query}").arguments["dsn"]
        assert "sslmode=verify-full" in dsn and urllib.parse.quote(cafile, safe="") in dsn
    assert "sslmode=disable" in server_connect("postgresql://u@h/db?ssl=false").arguments["dsn"]


# ── secrets: never in a message, wherever the URL holds them ─────────────────────────


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=s3cret&password=s3cret2",
            "postgresql://u@h/db?sslmode=require&sslpassword=***&password=***",
        ),
        (
            "postgresql://u:s3cret@h/db?password=s3cret2#x",  # SQLAlchemy's value: s3cret2#x
            "postgresql://u:***@h/db?password=***",
        ),
        ("postgresql://u:s3/cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:s3?cret@h/db?sslmode=disable", "postgresql://u:***@h/db?sslmode=disable"),
        ("postgresql://u@h/db?ssl%70assword=s3cret", "postgresql://u@h/db?ssl%70assword=***"),
    ],
)
def test_safe_url_hides_query_passwords_and_passwords_with_slashes(url: str, shown: str) -> None:
    assert safe_url(url) == shown


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("sslpassword=s3cret&channel_binding=require", "channel_binding=require"),
        ("password=s3cret&sslmod=require", "sslmod= is not a connection parameter"),
        ("sslpassword=s3cret&connect_timeout=0", "connect_timeout='0' must be a number"),
    ],
)
def test_a_refused_url_never_shows_a_query_password(query: str, said: str) -> None:
    """Before, ``safe_url`` hid only ``user:pw@``: every ConfigurationError about the
    query printed ``password=`` and ``sslpassword=`` as given."""
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w", db=f"postgresql://u@h/db?{query}")
    message = str(info.value)
    assert said in message and "s3cret" not in message and "password=***" in message, message


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:se/cret@h:99999/db", "port '99999' is not a port number"),
        ("postgresql://u:se?cret@h:99999/db", "port '99999' is not a port number"),
        ("postgresql://u:se?cret=1@h/db?sslmod=x", "sslmod= is not a connection parameter"),
    ],
)
def test_a_password_with_an_unencoded_slash_or_question_mark_is_never_shown(
    url: str, said: str
) -> None:
    """SQLAlchemy reads the password up to the ``@``; the port check read it up to the
    ``/`` or ``?`` (``port 'se'``), refused a good URL and printed the password."""
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w", db=url)
    message = str(info.value)
    assert said in message and "cret" not in message and "u:***@h" in message, message


@pytest.mark.parametrize(
    ("url", "shown", "hosts"),
    [
        (
            "postgresql://admin@corp:s3cr3t@127.0.0.1:1/app",
            "postgresql://admin@corp:***@127.0.0.1:1/app",
            "127.0.0.1:1",
        ),
        (
            "postgresql://admin@corp:s3cr3t@127.0.0.1/app",
            "postgresql://admin@corp:***@127.0.0.1/app",
            "127.0.0.1",
        ),
        ("postgresql://admin@corp@h/app", "postgresql://admin@corp@h/app", "h"),
        ("postgresql://app:Tr0ub@dor-9@127.0.0.1/app", "postgresql://***@127.0.0.1/app", None),
        (
            "postgresql://app:Tr0ub@dor:99@127.0.0.1:5432/app",
            "postgresql://***@127.0.0.1:5432/app",
            None,
        ),
    ],
)
def test_a_user_name_or_password_with_an_at_sign_is_never_shown(
    url: str, shown: str, hosts: str | None
) -> None:
    """SQLAlchemy's user name may hold ``@`` (Azure's ``user@server``), its password runs
    to the next ``@``. Before, the user name stopped at the first ``@``: ``s3cr3t`` was
    shown, and read as a port without one (``port 's3cr3t@127.0.0.1'``). A password with an
    unencoded ``@`` is refused, saying to write it as %40, showing none of it."""
    assert safe_url(url) == shown
    if hosts is not None:
        assert server_hosts(url) == hosts
        assert resolve_url(url) == url
        user, password = make_url(url).username, make_url(url).password
        assert user == "admin@corp" and password in ("s3cr3t", None)  # as SQLAlchemy reads
        return
    with pytest.raises(bn.ConfigurationError) as info:
        resolve_url(url)
    message = str(info.value)
    assert "%40" in message and shown in message, message
    assert not any(part in message for part in ("Tr0ub", "dor")), message


@pytest.mark.parametrize(
    "query", ["password%3Ds3cr3t", "sslpassword%3ds3cr3t", "ssl%70assword%3Ds3cr3t"]
)
def test_a_query_password_whose_equals_sign_is_encoded_is_never_shown(query: str) -> None:
    """``password%3Ds3cr3t`` decodes to the name ``password=s3cr3t`` (SQLAlchemy drops it,
    no ``=``); before, safe_url showed it and the refusal named it."""
    url = f"postgresql://u@h/db?{query}"
    assert "s3cr3t" not in safe_url(url) and safe_url(url).endswith("password=***")
    with pytest.raises(bn.ConfigurationError, match="encoded '='") as info:
        resolve_url(url)
    assert "s3cr3t" not in str(info.value), info.value


def test_a_password_with_an_unencoded_slash_or_question_mark_is_a_good_url() -> None:
    for url in ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:pa?ss@h/db?sslmode=disable"):
        assert resolve_url(url) == url


# ── libpq's defaults, asyncpg's own names, libpq's decoding ───────────────────────────


def test_libpq_default_values_are_accepted_as_what_asyncpg_does() -> None:
    """libpq's defaults (what a URL copied from a libpq tool may spell out): asyncpg
    does the same, so nothing to pass and nothing to refuse."""
    query = (
        "channel_binding=prefer&gssencmode=prefer&load_balance_hosts=disable"
        "&sslcertmode=allow&sslcompression=0&sslsni=1"
    )
    assert server_connect(f"postgresql://u@h/db?{query}").arguments == {"timeout": 10.0}


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("channel_binding=require", "asyncpg cannot do SCRAM channel binding"),
        ("gssencmode=require", "asyncpg does not encrypt with GSSAPI"),
        ("load_balance_hosts=random", "in the order the URL gives them"),
        ("sslcertmode=require", "remove sslcertmode= from the URL"),
        ("sslcompression=1", "TLS compression is off"),
        ("direct_tls=maybe", "direct_tls='maybe' must be true or false"),
        ("direct_tls=true&sslnegotiation=postgres", "disagree: keep one of them"),
    ],
)
def test_values_asyncpg_cannot_honour_are_still_refused(query: str, said: str) -> None:
    with pytest.raises(bn.ConfigurationError, match=said):
        resolve_url(f"postgresql://u@h/db?{query}")


def test_database_and_direct_tls_are_asyncpg_arguments_as_before() -> None:
    """SQLAlchemy passed both to ``asyncpg.connect`` (``?database=x`` connected to x);
    ``direct_tls`` now as the bool asyncpg means (the text ``"false"`` was true to it)."""
    url = "postgresql://u@h/db?database=other&direct_tls=true&sslmode=require"
    taken = server_connect(url)
    assert taken.arguments["database"] == "other" and taken.arguments["direct_tls"] is True
    assert {"database", "direct_tls"} <= set(taken.taken)
    off = server_connect("postgresql://u@h/db?direct_tls=False").arguments
    assert off["direct_tls"] is False


@pytest.mark.parametrize(
    ("written", "value"),
    [("a+b", "a+b"), ("a%2Bb", "a+b"), ("a%20b", "a b"), ("a%26b%3Dc", "a&b=c")],
)
def test_query_values_are_percent_decoded_as_libpq_does(written: str, value: str) -> None:
    """``+`` is a plus to libpq (``parse_qsl`` made it a space: ``a b`` reached the
    server for ``application_name=a+b``)."""
    arguments = server_connect(f"postgresql://u@h/db?application_name={written}").arguments
    assert arguments["server_settings"] == {"application_name": value}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Xy9@Qq7/Secr3t@host/db",  # SQLAlchemy: host Qq7, database Secr3t@host/db
        "postgresql://u:Xy9@Qq7#Secr3t@host/db",  # host Qq7#Secr3t@host
        "postgresql://u:Xy9@Qq7?Secr3t@host/db",  # host Qq7, query Secr3t@host/db
    ],
)
def test_a_password_with_an_at_sign_then_a_slash_hash_or_question_mark_is_never_shown(
    url: str,
) -> None:
    """A password holding an unencoded ``@`` followed by ``/``, ``#`` or ``?``: SQLAlchemy
    cuts it at the ``@`` and reads the rest as the host, path or query. Before, only an
    ``@`` before the first ``/``, ``?`` or ``#`` was looked for: ``Qq7/Secr3t@host/db`` was
    accepted and shown (the tail of the password in every message, and in the server's
    'database does not exist')."""
    assert safe_url(url) == "postgresql://***@host/db"
    with pytest.raises(bn.ConfigurationError) as info:
        resolve_url(url)
    message = str(info.value)
    assert "%40" in message and not any(part in message for part in ("Xy9", "Qq7", "Secr3t"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@host/db?application_name=a@b",
        "postgresql://u:pw@host/db?sslmode=verify-full&sslrootcert=/a@b/c.pem",
        "postgresql://u:pw@/db?host=/var/run/postgresql",
        "sqlite:////tmp/with@sign/baton.db",
    ],
)
def test_an_at_sign_in_a_query_value_or_a_sqlite_path_is_not_a_password(url: str) -> None:
    assert resolve_url(url) == url
    assert safe_url(url) == url.replace(":pw@", ":***@")


def test_a_user_name_with_a_slash_shows_no_password() -> None:
    """``u/x:secret@host``: SQLAlchemy reads no credentials (host 'u'), so nothing was
    masked; now everything before the last ``@`` is."""
    assert safe_url("postgresql://u/x:secret@host/db") == "postgresql://***@host/db"
