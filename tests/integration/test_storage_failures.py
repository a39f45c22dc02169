"""Storage failures surface as ``bn.StorageError``: what is wrong, what to do, no SQL text.

Real failures, not mocks: an immutable SQLite file, SQLite files with damaged pages, a
Postgres backend terminated mid-run, a server that refuses and one that accepts and stays
silent. Every path: open, new run, commit, load, report, runs, prune, watch, the CLI.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import baton_nb as bn
from baton_nb.cli import main as cli_main
from baton_nb.store import Store
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio

SECRET_PARAM = "param-value-that-must-not-leak"
PG_SERVER = POSTGRES_URL.rsplit("/", 1)[0]


def _clean(message: str) -> None:
    """No SQL text, no parameters, no SQLAlchemy boilerplate in a user-facing message."""
    for leak in ("[SQL", "INSERT", "SELECT", "UPDATE workflow", "parameters", SECRET_PARAM):
        assert leak not in message, message
    assert "sqlalche.me" not in message, message


def workflow(db: str, name: str = "store-fail") -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        return 21

    @wf.step()
    async def second(ctx: bn.Context, first: int) -> int:
        reply = await ctx.complete(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        return first * 2 + len(reply.text) * 0

    return wf


async def stored_run(path: Path) -> tuple[bn.Workflow, bn.Run, str]:
    db = f"sqlite:///{path}"
    wf = workflow(db)
    run = await wf.run(display=False, params={"p": SECRET_PARAM})
    assert run.status == "completed"
    return wf, run, db


def checkpoint(path: Path) -> None:
    """Everything in the main file (WAL checkpointed), no connection left open."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def damage_table(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage, as a bad disk sector would."""
    checkpoint(path)
    con = sqlite3.connect(path)
    try:
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page = int(root.fetchone()[0])
        size = int(con.execute("PRAGMA page_size").fetchone()[0])
    finally:
        con.close()
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(bytes(range(256)) * (size // 256))


class ReadOnlyFile:
    """A database file that ``lock()`` makes read-only for this user, root included."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.immutable = False

    def lock(self) -> None:
        checkpoint(self.path)
        self.path.chmod(0o444)
        if os.access(self.path, os.W_OK):  # root ignores modes: make the file immutable
            done = subprocess.run(
                ["chattr", "+i", str(self.path)], capture_output=True, check=False
            )
            if done.returncode != 0:
                pytest.fail(f"cannot make {self.path} read-only for root: {done.stderr!r}")
            self.immutable = True

    def unlock(self) -> None:
        if self.immutable:
            subprocess.run(["chattr", "-i", str(self.path)], check=False)
        if self.path.exists():
            self.path.chmod(0o644)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[ReadOnlyFile]:
    file = ReadOnlyFile(tmp_path / "locked.db")
    yield file
    file.unlock()


async def test_read_only_file_fails_a_new_run_cleanly_and_keeps_the_old(
    read_only: ReadOnlyFile,
) -> None:
    wf, old, db = await stored_run(read_only.path)
    read_only.lock()
    with pytest.raises(bn.StorageError) as info:
        await wf.run(display=False, params={"p": SECRET_PARAM})
    message = str(info.value)
    assert "read-only" in message and "writable" in message, message
    assert repr(db) in message
    _clean(message)
    # Nothing committed is lost, and the file can still be read.
    again = await bn.Run.load(old.id, db=db)
    assert again.status == "completed" and again.results["second"] == 42
    assert [r.id for r in await bn.runs(db=db)] == [old.id]


async def test_damaged_runs_table_fails_a_new_run(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    wf, _, _ = await stored_run(path)
    damage_table(path, "workflow_runs")
    with pytest.raises(bn.StorageError) as info:
        await wf.run(display=False, params={"p": SECRET_PARAM})
    message = str(info.value)
    assert "damaged" in message and ".recover" in message and str(path) in message, message
    _clean(message)


async def test_damaged_nodes_fail_load_report_watch_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _, run, db = await stored_run(path)
    damage_table(path, "workflow_nodes")
    attempts = {
        "load": lambda: bn.Run.load(run.id, db=db),
        "report": lambda: bn.report(db=db),
        "runs": lambda: bn.runs(db=db),
        "prune": lambda: bn.prune(db, older_than=__import__("datetime").timedelta(0)),
    }
    for what, attempt in attempts.items():
        with pytest.raises(bn.StorageError) as info:
            await attempt()
        assert "damaged" in str(info.value), (what, str(info.value))
        _clean(str(info.value))
    with pytest.raises(bn.StorageError) as info:
        async with bn.watch(run.id, db=db):
            pass
    assert "damaged" in str(info.value)
    _clean(str(info.value))


async def test_damaged_stats_table_fails_the_commit_and_keeps_what_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "damaged.db"
    wf, _, _ = await stored_run(path)
    damage_table(path, "workflow_step_stats")
    with pytest.raises(bn.StorageError) as info:
        await wf.run(display=False, params={"p": SECRET_PARAM})
    message = str(info.value)
    assert message.startswith("could not save run "), message
    assert "damaged" in message, message
    _clean(message)
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT n.step, n.state, n.result FROM workflow_nodes n JOIN workflow_runs r "
            "ON r.id = n.run_id WHERE r.status = 'running'"
        ).fetchall()
    finally:
        con.close()
    assert ("first", "completed", "21") in rows  # committed before the failure: kept


def test_cli_prints_the_storage_error_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    asyncio.run(stored_run(path))
    damage_table(path, "workflow_runs")
    done = subprocess.run(
        [sys.executable, "-m", "baton_nb.cli", "runs", "--db", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert "damaged" in done.stderr and ".recover" in done.stderr, done.stderr
    _clean(done.stderr)


def test_cli_main_returns_1_for_a_storage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "damaged.db"
    asyncio.run(stored_run(path))
    damage_table(path, "workflow_nodes")
    assert cli_main(["report", "--db", f"sqlite:///{path}"]) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err, err


# ── Postgres ─────────────────────────────────────────────────────────────────


async def _admin(sql: str) -> list[object]:
    import asyncpg

    con = await asyncpg.connect(PG_SERVER + "/postgres")
    try:
        return list(await con.fetch(sql))
    finally:
        await con.close()


@pytest.fixture
def scratch_pg() -> Iterator[str]:
    name = f"baton_fail_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"Postgres is not running at {PG_SERVER}: {exc}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_postgres_connection_lost_mid_run(scratch_pg: str) -> None:
    """The server ends the run's connections during a step: the commit after it fails
    with a StorageError, what committed before stays, and a resume finishes the run."""
    name = scratch_pg.rsplit("/", 1)[1]
    executed: list[str] = []
    kill = {"on": True}
    wf = bn.Workflow("pg-lost", db=scratch_pg)

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        executed.append("first")
        return 21

    @wf.step()
    async def second(ctx: bn.Context, first: int) -> int:
        executed.append("second")
        if kill["on"]:
            await _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        return first * 2

    with pytest.raises(bn.StorageError) as info:
        await wf.run(display=False, params={"p": SECRET_PARAM})
    message = str(info.value)
    # The connection's end is seen as a lost connection (08) or as the server's own
    # "terminating connection" (57P01), whichever reaches the driver first.
    advice = ("Check that the server", "The server ended the connection")
    assert message.startswith("could not save run "), message
    assert any(a in message for a in advice), message
    _clean(message)
    run_id = message.split()[4].rstrip(":")
    kill["on"] = False
    run = await wf.run(run_id=run_id, display=False)
    assert run.status == "completed" and run.results["second"] == 42
    assert executed == ["first", "second", "second"]  # the committed step did not run again


async def test_postgres_missing_database_says_what_to_do() -> None:
    db = f"{PG_SERVER}/baton_no_such_db_{uuid.uuid4().hex[:8]}"
    with pytest.raises(bn.StorageError) as info:
        await bn.runs(db=db)
    assert "does not exist" in str(info.value) and "createdb" in str(info.value)


class SilentServer:
    """Accepts TCP connections and never sends a byte (a black-holed port)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


async def test_silent_server_times_out_naming_host_and_timeout(
    silent_server: SilentServer,
) -> None:
    db = f"postgresql://user:hunter2@127.0.0.1:{silent_server.port}/db?connect_timeout=0.5"
    with pytest.raises(bn.StorageError) as info:
        await Store.open(db)
    message = str(info.value)
    assert f"no answer from 127.0.0.1:{silent_server.port} within 0.5 s" in message, message
    assert "hunter2" not in message and "user:***@" in message
    assert silent_server.accepted  # it did connect: the silence is what timed out


async def test_refused_connection_names_the_host() -> None:
    with pytest.raises(bn.StorageError) as info:
        await bn.runs(db="postgresql://u:hunter2@127.0.0.1:1/db")
    message = str(info.value)
    assert "cannot connect to 127.0.0.1:1" in message and "hunter2" not in message, message


# ── the run's last write ─────────────────────────────────────────────────────


@pytest.fixture(params=["sqlite", "postgres"])
def own_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of this test's own (it adds a trigger to it), SQLite or Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'own.db'}"
    url: str = request.getfixturevalue("scratch_pg")
    return url


async def _execute(db: str, *statements: str) -> None:
    if db.startswith("sqlite"):
        con = sqlite3.connect(db.split(":///", 1)[1])
        try:
            for sql in statements:
                con.execute(sql)
            con.commit()
        finally:
            con.close()
        return
    import asyncpg

    con = await asyncpg.connect(db)
    try:
        for sql in statements:
            await con.execute(sql)
    finally:
        await con.close()


# The run row refuses a status other than running (its end), every other write of the
# run goes through (each commit reads the run's row for its lease guard: a table renamed
# away would fail the step's own commit, not the last write).
_REFUSE_END = {
    "sqlite": (
        "CREATE TRIGGER refuse_end BEFORE UPDATE OF status ON workflow_runs "
        "WHEN NEW.status <> 'running' BEGIN SELECT RAISE(ABORT, 'the run refuses its end'); END",
    ),
    "postgres": (
        "CREATE FUNCTION refuse_end() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status <> 'running' THEN RAISE EXCEPTION 'the run refuses its end'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER refuse_end BEFORE UPDATE ON workflow_runs FOR EACH ROW "
        "EXECUTE FUNCTION refuse_end()",
    ),
}
_ACCEPT_END = {
    "sqlite": ("DROP TRIGGER refuse_end",),
    "postgres": ("DROP TRIGGER refuse_end ON workflow_runs", "DROP FUNCTION refuse_end()"),
}


def _dialect(db: str) -> str:
    return "sqlite" if db.startswith("sqlite") else "postgres"


async def test_an_execution_whose_last_write_fails_still_publishes_workflow_finished(
    own_db: str,
) -> None:
    """Every step committed, then the run row's final update fails: the StorageError is
    raised and the execution still publishes its one WorkflowFinished (a widget or
    bn.watch waited for ever); a resume finishes the run without running the step again."""
    executed: list[str] = []
    wf = bn.Workflow("last-write-fails", db=own_db)

    @wf.step()
    async def only(ctx: bn.Context) -> int:
        executed.append(ctx.step)
        if len(executed) == 1:
            await _execute(own_db, *_REFUSE_END[_dialect(own_db)])
        return 1

    async with bn.events.subscribe(bn.topic_all()) as stream:
        with pytest.raises(bn.StorageError) as info:
            await wf.run(display=False, params={"p": SECRET_PARAM})
        finished = []
        while (event := stream.get_nowait()) is not None:
            if isinstance(event, bn.WorkflowFinished):
                finished.append(event)
    _clean(str(info.value))
    assert [e.workflow_label for e in finished] == [wf.name]
    await _execute(own_db, *_ACCEPT_END[_dialect(own_db)])
    run = await wf.run(run_id=finished[0].workflow_id, display=False)
    assert run.status == "completed" and run.results == {"only": 1}
    assert executed == ["only"]
