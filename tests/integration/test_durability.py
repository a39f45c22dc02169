"""Crash rescue, leases and bad input: nothing lost, nothing run twice, clear errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb._states import RunStatus
from baton_nb.runtime._lease import Lease, take_lease
from baton_nb.runtime._start import _prepare
from baton_nb.store import RunUpdate, Store, WriteBatch
from tests.integration._process import load_module

pytestmark = pytest.mark.anyio

WORKFLOW_MODULE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import anyio
    import baton_nb as bn

    MARKS = Path(os.environ["MARKS"])

    def mark(name):
        with open(MARKS / name, "a") as fh:
            fh.write("x")

    def build(db):
        wf = bn.Workflow("crashy", db=db)

        @wf.step()
        async def first(ctx):
            mark("first")
            return {"value": 21}

        @wf.step()
        async def slow(ctx, first):
            mark("slow")
            if os.environ.get("HANG") == "1":
                (MARKS / "slow-started").write_text("1")
                await anyio.sleep(60)
            return first["value"] * 2

        @wf.step()
        async def last(ctx, slow):
            mark("last")
            return slow + 1

        return wf

    if __name__ == "__main__":
        run = anyio.run(lambda: build(sys.argv[1]).run(run_id=sys.argv[2], display=False))
        print(run.status)
    """
)


def _count(marks: Path, name: str) -> int:
    path = marks / name
    return len(path.read_text()) if path.exists() else 0


@pytest.mark.slow  # a real subprocess
async def test_sigkill_mid_step_then_resume_completes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "crashy.py"
    script.write_text(WORKFLOW_MODULE)
    run_id = f"crash-{unique}"
    env = {**os.environ, "MARKS": str(marks), "HANG": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url, run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with anyio.fail_after(30):
            while not (marks / "slow-started").exists():
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                await anyio.sleep(0.05)
            # "executing" is written lazily (within 50 ms): wait until the row says so.
            async with await Store.open(db_url) as store:
                while (await _states(store, run_id)).get("slow") != "executing":
                    await anyio.sleep(0.02)
        monkeypatch.setenv("MARKS", str(marks))
        wf = load_module(script, "crashy_workflow").build(db_url)
        # While the other process is alive it holds the lease: a second executor is refused.
        with pytest.raises(bn.RunLocked, match=f"run {run_id} is being executed by"):
            await wf.run(run_id=run_id, display=False)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()

    async with await Store.open(db_url) as store:
        nodes = {n.step: n for n in await store.get_nodes(run_id)}
        assert nodes["first"].state == "completed"
        assert nodes["slow"].state == "executing"  # left behind by the killed process

    run = await wf.run(run_id=run_id, display=False)  # the dead holder's lease is taken over
    assert run.status == "completed"
    assert run.results == {"first": {"value": 21}, "slow": 42, "last": 43}
    assert _count(marks, "first") == 1  # completed before the crash: never re-executed
    assert _count(marks, "slow") == 2
    assert _count(marks, "last") == 1


async def _states(store: Store, run_id: str) -> dict[str, str]:
    return {n.step: n.state for n in await store.get_nodes(run_id)}


async def test_concurrent_resumes_one_wins(db_url: str, unique: str) -> None:
    gate = anyio.Event()
    entered = anyio.Event()
    healthy = False

    async def step(ctx: bn.Context) -> str:
        if not healthy:
            raise RuntimeError("down")
        entered.set()
        await gate.wait()
        return "done"

    wf = bn.Workflow(f"lease-{unique}", db=db_url)
    wf.add("a", step, max_attempts=1)
    failed = await wf.run(display=False)
    healthy = True
    outcomes: list[object] = []

    async def resume() -> None:
        try:
            outcomes.append(await wf.run(run_id=failed.id, display=False))
        except bn.RunLocked as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(resume)
        await entered.wait()
        await resume()  # the second one, while the first holds the lease
        gate.set()
    assert isinstance(outcomes[0], bn.RunLocked)
    assert "wait for it to finish" in str(outcomes[0])
    assert isinstance(outcomes[1], bn.Run) and outcomes[1].status == "completed"


async def _noop(ctx: bn.Context) -> None:
    return None


async def _count_runs(url: str) -> int:
    async with await Store.open(url) as store:
        return len(await store.list_runs())


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda wf: (wf.add("a", _noop, deps=["b"]), wf.add("b", _noop, deps=["a"])),
            bn.CycleError,
            "cycle: a -> b -> a",
        ),
        (lambda wf: wf.add("a", _noop, deps=["ghost"]), ValueError, "unknown step 'ghost'"),
        (lambda wf: wf.add("a", _noop, deps=["a"]), ValueError, "depends on itself"),
    ],
)
async def test_invalid_graphs_write_nothing(
    db_url: str, unique: str, build: object, error: type[Exception], message: str
) -> None:
    wf = bn.Workflow(f"invalid-{unique}", db=db_url)
    before = await _count_runs(db_url)
    with pytest.raises(error, match=message):
        build(wf)  # type: ignore[operator]
        await wf.run(display=False)
    assert await _count_runs(db_url) == before


def test_cycle_path_is_named_in_data_flow_order() -> None:
    wf = bn.Workflow("cycle")
    wf.add("a", _noop, deps=["c"])
    wf.add("b", _noop, deps=["a"])
    wf.add("c", _noop, deps=["b"])
    wf.add("d", _noop)
    with pytest.raises(bn.CycleError) as info:
        wf.validate()
    assert str(info.value) == "cycle: a -> b -> c -> a"
    assert isinstance(info.value, ValueError)


def test_duplicate_step_name_of_another_function_fails_at_add() -> None:
    wf = bn.Workflow("dup")
    wf.add("a", _noop)

    async def other(ctx: bn.Context) -> None:
        return None

    with pytest.raises(ValueError, match="already has a step named 'a'") as caught:
        wf.add("a", other)
    message = str(caught.value)
    assert "_noop" in message and "other" in message and "another name" in message
    assert wf.graph().steps["a"].fn is _noop


def test_a_step_defined_again_by_its_cell_replaces_it() -> None:
    """Re-running a notebook cell defines the same function (same module and qualified
    name) again: it replaces the step, its options included, keeping its place."""
    wf = bn.Workflow("redefine")
    cell = """
@wf.step()
async def a(ctx):
    return {value}

@wf.step(max_attempts={attempts})
async def b(ctx, a):
    return a + 1
"""
    namespace: dict[str, object] = {"wf": wf, "__name__": "__main__"}
    exec(cell.format(value=1, attempts=3), namespace)
    first = wf.graph().steps["a"].fn
    exec(cell.format(value=2, attempts=5), namespace)  # the cell, edited and run again
    graph = wf.graph()
    assert wf.step_names() == ["a", "b"] and graph.steps["a"].fn is not first
    assert graph.steps["b"].max_attempts == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": 3}, "unknown option\\(s\\) retries"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_attempts": "3"}, "max_attempts must be an int >= 1"),
        ({"timeout": -1}, "timeout must be seconds > 0"),
        ({"deps": "a"}, "deps must be a list of names"),
        ({"ignore_cancelled": "yes"}, "ignore_cancelled must be True or False"),
        ({"quorum": 2}, "quorum needs models= or map_over="),
        ({"models": ["m/a"], "quorum": 3}, "quorum=3 is more than the 1 models"),
        ({"backoff": 5}, "backoff must be callable"),
        ({"concurrency_key": 3}, "concurrency_key must be a string"),
    ],
)
def test_bad_step_options_are_named(options: dict[str, object], message: str) -> None:
    wf = bn.Workflow("opts")
    with pytest.raises(bn.ConfigurationError, match=message):
        wf.add("x", _noop, **options)  # type: ignore[arg-type]


async def test_bad_run_arguments_are_named(sqlite_url: str) -> None:
    wf = bn.Workflow("args", db=sqlite_url)
    wf.add("a", _noop)
    with pytest.raises(bn.ConfigurationError, match="concurrency must be an int >= 1"):
        await wf.run(concurrency=0)
    with pytest.raises(bn.ConfigurationError, match="params must be JSON-serialisable"):
        await wf.run(params={"x": object()}, display=False)
    with pytest.raises(bn.ConfigurationError, match="display must be"):
        await wf.run(display="fancy")
    with pytest.raises(bn.ConfigurationError, match="unsupported db URL"):
        bn.Workflow("w", db="mysql://nope")
    with pytest.raises(bn.ConfigurationError, match="has no steps"):
        await bn.Workflow("empty", db=sqlite_url).run()


async def test_unreachable_database_is_a_clear_error() -> None:
    wf = bn.Workflow("nodb", db="postgresql://postgres@127.0.0.1:1/test")
    wf.add("a", _noop)
    with pytest.raises(bn.StorageError, match=r"cannot open database .*Check that the server"):
        await wf.run(display=False)


@pytest.fixture
async def fresh_db_url(db_url: str, unique: str) -> AsyncIterator[str]:
    """A database nobody used yet: a new SQLite file, or a throwaway Postgres database.

    The shared Postgres ``test`` database is never altered; the throwaway one is dropped.
    """
    if not db_url.startswith("postgresql"):
        yield db_url  # tmp_path/baton.db, not created yet
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"baton_test_schema_{unique}"
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(db_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(db_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _scalar(url: str, sql: str) -> object:
    """One value read with a plain engine (no schema check, unlike Store.open)."""
    from sqlalchemy import text

    from baton_nb.store._engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


async def test_newer_schema_is_refused_before_writing(fresh_db_url: str) -> None:
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from baton_nb.store._tables import SchemaVersion

    table = SchemaVersion.__table__  # type: ignore[attr-defined]
    async with await Store.open(fresh_db_url) as store, store.engine.begin() as conn:
        future = datetime(2030, 1, 1, tzinfo=timezone.utc)
        await conn.execute(insert(table).values(version=999, applied_at=future))
    wf = bn.Workflow("future", db=fresh_db_url)
    wf.add("a", _noop)
    with pytest.raises(bn.SchemaVersionError, match="schema version 999"):
        await wf.run(display=False)
    with pytest.raises(bn.SchemaVersionError, match="upgrade baton_nb"):
        await Store.open(fresh_db_url)
    assert await _scalar(fresh_db_url, "SELECT COUNT(*) FROM workflow_runs") == 0
    assert await _scalar(fresh_db_url, "SELECT MAX(version) FROM baton_schema_version") == 999


async def _schema_versions(url: str) -> list[int]:
    from sqlalchemy import text

    from baton_nb.store._engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT version FROM baton_schema_version ORDER BY version")
            )
            return [int(v) for (v,) in rows]
    finally:
        await engine.dispose()


async def test_concurrent_first_use_of_a_new_database(fresh_db_url: str) -> None:
    from baton_nb.store._migrations import MIGRATIONS

    wf = bn.Workflow("first-use", db=fresh_db_url)
    wf.add("a", _noop)
    wf.add("b", _noop, deps=["a"])
    runs = await asyncio.gather(*(wf.run(display=False) for _ in range(3)))
    assert [r.status for r in runs] == ["completed"] * 3
    assert len({r.id for r in runs}) == 3
    # Each migration applied exactly once.
    assert await _schema_versions(fresh_db_url) == [v for v, _ in MIGRATIONS]


async def test_a_migration_missing_below_the_newest_is_applied(fresh_db_url: str) -> None:
    """Versions made on parallel branches land out of order: a database that has 11 but
    not 10 (the workers' tables) gets 10 when it is opened, and runs."""
    from sqlalchemy import text

    from baton_nb.store._engine import make_engine
    from baton_nb.store._migrations import MIGRATIONS

    await (await Store.open(fresh_db_url)).close()
    engine = make_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM baton_schema_version WHERE version = 10"))
            for table in ("workflow_tasks", "workflow_submissions", "workflow_workers"):
                await conn.execute(text(f"DROP TABLE {table}"))
    finally:
        await engine.dispose()
    assert 10 not in await _schema_versions(fresh_db_url)
    await (await Store.open(fresh_db_url)).close()
    assert await _schema_versions(fresh_db_url) == sorted(v for v, _ in MIGRATIONS)
    assert await _scalar(fresh_db_url, "SELECT COUNT(*) FROM workflow_tasks") == 0


_RUN_ID_INDEXES = {
    "ix_workflow_nodes_run_id",
    "ix_workflow_completions_run_id",
    "ix_workflow_step_stats_run_id",
}


async def _answer_tables_schema(url: str) -> tuple[set[str], object]:
    """The indexes of the tables an answer writes, and workflow_nodes' storage options
    (None on SQLite)."""
    tables = "('workflow_nodes', 'workflow_completions', 'workflow_step_stats')"
    if url.startswith("sqlite"):
        listed = f"SELECT group_concat(name) FROM sqlite_master WHERE tbl_name IN {tables}"
        options = None
    else:
        listed = f"SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename IN {tables}"
        options = await _scalar(
            url, "SELECT reloptions FROM pg_class WHERE relname = 'workflow_nodes'"
        )
    return set(str(await _scalar(url, listed)).split(",")), options


async def test_migration_15_writes_fewer_index_entries_per_answer_on_postgres(
    fresh_db_url: str, unique: str
) -> None:
    """Migration 15 (docs/performance.md, "Ninth round: the Postgres server's share"): on
    Postgres the run_id indexes that a longer index of the same table begins with are gone
    and workflow_nodes' pages are filled to half (HOT updates), on a new database and on
    one made before it; SQLite is unchanged. Runs made before and after load as before
    (a run's rows are found by run_id through the longer indexes)."""
    from sqlalchemy import text

    from baton_nb.store._engine import make_engine
    from baton_nb.store._migrations import MIGRATIONS

    postgres = not fresh_db_url.startswith("sqlite")
    wf = bn.Workflow(f"m15-{unique}", db=fresh_db_url)
    wf.add("a", _noop)
    first = await wf.run(display=False)
    indexes, options = await _answer_tables_schema(fresh_db_url)
    assert indexes.isdisjoint(_RUN_ID_INDEXES) if postgres else indexes >= _RUN_ID_INDEXES
    assert options == (["fillfactor=50"] if postgres else None)
    if postgres:  # a database made before 15: its indexes and full pages, the version gone
        engine = make_engine(fresh_db_url)
        try:
            async with engine.begin() as conn:
                for index in sorted(_RUN_ID_INDEXES):
                    table = index.removeprefix("ix_").removesuffix("_run_id")
                    await conn.execute(text(f"CREATE INDEX {index} ON {table} (run_id)"))
                await conn.execute(text("ALTER TABLE workflow_nodes RESET (fillfactor)"))
                await conn.execute(text("DELETE FROM baton_schema_version WHERE version = 15"))
        finally:
            await engine.dispose()
        assert (await _answer_tables_schema(fresh_db_url))[0] >= _RUN_ID_INDEXES
    second = await wf.run(display=False)  # migrates a database made before 15
    assert await _schema_versions(fresh_db_url) == sorted(v for v, _ in MIGRATIONS)
    assert await _answer_tables_schema(fresh_db_url) == (indexes, options)
    for run in (first, second):
        loaded = await bn.Run.load(run.id, db=fresh_db_url)
        assert loaded.status == "completed" and set(loaded.steps) == {"a"}


def _sqlite_schema_of(path: Path) -> list[tuple[str, str, str, str]]:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name NOT IN ('user_notes', 'sqlite_sequence') ORDER BY type, name"
        ).fetchall()
        versions = con.execute("SELECT version FROM baton_schema_version ORDER BY 1").fetchall()
    finally:
        con.close()
    return [*rows, ("versions", str(versions), "", "")]


async def test_a_new_sqlite_file_gets_the_schema_the_migrations_make(tmp_path: Path) -> None:
    """A SQLite file with no table gets today's schema at once (one script, not the
    migrations one by one: docs/performance.md, "Sixth round"); a file that holds a table
    of its own goes through every migration. Both end with the same tables, columns,
    indexes and versions, and a run works on each."""
    import sqlite3

    from baton_nb.store._migrations import MIGRATIONS

    new, shared = tmp_path / "new.db", tmp_path / "shared.db"
    con = sqlite3.connect(shared)
    con.execute("CREATE TABLE user_notes (id INTEGER PRIMARY KEY, note TEXT UNIQUE)")
    con.commit()
    con.close()
    for path in (new, shared):
        await (await Store.open(f"sqlite:///{path}")).close()
    made, migrated = _sqlite_schema_of(new), _sqlite_schema_of(shared)
    assert made == migrated
    assert made[-1][1] == str([(v,) for v, _ in MIGRATIONS])
    assert {r[1] for r in made} >= {"workflow_runs", "workflow_nodes", "ix_runs_status_created"}
    for path in (new, shared):
        wf = bn.Workflow("schema-paths", db=f"sqlite:///{path}")
        wf.add("a", _noop)
        assert (await wf.run(display=False)).status == "completed"
        await (await Store.open(f"sqlite:///{path}")).close()  # opened again: nothing to do
    assert _sqlite_schema_of(new) == made


FIRST_USE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import anyio
    import baton_nb as bn

    async def noop(ctx):
        return None

    async def main(db, start_at):
        wf = bn.Workflow("first-use-proc", db=db)
        wf.add("a", noop)
        time.sleep(max(0.0, start_at - time.time()))  # all processes start together
        run = await wf.run(display=False)
        print(run.status)

    anyio.run(main, sys.argv[1], float(sys.argv[2]))
    """
)


@pytest.mark.slow  # a real subprocess
async def test_processes_opening_a_new_database_at_once(fresh_db_url: str, tmp_path: Path) -> None:
    from baton_nb.store._migrations import MIGRATIONS

    script = tmp_path / "first_use.py"
    script.write_text(FIRST_USE_SCRIPT)
    start_at = time.time() + 3.0  # past every process's import time
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), fresh_db_url, repr(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for proc in procs:
        out, err = await anyio.to_thread.run_sync(lambda p=proc: p.communicate(timeout=60))
        outputs.append((proc.returncode, out.strip(), err.strip()[-2000:]))
    assert [o[:2] for o in outputs] == [(0, "completed")] * 3, outputs
    assert await _schema_versions(fresh_db_url) == [v for v, _ in MIGRATIONS]


async def test_unreadable_sqlite_file_error_does_not_mention_a_server(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.db"
    path.write_bytes(b"this is not an SQLite database file" * 100)
    with pytest.raises(bn.StorageError, match="cannot open database") as info:
        await Store.open(f"sqlite:///{path}")
    assert "server" not in str(info.value)
    assert "file path" in str(info.value)


async def test_default_database_comes_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv("BATON_NB_DB", url)
    wf = bn.Workflow("env-db")
    wf.add("a", _noop)
    run = await wf.run(display=False)
    assert (await bn.Run.load(run.id)).status == "completed"
    assert (tmp_path / "from-env.db").exists()


async def test_memory_database_keeps_runs_for_the_process() -> None:
    wf = bn.Workflow("mem", db="sqlite:///:memory:")
    wf.add("a", _noop)
    run = await wf.run(display=False)
    loaded = await bn.Run.load(run.id, db="sqlite:///:memory:")
    assert loaded.status == "completed"
    assert time.time() > 0


async def test_lease_left_by_an_interrupted_start_in_this_process_is_taken_over(
    sqlite_url: str,
) -> None:
    wf = bn.Workflow("stale-lease", db=sqlite_url)
    wf.add("a", _noop)
    run = await wf.run(display=False)
    import os
    import socket
    from datetime import timedelta

    async with await Store.open(sqlite_url) as store:
        owner = f"{socket.gethostname()}:{os.getpid()}:deadbeef"
        await store.write(WriteBatch(run=RunUpdate(run.id, RunStatus.RUNNING)))
        assert await store.acquire_lease(run.id, owner, timedelta(minutes=5).total_seconds())
    resumed = await wf.run(run_id=run.id, display=False)
    assert resumed.status == "completed"


async def test_resume_settles_a_child_left_running_after_its_quorum_was_met(
    db_url: str, unique: str
) -> None:
    """As a kill -9 leaves it: the group completed on quorum, one child still `executing`,
    its dependent `executing`. The resume must finish, not wait for the orphaned child."""
    wf = bn.Workflow(f"quorum-orphan-{unique}", db=db_url)

    @wf.step(models=["mock/fast", "mock/slow"], quorum=1)
    async def fan(ctx: bn.Context) -> str:
        return str(ctx.model)

    @wf.step()
    async def after(ctx: bn.Context, fan: dict[str, str]) -> int:
        return len(fan)

    run = await wf.run(display=False)
    assert run.status == "completed"
    async with await Store.open(db_url) as store, store.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE workflow_nodes SET state = 'executing', result = NULL, "
                "has_result = false, finished_at = NULL "
                "WHERE run_id = :run AND step IN ('fan[mock/slow]', 'after')"
            ),
            {"run": run.id},
        )
        await conn.execute(
            sa.text(
                "UPDATE workflow_runs SET status = 'running', finished_at = NULL, "
                "lease_owner = NULL WHERE id = :run"
            ),
            {"run": run.id},
        )

    with anyio.fail_after(20):
        resumed = await wf.run(run_id=run.id, display=False)
    assert resumed.status == "completed"
    assert resumed.steps["fan[mock/slow]"].state == "cancelled"
    assert "quorum" in (resumed.steps["fan[mock/slow]"].error or "")
    assert resumed.results["after"] in (1, 2)
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.steps["fan[mock/slow]"].state == "cancelled"
    assert stored.steps["after"].state == "completed"


async def test_in_memory_resume_keeps_every_write(unique: str) -> None:
    """sqlite:///:memory: is one shared connection: the reads of a resumed run (stored
    completions) must not roll back the writer's open transaction."""
    db = "sqlite:///:memory:"
    wf = bn.Workflow(f"memory-resume-{unique}", db=db)

    async def ask(ctx: bn.Context) -> str:
        reply = await ctx.complete(model="mock/gpt-4o-mini", prompt=ctx.step, max_tokens=5)
        await anyio.sleep(0.001 * (int(ctx.step[1:]) % 5))
        return reply.text[:3]

    async def copy(ctx: bn.Context) -> str:
        return str(ctx.results["s" + ctx.step[1:]])

    for i in range(150):
        wf.add(f"s{i}", ask)
        wf.add(f"d{i}", copy, deps=[f"s{i}"])
    run_id = f"mem-{unique}"
    with anyio.move_on_after(0.15):
        await wf.run(run_id=run_id, display=False, concurrency=32)
    run = await wf.run(run_id=run_id, display=False, concurrency=32)
    assert run.status == "completed"
    stored = await bn.Run.load(run_id, db=db)
    assert stored.status == "completed"
    assert {n: s.state for n, s in stored.steps.items()} == {
        n: s.state for n, s in run.steps.items()
    }
    assert len(stored.results) == 300
    assert sum(not c.replayed for c in stored.calls) == 150


async def _stored_executing(store: Store, run_id: str, step: str) -> None:
    """Wait until ``step``'s start is committed (lazily, ``LAZY_FLUSH``): a takeover
    before that would find the execution at that commit, not at the step's end."""
    with anyio.fail_after(10):
        while True:
            nodes = {n.step: n.state for n in await store.get_nodes(run_id)}
            if nodes.get(step) == "executing":
                return
            await anyio.sleep(0.01)


async def test_a_run_taken_over_meanwhile_does_not_end_it_for_the_new_holder(
    db_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's lease is taken by another owner while a step runs (this process stalled
    past its lease, as another saw it): the run's end is not written over the new
    holder's run, whose lease it would release (``WriteBatch.owner``, checked in the
    commit), and nothing says the run was cancelled: ``wf.run()`` raises ``RunLocked``
    naming who continues it and how to follow it, the live Run (``wf.last_run``), the
    text progress line and the execution's one ``WorkflowFinished`` say ``taken_over``
    by that owner, no step is announced cancelled; the row is still the new holder's and
    running (docs/workers.md "Failures")."""
    from baton_nb._run import live_run

    gate = anyio.Event()
    entered = anyio.Event()
    followers_told: list[str] = []  # the widget's and the text line's way (Run.follow)

    async def step(ctx: bn.Context) -> str:
        live = live_run(ctx.run_id)
        assert live is not None
        live.follow(lambda _name: None, lambda: followers_told.append(live.status))
        entered.set()
        await gate.wait()
        return "done"

    wf = bn.Workflow(f"taken-{unique}", db=db_url)
    wf.add("a", step, max_attempts=1)
    wf.add("b", step, deps=["a"])
    outcomes: list[object] = []
    events: list[object] = []

    def seen(event: object) -> None:
        if getattr(event, "workflow_label", None) == wf.name:
            events.append(event)

    async def run() -> None:
        try:
            outcomes.append(await wf.run(display="text"))
        except bn.RunLocked as exc:
            outcomes.append(exc)

    remove = bn.events.add_listener(bn.topic_all(), seen)
    try:
        async with await Store.open(db_url) as store:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await entered.wait()
                [row] = await store.list_runs(workflow=f"taken-{unique}")
                assert row.lease_owner is not None
                await _stored_executing(store, row.id, "a")
                assert await store.acquire_lease(row.id, "other", 600, steal_from=row.lease_owner)
                gate.set()
            after = await store.get_run(row.id)
            nodes = {n.step: n.state for n in await store.get_nodes(row.id)}
    finally:
        remove()
    [error] = outcomes
    assert isinstance(error, bn.RunLocked), error
    assert (error.run_id, error.owner) == (row.id, "other")
    text = str(error)
    assert f"run {row.id} of workflow {wf.name!r} is being continued by other" in text
    assert f"bn.watch({row.id!r}" in text and "cancelled" not in text
    # In a notebook the cell ends with that message, no traceback through the library.
    assert error._render_traceback_() == [f"RunLocked: {text}"]  # type: ignore[attr-defined]
    live = wf.last_run
    assert live is not None and live.id == row.id
    assert live.status == "taken_over" and live.taken_over_by == "other" and live.done
    assert followers_told == ["taken_over"]  # the widget and the text line told it ended
    assert "cancelled" not in {s.state for s in live.steps.values()}
    assert live.steps["b"].state == "pending"  # not run here, not cancelled: it runs there
    assert "taken over by other" in repr(live)
    finished = [e for e in events if isinstance(e, bn.WorkflowFinished)]
    assert [(e.outcome, e.taken_over_by) for e in finished] == [("taken_over", "other")]
    assert not [e for e in events if isinstance(e, bn.StepUpdated) and e.state == "cancelled"]
    line = capsys.readouterr().err.rstrip("\n").split("\r")[-1]
    assert line.endswith("taken over by other") and "cancelled" not in line, line
    # Nothing of it in the store: the new holder's run, running, its steps not ended here.
    assert after is not None and after.lease_owner == "other"
    assert after.status == RunStatus.RUNNING and after.finished_at is None
    assert nodes == {"a": "executing", "b": "pending"}


async def test_a_run_taken_over_and_ended_elsewhere_says_so(db_url: str, unique: str) -> None:
    """The run is taken over while this execution's step holds, and the new holder (here
    a resume in this process) runs it to its end before this execution commits again: its
    refused commit ends it ``taken_over``, its ``RunLocked`` says the run was ended there
    (the lease is free again: nobody holds it), the stored run stays completed."""
    gate = anyio.Event()
    entered = anyio.Event()
    calls: list[int] = []

    async def step(ctx: bn.Context) -> str:
        calls.append(1)
        if len(calls) == 1:  # the first execution's attempt holds until the second ended
            entered.set()
            await gate.wait()
        return "done"

    wf = bn.Workflow(f"taken-ended-{unique}", db=db_url)
    wf.add("a", step, max_attempts=1)
    outcomes: list[object] = []

    async def first() -> None:
        try:
            outcomes.append(await wf.run(display=False))
        except bn.RunLocked as exc:
            outcomes.append(exc)

    async with await Store.open(db_url) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await entered.wait()
            [row] = await store.list_runs(workflow=wf.name)
            assert row.lease_owner is not None
            await _stored_executing(store, row.id, "a")
            # Taken by another owner whose lease lapsed at once: the resume below takes it.
            assert await store.acquire_lease(row.id, "other", -1, steal_from=row.lease_owner)
            first_run = wf.last_run
            done = await wf.run(run_id=row.id, display=False)
            assert done.status == "completed"
            gate.set()
        stored = await store.get_run(row.id)
    [error] = outcomes
    assert isinstance(error, bn.RunLocked), error
    assert error.owner is None
    text = str(error)
    assert f"run {row.id} of workflow {wf.name!r} was taken over by another process, " in text
    assert "which ended it (completed)" in text
    assert first_run is not None and first_run.status == "taken_over"
    assert first_run.taken_over_by is None and repr(first_run).count("taken over") == 1
    assert stored is not None and stored.status == RunStatus.COMPLETED
    assert len(calls) == 2


async def test_a_hand_over_commits_what_its_attempts_stored_not_the_runs_end(
    db_url: str, unique: str
) -> None:
    """A worker's coordinator stopping hands the run over (``Driver.handing_over``): rows
    its attempts left for the writer (here a captured log, committed lazily) are committed;
    the run does not end (still running, no step stored cancelled); the lease stays this
    execution's until the coordinator requeues the run."""
    healthy = False
    entered = anyio.Event()

    async def step(ctx: bn.Context) -> None:
        if not healthy:
            raise RuntimeError("down")
        ctx.log("paid")
        entered.set()
        await anyio.Event().wait()  # until the hand-over stops it

    wf = bn.Workflow(f"handover-{unique}", db=db_url)
    wf.add("a", step, max_attempts=1)
    failed = await wf.run(display=False)
    healthy = True
    graph = wf.graph()
    async with await Store.open(db_url) as store:
        with Lease(30) as lease:
            await take_lease(store, failed.id, lease, None)
            driver = await _prepare(store, graph, failed.id, lease, 4, dict(graph.models), None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(driver.execute)
                await entered.wait()
                driver.handing_over = True
                driver.run.cancel()
        logs = await store.get_debug_logs(failed.id)
        row = await store.get_run(failed.id)
        nodes = {n.step: n.state for n in await store.get_nodes(failed.id)}
    assert [entry.message for entry in logs] == ["paid"]
    assert row is not None and row.status == RunStatus.RUNNING and row.finished_at is None
    assert row.lease_owner == lease.owner
    assert nodes["a"] != "cancelled"


async def test_a_resume_runs_at_the_concurrency_it_is_given_not_the_first_runs(
    sqlite_url: str, unique: str
) -> None:
    """``concurrency=`` is not stored with the run: a resume runs at its own (default 32),
    as docs/concepts.md "Concurrency" says. First execution: 2 at once, then stopped."""
    wf = bn.Workflow(f"resume-concurrency-{unique}", db=sqlite_url)
    running = 0
    peak = 0
    two_started = anyio.Event()
    all_started = anyio.Event()
    hold = True

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(6))

    @wf.step(map_over="items")
    async def work(ctx: bn.Context) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_started.set()
        if running == 6:
            all_started.set()
        try:
            if hold:
                await anyio.sleep_forever()
            with anyio.move_on_after(10):  # a guard: at concurrency 2 they never all start
                await all_started.wait()
            return int(ctx.item)
        finally:
            running -= 1

    run_id = f"conc-{unique}"
    async with anyio.create_task_group() as tg:

        async def first() -> None:
            await wf.run(run_id=run_id, concurrency=2, display=False)

        tg.start_soon(first)
        await two_started.wait()
        tg.cancel_scope.cancel()  # the cell interrupted: the run is stored, resumable
    assert peak == 2
    hold, peak = False, 0
    run = await wf.run(run_id=run_id, display=False)  # no concurrency=: the default, 32
    assert run.status == "completed" and peak == 6
