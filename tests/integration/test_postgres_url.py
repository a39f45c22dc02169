"""A Postgres URL as hosted Postgres hands it out: libpq's query parameters (``?sslmode=
require``, ``sslrootcert=``, ``application_name=``, ...) reach asyncpg as what they mean,
on the real Postgres; TLS through a local TLS front to it (a throwaway CA, trustme).

Before, SQLAlchemy passed each parameter to ``asyncpg.connect`` as a keyword argument it
does not have: ``TypeError: connect() got an unexpected keyword argument 'sslmode'``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
import trustme

import baton_nb as bn
from baton_nb.cli import main as cli_main
from baton_nb.store import Store
from tests.conftest import PG_SERVER, POSTGRES_URL

pytestmark = pytest.mark.anyio

PG_PORT = 5432


def _workflow(db: str, name: str) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        return 20

    @wf.step()
    async def second(ctx: bn.Context, first: int) -> int:
        return first + 22

    return wf


@pytest.mark.parametrize("mode", ["disable", "prefer", "allow"])
async def test_sslmode_that_allows_a_server_without_tls_runs_reads_and_watches(
    mode: str, unique: str
) -> None:
    db = f"{POSTGRES_URL}?sslmode={mode}"
    run = await _workflow(db, f"sslmode-{mode}-{unique}").run(display=False)
    assert run.status == "completed" and run.results["second"] == 42
    again = await bn.Run.load(run.id, db=db)
    assert again.status == "completed"
    assert [r.id for r in await bn.runs(db, workflow=f"sslmode-{mode}-{unique}")] == [run.id]
    async with bn.watch(run.id, db=db) as live:  # LISTEN on a connection of the same engine
        assert live.run.status == "completed"


def test_cli_takes_a_url_with_sslmode(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--db", f"{POSTGRES_URL}?sslmode=disable", "runs"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "TypeError" not in captured.err


async def test_sslmode_require_against_a_server_without_tls_says_so(unique: str) -> None:
    db = f"{POSTGRES_URL}?sslmode=require"
    with pytest.raises(bn.StorageError) as info:
        await _workflow(db, f"require-{unique}").run(display=False)
    message = str(info.value)
    assert f"the server at 127.0.0.1:{PG_PORT} does not accept TLS" in message, message
    assert "sslmode=prefer or sslmode=disable" in message, message


def test_cli_sslmode_require_against_a_server_without_tls_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["--db", f"{POSTGRES_URL}?sslmode=require", "runs"]) == 1
    err = capsys.readouterr().err
    assert "does not accept TLS" in err and "TypeError" not in err, err


async def test_application_name_and_options_reach_the_server() -> None:
    """Startup parameters libpq sends the server, asyncpg's ``server_settings``."""
    db = (
        f"{POSTGRES_URL}?application_name=baton-nb-test"
        "&options=-c%20statement_timeout%3D12345&connect_timeout=7"
    )
    async with await Store.open(db) as store, store.engine.connect() as conn:
        name = (await conn.execute(sa.text("SHOW application_name"))).scalar()
        timeout = (await conn.execute(sa.text("SHOW statement_timeout"))).scalar()
    assert (name, timeout) == ("baton-nb-test", "12345ms")


async def test_fallback_application_name_is_used_without_application_name() -> None:
    db = f"{POSTGRES_URL}?fallback_application_name=baton-fallback"
    async with await Store.open(db) as store, store.engine.connect() as conn:
        name = (await conn.execute(sa.text("SHOW application_name"))).scalar()
    assert name == "baton-fallback"


async def test_a_plus_in_the_query_reaches_the_server_as_a_plus() -> None:
    """libpq keeps ``+`` (``parse_qsl`` made it a space: ``a b`` reached the server)."""
    db = f"{POSTGRES_URL}?application_name=nb+test%2Bone%20two"
    async with await Store.open(db) as store, store.engine.connect() as conn:
        name = (await conn.execute(sa.text("SHOW application_name"))).scalar()
    assert name == "nb+test+one two"


async def test_libpq_default_values_connect(unique: str) -> None:
    """libpq's defaults spelled out (``channel_binding=prefer``, ...): what asyncpg does
    anyway, accepted (they were refused)."""
    db = (
        f"{POSTGRES_URL}?channel_binding=prefer&gssencmode=prefer&load_balance_hosts=disable"
        "&sslcertmode=allow&sslcompression=0&sslmode=disable"
    )
    run = await _workflow(db, f"defaults-{unique}").run(display=False)
    assert run.status == "completed" and run.results["second"] == 42


async def test_database_and_direct_tls_in_the_query_connect_as_before(unique: str) -> None:
    """``?database=NAME`` connected to NAME (SQLAlchemy passed it to asyncpg), and
    ``direct_tls=`` was asyncpg's argument: both refused as unknown, now as before."""
    database = POSTGRES_URL.rsplit("/", 1)[1]
    db = f"{PG_SERVER}/postgres?database={database}&direct_tls=false&sslmode=disable"
    run = await _workflow(db, f"database-{unique}").run(display=False)
    assert run.status == "completed"
    stored = await bn.Run.load(run.id, db=POSTGRES_URL)  # in that database, not "postgres"
    assert stored.results["second"] == 42


async def test_a_password_with_an_unencoded_slash_or_question_mark_connects(unique: str) -> None:
    """SQLAlchemy reads the password up to the ``@``: the port check refused these URLs
    (``port 'pa'``), printing part of the password."""
    for password in ("pa/ss", "pa?ss"):
        db = POSTGRES_URL.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        run = await _workflow(db, f"password-{unique}").run(display=False)
        assert run.status == "completed"


@pytest.mark.parametrize("port", [":1", ""])
async def test_a_user_name_with_an_at_sign_never_shows_the_password(port: str) -> None:
    """Azure's ``user@server`` user name: SQLAlchemy reads ``admin@corp`` and ``s3cr3t``.
    Before, the message showed ``s3cr3t`` (``:1``: a port nobody listens on), and without
    a port the URL was refused as ``port 's3cr3t@127.0.0.1' is not a port number``."""
    database = POSTGRES_URL.rsplit("/", 1)[1]
    db = f"postgresql://admin@corp:s3cr3t@127.0.0.1{port}/{database}"
    with pytest.raises(bn.StorageError) as info:  # no such role, or nobody listening
        await bn.runs(db)
    message = str(info.value)
    assert "s3cr3t" not in message and "port number" not in message, message
    assert f"127.0.0.1{port}" in message, message


async def test_the_tls_failure_never_shows_the_query_passwords() -> None:
    db = f"{POSTGRES_URL}?sslmode=require&sslpassword=s3cret&password=s3cret2"
    with pytest.raises(bn.StorageError) as info:
        await bn.runs(db)
    message = str(info.value)
    assert "does not accept TLS" in message and "s3cret" not in message, message
    assert "sslpassword=***&password=***" in message, message


async def test_a_missing_unix_socket_is_not_called_a_tls_file_problem(
    tmp_path: Path, ca_file: str
) -> None:
    """The URL names TLS files, all readable: a socket directory that is not there is a
    connection that failed, not "a TLS file the URL names cannot be read"."""
    socket_dir = tmp_path / "no-such-dir"
    database = POSTGRES_URL.rsplit("/", 1)[1]
    db = (
        f"postgresql://postgres@/{database}?host={socket_dir}&sslmode=verify-full"
        f"&sslrootcert={ca_file}"
    )
    with pytest.raises(bn.StorageError) as info:
        await bn.runs(db)
    message = str(info.value)
    assert f"cannot connect to {socket_dir}" in message, message
    assert "TLS file" not in message, message


# ── TLS: a local front that speaks TLS and forwards to the real Postgres ──────────


class TlsFront:
    """Answers Postgres's SSLRequest with 'S', terminates TLS with a certificate of
    ``ca`` for 127.0.0.1, and forwards the bytes to the local Postgres (plain)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.context)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tls_sessions = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", PG_PORT))
        self._open += [conn, upstream]
        try:
            first = conn.recv(8, socket.MSG_PEEK)
            if first == b"\x00\x00\x00\x08\x04\xd2\x16\x2f":  # SSLRequest
                conn.recv(8)
                conn.sendall(b"S")
                conn = self.context.wrap_socket(conn, server_side=True)
                self._open.append(conn)
                self.tls_sessions += 1
        except (OSError, ssl.SSLError):
            conn.close()
            upstream.close()
            return
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):  # either side closed: the session ended
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
        for sock in self._open:
            sock.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_front(ca: trustme.CA) -> Iterator[TlsFront]:
    front = TlsFront(ca)
    yield front
    front.close()


def _through(front: TlsFront, query: str) -> str:
    database = POSTGRES_URL.rsplit("/", 1)[1]
    return f"postgresql://postgres@127.0.0.1:{front.port}/{database}?{query}"


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "root.crt"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize("how", ["require", "verify-full", "verify-ca", "ssl=require"])
async def test_tls_modes_run_over_tls(
    tls_front: TlsFront, ca_file: str, unique: str, how: str
) -> None:
    query = how if how.startswith("ssl=") else f"sslmode={how}"
    if how.startswith("verify"):
        query += f"&sslrootcert={ca_file}"
    db = _through(tls_front, query)
    run = await _workflow(db, f"tls-{unique}").run(display=False)
    assert run.status == "completed" and run.results["second"] == 42
    assert tls_front.tls_sessions >= 1


async def test_verify_full_without_the_ca_refuses_the_server(
    tls_front: TlsFront, tmp_path: Path, unique: str
) -> None:
    other = tmp_path / "other.crt"
    trustme.CA().cert_pem.write_to_path(str(other))  # a CA that did not sign the server's
    db = _through(tls_front, f"sslmode=verify-full&sslrootcert={other}")
    with pytest.raises(bn.StorageError) as info:
        await _workflow(db, f"untrusted-{unique}").run(display=False)
    message = str(info.value)
    assert f"the certificate of the server at 127.0.0.1:{tls_front.port} does not verify" in (
        message
    ), message


async def test_a_missing_root_certificate_file_is_named_as_the_problem(
    tls_front: TlsFront, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.crt"
    db = _through(tls_front, f"sslmode=verify-full&sslrootcert={missing}")
    with pytest.raises(bn.StorageError) as info:
        await bn.runs(db)
    said = f"a TLS file the URL names cannot be read (sslrootcert={missing})"
    assert said in str(info.value), info.value


async def test_sslmode_disable_through_the_front_does_not_use_tls(tls_front: TlsFront) -> None:
    await bn.runs(_through(tls_front, "sslmode=disable"))
    await anyio.sleep(0)
    assert tls_front.tls_sessions == 0
