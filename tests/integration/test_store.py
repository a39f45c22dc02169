"""The repository interface (``RunStore``): one suite, three stores.

Every test runs on SQLite, on the real Postgres server (a scratch database, so counts are
exact whatever else runs) and on the in-memory store: they must behave alike,
the way procrastinate holds its connectors and its in-memory fake to one set of tests.
On Postgres the module has a scratch database of its own, emptied before each test.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from baton_nb._errors import RunLocked
from baton_nb._states import BatchRequestState, BatchState, NodeKind, RunStatus, State
from baton_nb._usage import Usage
from baton_nb.pricing import CallPricing
from baton_nb.store import (
    PRUNE_TABLES,
    AttemptRow,
    BatchRequestRow,
    CallRecord,
    ChangeMarks,
    CompletionRow,
    LogRow,
    MemoryStore,
    NewestRuns,
    NodeRow,
    ProviderBatchRow,
    RunFilter,
    RunRow,
    RunStopped,
    RunStore,
    RunUpdate,
    SqlStore,
    Store,
    WriteBatch,
)
from baton_nb.store import _sql_write as sql_write
from baton_nb.store._sql_base import driver_connection
from baton_nb.store._sql_read import _newest_of_kind

pytestmark = pytest.mark.anyio

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
T0 = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


async def _admin(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_SERVER + "/postgres")
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.fixture(scope="module")
def scratch_postgres() -> Iterator[str]:
    """A database of this module's own on the Postgres server (emptied before each test)."""
    name = f"baton_store_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"Postgres is not running on 127.0.0.1:5432: {exc}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    url: str = request.getfixturevalue("scratch_postgres")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RunStore]:
    opened = await Store.open(store_url)
    if store_url.startswith("postgresql"):  # exact counts: nothing of an earlier test
        async with opened.begin() as conn:  # type: ignore[attr-defined]
            await conn.exec_driver_sql(f"TRUNCATE {', '.join(PRUNE_TABLES)} RESTART IDENTITY")
    try:
        yield opened
    finally:
        await opened.close()


def run_row(run_id: str, **changes: object) -> RunRow:
    row = RunRow(
        id=run_id,
        workflow="wf",
        params='{"topic": "x"}',
        status=RunStatus.RUNNING,
        created_at=T0,
        started_at=T0,
    )
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def node_row(run_id: str, step: str, **changes: object) -> NodeRow:
    row = NodeRow(
        run_id=run_id,
        step=step,
        kind=NodeKind.STEP,
        worker=f"mod.{step}",
        deps=[],
        remaining_deps=0,
        max_attempts=3,
        updated_at=T0,
    )
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def call(run_id: str, step: str, model: str = "mock/a", **changes: object) -> CallRecord:
    record = CallRecord(
        run_id=run_id,
        step=step,
        model=model,
        provider="mock",
        attempt=1,
        call_index=0,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=Decimal("0.0015"),
        latency_ms=12.5,
        replayed=False,
        estimated=False,
        created_at=T0,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def log(run_id: str, step: str, message: str = "hello", at: datetime = T0) -> LogRow:
    return LogRow(run_id, step, 1, "log", message, '{"k": 1}', at)


async def a_run(store: RunStore, run_id: str = "run-1", **changes: object) -> dict[str, int]:
    nodes = [
        node_row(run_id, "a"),
        node_row(run_id, "fan", kind=NodeKind.GROUP, deps=["a"], remaining_deps=1),
        node_row(run_id, "fan[mock/x]", kind=NodeKind.CHILD, parent="fan", model="mock/x"),
        node_row(run_id, "b", deps=["a", "fan"], remaining_deps=2),
    ]
    return await store.insert_run(run_row(run_id, **changes), nodes)


# ── runs and nodes ───────────────────────────────────────────────────────────


async def test_a_run_and_its_nodes_read_back_as_written(store: RunStore) -> None:
    ids = await a_run(store)
    assert set(ids) == {"a", "fan", "fan[mock/x]", "b"}
    run = await store.get_run("run-1")
    assert run == run_row("run-1")
    assert isinstance(run.status, RunStatus)
    nodes = await store.get_nodes("run-1")
    assert [n.step for n in nodes] == ["a", "fan", "fan[mock/x]", "b"]  # id order
    assert [n.id for n in nodes] == [ids[n.step] for n in nodes]
    b = nodes[3]
    assert (b.deps, b.remaining_deps, b.kind, b.state) == (["a", "fan"], 2, "step", "pending")
    assert isinstance(b.state, State) and isinstance(b.kind, NodeKind)
    assert nodes[2].parent == "fan" and nodes[2].model == "mock/x"
    assert b.updated_at == T0
    assert await store.get_run("nope") is None
    assert await store.get_nodes("nope") == []


async def test_a_run_id_is_taken_once_and_a_failed_insert_writes_nothing(store: RunStore) -> None:
    await a_run(store)
    with pytest.raises(Exception):  # noqa: B017 - each store raises its own kind
        await store.insert_run(run_row("run-1"), [node_row("run-1", "z")])
    assert [n.step for n in await store.get_nodes("run-1")] == ["a", "fan", "fan[mock/x]", "b"]
    with pytest.raises(Exception):  # noqa: B017
        await store.insert_run(run_row("run-2"), [node_row("run-2", "x"), node_row("run-2", "x")])
    assert await store.get_run("run-2") is None


async def test_nodes_added_to_a_run_get_ids(store: RunStore) -> None:
    await a_run(store)
    rows = [node_row("run-1", f"m[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(3)]
    ids = await store.insert_nodes(rows)
    assert sorted(ids) == ["m[0]", "m[1]", "m[2]"]
    assert len(set(ids.values())) == 3
    stored = {n.step: n.id for n in await store.get_nodes("run-1")}
    assert all(stored[name] == node_id for name, node_id in ids.items())
    assert await store.insert_nodes([]) == {}


async def test_nodes_added_to_runs_in_turns_get_their_own_ids(store: RunStore) -> None:
    """The ids of new nodes are computed when the insert took consecutive ones in the rows'
    order (checked by the store), never assumed: inserts of two runs in turns, small and
    large (SQLite's two statements), each read back as returned."""
    await a_run(store, "run-1")
    await a_run(store, "run-2")
    returned: dict[tuple[str, str], int] = {}
    for turn, size in enumerate([3, 300, 1, 700, 2]):
        for run_id in ("run-1", "run-2"):
            rows = [
                node_row(run_id, f"m{turn}[{i}]", kind=NodeKind.CHILD, parent="fan", item_index=i)
                for i in range(size)
            ]
            ids = await store.insert_nodes(rows)
            assert list(ids) == [r.step for r in rows]
            assert list(ids.values()) == sorted(ids.values())
            returned.update({(run_id, step): node_id for step, node_id in ids.items()})
    for run_id in ("run-1", "run-2"):
        for node in await store.get_nodes(run_id):
            if (run_id, node.step) in returned:
                assert returned.pop((run_id, node.step)) == node.id, node.step
    assert returned == {}


async def test_many_nodes_added_at_once_read_back_as_written(store: RunStore) -> None:
    """A map's many children (SQLite: one statement reading them from JSON) store every
    field as a few rows do: names that look like JSON or numbers, quotes, unicode, None."""
    await a_run(store)
    odd = ['m["x"]', "m[1e3]", "m[null]", "m[é ✓]", "m[\\]", "m['q']"]
    names = odd + [f"m[{i}]" for i in range(400)]
    rows = [
        node_row(
            "run-1",
            name,
            kind=NodeKind.CHILD,
            parent="fan",
            item_index=i,
            model=None if i % 2 else f"mock/{i}",
            error="boom" if i == 7 else None,
            attempt=i % 3,
            started_at=T0 if i % 5 == 0 else None,
        )
        for i, name in enumerate(names)
    ]
    few = [node_row("run-1", f"f[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(2)]
    ids = await store.insert_nodes(rows)
    await store.insert_nodes(few)
    stored = {n.step: n for n in await store.get_nodes("run-1")}
    for row in [*rows, *few]:
        got = stored[row.step]
        assert got.id is not None
        row.id = got.id
        assert got == row, row.step
    ordered = [ids[name] for name in names]
    assert ordered == sorted(ordered)  # ids in the rows' order


# ── a run's writes ───────────────────────────────────────────────────────────


async def test_a_batch_commits_nodes_run_calls_completions_and_logs(store: RunStore) -> None:
    ids = await a_run(store)
    later = T0 + timedelta(seconds=3)
    update = (State.COMPLETED, 1, None, '{"v": 1}', True, 0, T0, later, later, ids["a"])
    batch = WriteBatch(
        run_id="run-1",
        nodes=[update],
        completions=[CompletionRow("run-1", "a", 0, "h1", '{"text": "hi"}', later)],
        stats=[call("run-1", "a")],
        logs=[log("run-1", "a")],
    )
    async with store.writer() as writer:
        await writer.write(batch)
    a = (await store.get_nodes("run-1"))[0]
    assert (a.state, a.attempt, a.result, a.has_result) == ("completed", 1, '{"v": 1}', True)
    assert (a.started_at, a.finished_at, a.updated_at) == (T0, later, later)
    assert await store.get_completions("run-1", "a") == {0: ("h1", '{"text": "hi"}')}
    assert await store.get_completions("run-1", "b") == {}
    [stat] = await store.get_stats(["run-1"])
    assert stat.id is not None and stat == call("run-1", "a", id=stat.id)
    priced = CallPricing("mock/a", "genai-prices 0.0.1", "openai/gpt-4o", Decimal("0.25"))
    await store.write(WriteBatch(stats=[call("run-1", "b", pricing=priced)]))
    assert (await store.get_stats(["run-1"]))[1].pricing == priced
    [entry] = await store.get_debug_logs("run-1")
    assert entry.id is not None and (entry.message, entry.data) == ("hello", '{"k": 1}')
    assert await store.get_debug_logs("run-1", step="b") == []

    end = RunUpdate("run-1", RunStatus.FAILED, ["b"], later, executions=2, release_lease=True)
    await store.write(WriteBatch(run=end))
    run = await store.get_run("run-1")
    assert run is not None
    assert (run.status, run.failed_steps, run.finished_at, run.executions) == (
        "failed",
        ["b"],
        later,
        2,
    )


async def test_a_failing_batch_writes_nothing(store: RunStore) -> None:
    ids = await a_run(store)
    row = CompletionRow("run-1", "a", 0, "h1", "{}", T0)
    await store.write(WriteBatch(completions=[row]))
    update = (State.EXECUTING, 1, None, None, False, 0, T0, None, T0, ids["a"])
    bad = WriteBatch(run_id="run-1", nodes=[update], completions=[row], stats=[call("run-1", "a")])
    for attempt in range(2):  # on its own, then through a run's writer
        with pytest.raises(Exception):  # noqa: B017 - the same completion twice
            if attempt == 0:
                await store.write(bad)
            else:
                async with store.writer() as writer:
                    await writer.write(bad)
        assert (await store.get_nodes("run-1"))[0].state == "pending"
        assert await store.get_stats(["run-1"]) == []
    async with store.writer() as writer:  # the writer goes on after a failed batch
        await writer.write(WriteBatch(run_id="run-1", nodes=[update]))
    assert (await store.get_nodes("run-1"))[0].state == "executing"


async def test_a_big_commit_reads_back_as_written(store: RunStore) -> None:
    """A run's writer commits many node updates, stored answers and stats together (on
    SQLite as one multi-row statement per table: ``_write_sqlite_driver``); every row
    reads back as given, and on SQLite the commit runs a handful of statements, not one
    per row (each row's step waited for the GIL while the event loop was busy)."""
    ids = await a_run(store)
    rows = [node_row("run-1", f"fan[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(600)]
    ids.update(await store.insert_nodes(rows))
    later = T0 + timedelta(seconds=5)
    updates = [
        (State.COMPLETED, 0, None, f'"r{i}"', True, 1, T0, later, later, ids[f"fan[{i}]"])
        for i in range(600)
    ]
    completions = [CompletionRow("run-1", f"fan[{i}]", 0, f"h{i}", "{}", T0) for i in range(600)]
    stats = [call("run-1", f"fan[{i}]") for i in range(600)]
    batch = WriteBatch(run_id="run-1", nodes=updates, completions=completions, stats=stats)
    traced: list[str] = []
    async with store.writer() as writer:
        if isinstance(store, SqlStore) and store.dialect == "sqlite":
            driver = await driver_connection(writer.write.args[0])  # type: ignore[attr-defined]
            await driver._execute(driver._conn.set_trace_callback, traced.append)
        await writer.write(batch)
    nodes = {n.step: n for n in await store.get_nodes("run-1")}
    for i in range(600):
        node = nodes[f"fan[{i}]"]
        assert (node.state, node.result, node.has_result, node.finished_at) == (
            "completed",
            f'"r{i}"',
            True,
            later,
        )
    assert nodes["a"].state == "pending"  # not in the batch: unchanged
    stored = await store.get_stats(["run-1"])
    assert sorted(s.step for s in stored) == sorted(f"fan[{i}]" for i in range(600))
    assert (await store.get_completions("run-1", "fan[599]"))[0] == ("h599", "{}")
    if traced:
        writes = [sql for sql in traced if sql.split()[0] in ("INSERT", "UPDATE", "WITH")]
        assert len(writes) <= 8, len(writes)  # before: 1,800 (one per row)


async def test_columns_every_row_shares_are_stored_as_given(store: RunStore) -> None:
    """On Postgres a column that every row of a commit holds the same value in is sent
    once (``_fold``): rows read back as given, whatever varies and whatever does not.
    Costs of another scale (0.0015 and 0.00150) and -0.0 are sent as given; two identical stats
    rows stay two; a one-row commit, a commit where only the ids differ, and one where
    only the state differs, each read back as written."""
    ids = await a_run(store)
    rows = [node_row("run-1", f"fan[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(4)]
    ids.update(await store.insert_nodes(rows))
    later = T0 + timedelta(seconds=5)
    fan = [ids[f"fan[{i}]"] for i in range(4)]
    same = [(State.EXECUTING, 1, None, None, False, 0, T0, None, T0, node) for node in fan]
    mixed = [
        (State.COMPLETED, 1, None, '"r"', True, 0, T0, later, later, fan[0]),
        (State.DISCARDED, 2, "boom", None, False, 0, T0, later, later, fan[1]),
    ]
    costs = [Decimal("0.0015"), Decimal("0.00150"), Decimal("0.0015"), None]
    stats = [call("run-1", "fan[0]", cost=cost) for cost in costs]
    stats.append(call("run-1", "fan[0]", cost=costs[0]))  # identical to the first
    completions = [CompletionRow("run-1", f"fan[{i}]", 0, "h", "{}", T0) for i in range(2)]
    async with store.writer() as writer:
        await writer.write(WriteBatch(run_id="run-1", nodes=same))
        await writer.write(WriteBatch(run_id="run-1", nodes=mixed, stats=stats))
        await writer.write(WriteBatch(run_id="run-1", completions=completions))
        one = call("run-1", "fan[2]", model="mock/b", latency_ms=-0.0)
        await writer.write(WriteBatch(run_id="run-1", nodes=[same[2]], stats=[one]))
    nodes = {n.step: n for n in await store.get_nodes("run-1")}
    assert [(n.state, n.attempt, n.error, n.result, n.finished_at) for n in (
        nodes[f"fan[{i}]"] for i in range(4)
    )] == [
        ("completed", 1, None, '"r"', later),
        ("discarded", 2, "boom", None, later),
        ("executing", 1, None, None, None),
        ("executing", 1, None, None, None),
    ]  # fmt: skip
    stored = sorted(await store.get_stats(["run-1"]), key=lambda s: s.id or 0)
    assert [(s.step, s.model, s.cost) for s in stored] == [
        *(("fan[0]", "mock/a", cost) for cost in (*costs, costs[0])),
        ("fan[2]", "mock/b", Decimal("0.0015")),
    ]
    assert stored[-1].latency_ms == 0.0 and stored[0].latency_ms == 12.5
    for i in range(2):
        assert await store.get_completions("run-1", f"fan[{i}]") == {0: ("h", "{}")}


async def test_node_updates_without_update_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.33 has no ``UPDATE ... FROM``: a commit's node updates go out as
    one executemany, in the same transaction as the rest."""
    monkeypatch.setattr(sql_write, "_UPDATE_FROM", False)
    store = await Store.open(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        ids = await a_run(store)
        update = (State.EXECUTING, 1, None, None, False, 0, T0, None, T0, ids["a"])
        done = (State.COMPLETED, 0, None, '"x"', True, 1, T0, T0, T0, ids["b"])
        async with store.writer() as writer:
            await writer.write(WriteBatch(run_id="run-1", nodes=[update, done]))
            bad = WriteBatch(
                run_id="run-1",
                nodes=[(State.DISCARDED, *update[1:])],
                completions=[CompletionRow("run-1", "a", 0, "h", "{}", T0)] * 2,
            )
            with pytest.raises(Exception):  # noqa: B017 - the same completion twice
                await writer.write(bad)
        nodes = {n.step: n for n in await store.get_nodes("run-1")}
        assert (nodes["a"].state, nodes["b"].state, nodes["b"].result) == (
            "executing",
            "completed",
            '"x"',
        )
    finally:
        await store.close()


# ── the lease ────────────────────────────────────────────────────────────────


async def test_one_lease_holder_at_a_time(store: RunStore) -> None:
    await a_run(store)
    assert await store.acquire_lease("run-1", "p1", 60)
    assert await store.acquire_lease("run-1", "p1", 60)  # ours already
    assert not await store.acquire_lease("run-1", "p2", 60)
    assert not await store.renew_lease("run-1", "p2", 60)
    assert await store.renew_lease("run-1", "p1", 60)
    assert await store.acquire_lease("run-1", "p2", 60, steal_from="p1")  # p1 died
    assert not await store.renew_lease("run-1", "p1", 60)
    assert await store.acquire_lease("run-1", "p2", -1)  # expired at once
    assert await store.acquire_lease("run-1", "p3", 60)
    run = await store.get_run("run-1")
    assert run is not None and run.lease_owner == "p3"
    await store.write(WriteBatch(run=RunUpdate("run-1", RunStatus.COMPLETED, release_lease=True)))
    assert await store.acquire_lease("run-1", "p4", 60)
    assert not await store.acquire_lease("no-such-run", "p1", 60)


async def test_a_lease_given_back_frees_the_run_and_leaves_the_row_as_it_was(
    store: RunStore,
) -> None:
    """``end_failed_start``: an execution that failed before it began gives its lease
    back, a status other than running and the rest of the row unchanged; only while it
    still holds it."""
    await a_run(store, status=RunStatus.CANCELLED, stopped_by="gone:1:x", executions=1)
    assert await store.acquire_lease("run-1", "p1", 600, count_execution=True)
    await store.end_failed_start("run-1", "p2")  # not its lease: nothing changes
    run = await store.get_run("run-1")
    assert run is not None and run.lease_owner == "p1" and run.lease_expires_at is not None
    await store.end_failed_start("run-1", "p1")
    run = await store.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == (None, None)
    assert (run.status, run.stopped_by, run.executions) == (RunStatus.CANCELLED, "gone:1:x", 2)
    assert await store.acquire_lease("run-1", "p3", 600)  # free at once, not in 10 minutes
    await store.end_failed_start("no-such-run", "p1")


async def test_a_failed_start_leaves_no_run_running_without_an_owner(store: RunStore) -> None:
    """A run left ``running`` by a start that failed is ended as an interrupt ends it:
    ``cancelled``, stopped by that owner, finished (a running row with no owner read as
    alive in every listing, and was resumed by the same live process)."""
    await a_run(store, status=RunStatus.RUNNING, executions=1)
    assert await store.acquire_lease("run-1", "p1", 600)
    await store.end_failed_start("run-1", "p1")
    run = await store.get_run("run-1")
    assert run is not None and (run.lease_owner, run.lease_expires_at) == (None, None)
    assert (run.status, run.stopped_by) == (RunStatus.CANCELLED, "p1")
    assert run.finished_at is not None and run.finished_at.tzinfo is not None


async def test_a_run_update_of_an_owner_that_lost_the_lease_writes_nothing(
    store: RunStore,
) -> None:
    """``WriteBatch.owner``: checked in the batch's own transaction; another owner holds the
    lease, and nothing of the batch, its run's end included, is committed (``RunLocked``)."""
    ids = await a_run(store)
    assert await store.acquire_lease("run-1", "p1", 60)
    assert await store.acquire_lease("run-1", "p2", 60, steal_from="p1")  # p1 stalled
    later = T0 + timedelta(seconds=5)
    update = (State.COMPLETED, 1, None, '{"v": 1}', True, 0, T0, later, later, ids["a"])
    end = RunUpdate("run-1", RunStatus.CANCELLED, (), later, release_lease=True)
    batch = WriteBatch(
        run_id="run-1", nodes=[update], run=end, stats=[call("run-1", "a")], owner="p1"
    )
    with pytest.raises(RunLocked, match="no longer held by p1"):
        await store.write(batch)
    run = await store.get_run("run-1")
    assert run is not None and run.lease_owner == "p2" and run.status is RunStatus.RUNNING
    assert await store.get_stats(["run-1"]) == []
    assert {n.step: n.state for n in await store.get_nodes("run-1")}["a"] is State.PENDING
    end = RunUpdate("run-1", RunStatus.COMPLETED, (), later, release_lease=True)
    await store.write(WriteBatch(run_id="run-1", run=end, owner="p2"))
    run = await store.get_run("run-1")
    assert run is not None and run.lease_owner is None and run.status is RunStatus.COMPLETED


# ── reading runs back ────────────────────────────────────────────────────────


async def test_listing_and_finding_runs(store: RunStore) -> None:
    for i, (run_id, workflow) in enumerate([("abc_1", "wf"), ("abc%2", "other"), ("abd", "wf")]):
        created = T0 + timedelta(minutes=i)
        await store.insert_run(run_row(run_id, workflow=workflow, created_at=created), [])
    assert [r.id for r in await store.list_runs()] == ["abd", "abc%2", "abc_1"]  # newest first
    assert [r.id for r in await store.list_runs(workflow="wf", limit=1)] == ["abd"]
    since = T0 + timedelta(seconds=30)
    assert [
        r.id for r in await store.list_runs(since=since, until=since + timedelta(minutes=1))
    ] == ["abc%2"]
    assert await store.list_runs(status="completed") == []
    assert await store.existing_run_ids(["abd", "zzz"]) == {"abd"}
    assert await store.run_ids_starting_with("abc") == ["abc%2", "abc_1"]
    assert await store.run_ids_starting_with("abc_") == ["abc_1"]  # _ and % are not patterns
    assert await store.run_ids_starting_with("abc%") == ["abc%2"]
    assert await store.run_ids_starting_with("ab", limit=1) == ["abc%2"]


async def test_the_newest_run_of_a_kind(store: RunStore) -> None:
    """``newest_of_kind``: the newest run of a workflow with these params and resume key,
    however many runs of other params came after it; its status and ``stopped_by``."""
    big = '{"text": "%s"}' % ("x" * 100_000)
    kind = {"params": big, "resume_key": "k1"}
    await store.insert_run(run_row("old", created_at=T0, **kind), [])
    stopped = {"status": RunStatus.CANCELLED, "stopped_by": "host:1:tag"}
    await store.insert_run(
        run_row("mine", created_at=T0 + timedelta(minutes=1), **kind, **stopped), []
    )
    others = [
        ("params", {"params": '{"text": "y"}', "resume_key": "k1"}),
        ("key", {"params": big, "resume_key": "k2"}),
        ("nokey", {"params": big}),
        ("workflow", {"workflow": "other", **kind}),
    ]
    for i, (run_id, changes) in enumerate(others * 6):
        created = T0 + timedelta(minutes=2 + i)
        await store.insert_run(run_row(f"{run_id}-{i}", created_at=created, **changes), [])
    newest = await store.newest_of_kind("wf", big, "k1")
    found = newest.of_kind
    assert found is not None
    assert (found.id, found.status, found.stopped_by) == ("mine", RunStatus.CANCELLED, "host:1:tag")
    # the newest of these params whatever its key, in the same statement (with its key)
    assert newest.of_params is not None and newest.of_params.id == "nokey-22"
    assert newest.of_params.resume_key is None
    third = await store.newest_of_kind("wf", big, "k3")
    assert third.of_kind is None and third.of_params == newest.of_params
    assert await store.newest_of_kind("nope", big, "k1") == NewestRuns(None, None)
    newer = run_row("newer", created_at=T0 + timedelta(hours=1), **kind)
    await store.insert_run(newer, [])
    newest = await store.newest_of_kind("wf", big, "k1")
    found = newest.of_kind
    assert found is not None and (found.id, found.status, found.stopped_by) == (
        "newer",
        RunStatus.RUNNING,
        None,
    )
    assert newest.of_params == RunStopped("newer", RunStatus.RUNNING, None, "k1")


async def test_the_ids_of_a_workflows_newest_runs(store: RunStore) -> None:
    """``recent_run_ids``: the typo guard's read, ids only, newest first, this workflow."""
    for i, workflow in enumerate(["wf", "other", "wf", "wf"]):
        created = T0 + timedelta(minutes=i)
        await store.insert_run(run_row(f"r{i}", workflow=workflow, created_at=created), [])
    assert await store.recent_run_ids("wf", 10) == ["r3", "r2", "r0"]
    assert await store.recent_run_ids("wf", 2) == ["r3", "r2"]
    assert await store.recent_run_ids("nope", 10) == []


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'walks.db'}"
    url: str = request.getfixturevalue("scratch_postgres")
    return url


@pytest.fixture
async def sql_store(sql_store_url: str) -> AsyncIterator[SqlStore]:
    opened = await Store.open(sql_store_url)
    assert isinstance(opened, SqlStore)
    if sql_store_url.startswith("postgresql"):
        async with opened.begin() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {', '.join(PRUNE_TABLES)} RESTART IDENTITY")
    try:
        yield opened
    finally:
        await opened.close()


async def _work(store: SqlStore, statement: str, parameters: Any) -> int:
    """How much of ``workflow_runs`` a statement reads, run again as the store sent it:
    Postgres, the rows its scans of the table read (EXPLAIN ANALYZE); SQLite, which
    tells no such count, its virtual machine's steps (comparable between statements)."""
    if store.url.startswith("sqlite"):
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        with sqlite3.connect(store.url.removeprefix("sqlite:///")) as conn:
            conn.set_progress_handler(step, 1)
            conn.execute(statement, parameters).fetchall()
        return steps
    async with store.engine.connect() as conn:
        explained = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
        plan = (await conn.exec_driver_sql(explained, parameters)).scalar()
    plans = [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]]
    read = 0
    while plans:
        node = plans.pop()
        if node.get("Relation Name") == "workflow_runs":
            rows = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            read += rows * node.get("Actual Loops", 0)
        plans.extend(node.get("Plans", []))
    return read


async def test_newest_of_kind_walks_the_runs_once_when_none_has_these_params(
    sql_store: SqlStore,
) -> None:
    """A workflow's first run of some params: its statement walked every run of the
    workflow twice (the newest of the params and key, then of the params, neither
    there); the second walk now only when the newest of the params has another key."""
    for i in range(300):
        row = run_row(f"run-{i}", created_at=T0 + timedelta(seconds=i), resume_key="k1")
        await sql_store.insert_run(row, [])
    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(sql_store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        found = await sql_store.newest_of_kind("wf", '{"topic": "new"}', "k1")
    finally:
        sa.event.remove(sql_store.engine.sync_engine, "before_cursor_execute", seen)
    assert found == NewestRuns(None, None)
    [(statement, parameters)] = sent
    one = "$1" if sql_store.url.startswith("postgresql") else "?"
    two = "$2" if one == "$1" else "?"
    one_walk = (  # the newest of the params alone: one walk of the index, no match
        f"SELECT id FROM workflow_runs WHERE workflow = {one} AND params = {two} "
        "ORDER BY created_at DESC LIMIT 1"
    )
    walked = await _work(sql_store, statement, parameters)
    once = await _work(sql_store, one_walk, ("wf", '{"topic": "new"}'))
    assert walked < 1.25 * once, (walked, once)


async def test_newest_of_kind_without_materialized_for_sqlite_before_3_35(
    sql_store: SqlStore,
) -> None:
    """``AS MATERIALIZED`` is a syntax error before SQLite 3.35 (Ubuntu 20.04: 3.31), so
    every wf.run() failed there: the statement for such a SQLite has none, finds the same
    rows and still walks the runs once when none has the params."""
    for i in range(300):
        key = "k1" if i % 3 else "k2"
        row = run_row(f"run-{i}", created_at=T0 + timedelta(seconds=i), resume_key=key)
        await sql_store.insert_run(row, [])
    old, new = _newest_of_kind(sqlite_materializes=False), _newest_of_kind(True)
    dialect = sql_store.engine.dialect
    text = str(old.compile(dialect=dialect))
    assert ("MATERIALIZED" in text) == (dialect.name == "postgresql"), text
    assert "MATERIALIZED" in str(new.compile(dialect=dialect))
    async with sql_store.connect() as conn:
        mine = '{"topic": "x"}'  # run_row's
        for params, key in [(mine, "k1"), (mine, "k2"), (mine, "k3"), ('{"topic": "y"}', "k1")]:
            values = {"n_workflow": "wf", "n_params": params, "n_key": key}
            rows = sorted((await conn.execute(old, values)).all())
            assert rows == sorted((await conn.execute(new, values)).all()), (params, key)
            assert bool(rows) == (params == mine), (params, key)
    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    values = {"n_workflow": "wf", "n_params": '{"topic": "new"}', "n_key": "k1"}
    sa.event.listen(sql_store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with sql_store.connect() as conn:
            assert (await conn.execute(old, values)).all() == []
    finally:
        sa.event.remove(sql_store.engine.sync_engine, "before_cursor_execute", seen)
    [(statement, parameters)] = sent
    one = "$1" if dialect.name == "postgresql" else "?"
    two = "$2" if one == "$1" else "?"
    one_walk = (
        f"SELECT id FROM workflow_runs WHERE workflow = {one} AND params = {two} "
        "ORDER BY created_at DESC LIMIT 1"
    )
    walked = await _work(sql_store, statement, parameters)
    once = await _work(sql_store, one_walk, ("wf", '{"topic": "new"}'))
    assert walked < 1.25 * once, (walked, once)


async def test_changes_since_marks(store: RunStore) -> None:
    ids = await a_run(store)
    assert await store.change_marks("run-1") == ChangeMarks(T0, 0, 0)
    await store.write(WriteBatch(stats=[call("run-1", "a")], logs=[log("run-1", "a")]))
    marks = await store.change_marks("run-1")
    assert marks.nodes_at == T0 and marks.last_stat_id > 0 and marks.last_log_id > 0
    changes = await store.changes_since("run-1", marks)
    assert changes.run is not None and changes.run.id == "run-1"
    assert len(changes.nodes) == 4  # updated at the mark itself: read again
    assert changes.calls == [] and changes.logs == []

    later = T0 + timedelta(seconds=1)
    update = (State.EXECUTING, 1, None, None, False, 0, later, None, later, ids["b"])
    batch = WriteBatch(
        run_id="run-1",
        nodes=[update],
        stats=[call("run-1", "b", created_at=later)],
        logs=[log("run-1", "b", "again", later)],
    )
    await store.write(batch)
    changes = await store.changes_since(
        "run-1", ChangeMarks(later, marks.last_stat_id, marks.last_log_id)
    )
    assert [n.step for n in changes.nodes] == ["b"]
    assert [c.step for c in changes.calls] == ["b"] and [g.message for g in changes.logs] == [
        "again"
    ]
    everything = await store.changes_since("run-1", ChangeMarks())
    assert len(everything.nodes) == 4 and len(everything.calls) == 2 and len(everything.logs) == 2
    assert (await store.change_marks("nope")) == ChangeMarks()


async def test_notifications_from_commits(store: RunStore, store_url: str) -> None:
    seen: list[str] = []
    async with store.notifications(seen.append) as listening:
        if store_url.startswith("sqlite"):
            assert listening is False  # SQLite watchers poll
            return
        assert listening is True
        await a_run(store)
        await store.write(WriteBatch(stats=[call("run-1", "a")]))
        for _ in range(100):
            if seen.count("run-1") >= 2:
                break
            await asyncio.sleep(0.01)
    assert seen.count("run-1") >= 2


# ── reports ──────────────────────────────────────────────────────────────────


async def report_runs(store: RunStore) -> None:
    await a_run(store, "r1", created_at=T0)
    await a_run(store, "r2", created_at=T0 + timedelta(hours=1), workflow="other")
    genai = CallPricing("mock/a", "genai-prices 0.0.1", "openai/gpt-4o", Decimal("0.0001"))
    override = CallPricing("mock/a", "baton_nb override", "openai/gpt-4o-2", None)
    stats = [
        call("r1", "a", cost=Decimal("0.001"), pricing=genai),
        call("r1", "a", cost=Decimal("0.002"), estimated=True, pricing=override),
        call("r1", "a", replayed=True),  # paid once already: counted apart
        call("r1", "a", model="mock/u", cost=None),  # no known price
        call("r1", "fan[mock/x]", model="mock/x"),
        call("r2", "b", cost=Decimal("0.5")),
    ]
    await store.write(WriteBatch(stats=stats))


async def test_stats_summed_per_run_step_model(store: RunStore) -> None:
    await report_runs(store)
    rows = await store.aggregate_stats()
    keys = [(r.run_id, r.step, r.model) for r in rows]
    assert keys == [
        ("r1", "a", "mock/a"),
        ("r1", "a", "mock/u"),
        ("r1", "fan[mock/x]", "mock/x"),
        ("r2", "b", "mock/a"),
    ]
    a = rows[0]
    assert (a.calls, a.replayed_calls, a.estimated_calls, a.unpriced_calls) == (2, 1, 1, 0)
    assert a.cost == Decimal("0.003") and a.usage == Usage(input_tokens=20, output_tokens=10)
    assert a.latency_ms == 25.0 and a.workflow == "wf" and a.parent is None
    assert a.fees == Decimal("0.0001")
    assert a.price_sources == ["baton_nb override", "genai-prices 0.0.1"]
    assert a.price_models == ["openai/gpt-4o", "openai/gpt-4o-2"]
    assert rows[1].cost is None and rows[1].unpriced_calls == 1
    assert (rows[1].fees, rows[1].price_sources) == (None, [])
    assert rows[2].parent == "fan"
    only = await store.aggregate_stats(RunFilter(workflow="other"))
    assert [(r.run_id, r.cost) for r in only] == [("r2", Decimal("0.5"))]
    assert await store.aggregate_stats(RunFilter(run_ids=["nope"])) == []


async def test_fanout_children_and_run_summaries(store: RunStore) -> None:
    await report_runs(store)
    children = await store.fanout_children(RunFilter(run_ids=["r1"]))
    assert [(c.run_id, c.parent, c.step, c.model, c.state) for c in children] == [
        ("r1", "fan", "fan[mock/x]", "mock/x", "pending")
    ]
    summaries = await store.run_summaries()
    assert [s.id for s in summaries] == ["r2", "r1"]
    r1 = summaries[1]
    assert (r1.steps, r1.steps_completed) == (3, 0)  # steps and children, not the group
    assert (r1.calls, r1.replayed_calls, r1.unpriced_calls) == (4, 1, 1)
    assert (r1.input_tokens, r1.output_tokens) == (40, 20)
    assert r1.cost == Decimal("0.0045")
    assert [s.id for s in await store.run_summaries(limit=1)] == ["r2"]
    assert await store.run_summaries(RunFilter(status="failed")) == []


# ── pruning ──────────────────────────────────────────────────────────────────


async def test_prune_takes_old_finished_unleased_runs_only(store: RunStore) -> None:
    old, now = T0, datetime.now(timezone.utc)
    for run_id in ("done", "leased", "running", "young"):
        await a_run(store, run_id, created_at=old if run_id != "young" else now)
        await store.write(WriteBatch(stats=[call(run_id, "a")], logs=[log(run_id, "a")]))
        await store.write(WriteBatch(completions=[CompletionRow(run_id, "a", 0, "h", "{}", old)]))
        await store.write(
            WriteBatch(attempts=[AttemptRow(run_id, "a", 1, "retryable", "E", old, old)])
        )
        await store.insert_provider_batch(
            provider_batch(run_id, f"k-{run_id}"), [batch_request(run_id, f"k-{run_id}", "c1")]
        )
    for run_id in ("done", "leased", "young"):
        await store.write(WriteBatch(run=RunUpdate(run_id, RunStatus.COMPLETED, (), old)))
    await store.write(WriteBatch(run=RunUpdate("young", RunStatus.COMPLETED, (), now)))
    assert await store.acquire_lease("leased", "someone", 600)
    cutoff = now - timedelta(days=1)
    expected = dict(zip(PRUNE_TABLES, (1, 4, 1, 1, 1, 1, 1, 1, 0), strict=True))
    assert await store.count_prunable(cutoff, None) == expected
    assert await store.prune_runs_batch(cutoff, 10) == expected
    assert await store.get_run("done") is None and await store.get_nodes("done") == []
    assert {r.id for r in await store.list_runs()} == {"leased", "running", "young"}
    assert await store.prune_runs_batch(cutoff, 10) == dict.fromkeys(PRUNE_TABLES, 0)

    assert (await store.count_prunable(None, now))["workflow_debug_logs"] == 3
    assert await store.prune_debug_logs_batch(now, 2) == 2
    assert await store.prune_debug_logs_batch(now, 2) == 1
    assert await store.get_debug_logs("leased") == []


def test_memory_stores_share_data_by_name() -> None:
    name = f"memory://{uuid.uuid4().hex}"
    one, two, other = MemoryStore(name), MemoryStore(name), MemoryStore()
    assert one.data is two.data and one.data is not other.data
    assert one.url == name


# ── provider batches (DESIGN §12) ───────────────────────────────────────────


def provider_batch(run_id: str, key: str, **changes: object) -> ProviderBatchRow:
    row = ProviderBatchRow(
        key=key,
        run_id=run_id,
        step="fan",
        provider="openai",
        model="openai/gpt-4o-mini",
        state=BatchState.PREPARED,
        request_count=2,
        size_bytes=321,
        created_at=T0,
        updated_at=T0,
        discount=Decimal("0.5"),
    )
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def batch_request(run_id: str, key: str, custom_id: str, step: str = "fan[0]") -> BatchRequestRow:
    return BatchRequestRow(
        run_id=run_id,
        batch_key=key,
        custom_id=custom_id,
        step=step,
        call_index=0,
        request_hash="h-" + custom_id,
        attempt=1,
        price_as=None,
    )


async def test_provider_batch_is_stored_before_submitting_then_updated(store: RunStore) -> None:
    await a_run(store, "r1")
    requests = [batch_request("r1", "k1", "c1"), batch_request("r1", "k1", "c2", "fan[1]")]
    await store.insert_provider_batch(provider_batch("r1", "k1"), requests)
    [stored] = await store.get_provider_batches("r1")
    assert (stored.key, stored.state, stored.remote_id, stored.discount) == (
        "k1",
        BatchState.PREPARED,
        None,
        Decimal("0.5"),
    )
    assert [(r.custom_id, r.step, r.state) for r in await store.get_batch_requests("r1")] == [
        ("c1", "fan[0]", BatchRequestState.PENDING),
        ("c2", "fan[1]", BatchRequestState.PENDING),
    ]
    stored.state, stored.remote_id, stored.submitted_at = BatchState.SUBMITTED, "batch_abc", T0
    stored.succeeded, stored.updated_at = 1, T0 + timedelta(seconds=5)
    await store.update_provider_batch(stored)
    [again] = await store.get_provider_batches("r1")
    assert (again.state, again.remote_id, again.succeeded, again.submitted_at) == (
        BatchState.SUBMITTED,
        "batch_abc",
        1,
        T0,
    )
    assert await store.get_provider_batches("other") == []


async def test_provider_batch_insert_is_all_or_nothing(store: RunStore) -> None:
    from baton_nb import StorageError

    await a_run(store, "r1")
    await store.insert_provider_batch(provider_batch("r1", "k1"), [batch_request("r1", "k1", "c1")])
    with pytest.raises(StorageError):  # the same key twice
        await store.insert_provider_batch(
            provider_batch("r1", "k1"), [batch_request("r1", "k1", "c9")]
        )
    assert [b.key for b in await store.get_provider_batches("r1")] == ["k1"]
    assert [r.custom_id for r in await store.get_batch_requests("r1")] == ["c1"]
    with pytest.raises(StorageError):  # no such batch
        await store.update_provider_batch(provider_batch("r1", "nope"))


async def test_a_missing_call_asked_again_moves_to_the_new_batch(store: RunStore) -> None:
    await a_run(store, "r1")
    await store.insert_provider_batch(provider_batch("r1", "k1"), [batch_request("r1", "k1", "c1")])
    again = batch_request("r1", "k2", "c1")
    again.tries = 2
    await store.insert_provider_batch(provider_batch("r1", "k2", request_count=1), [again])
    [request] = await store.get_batch_requests("r1")
    assert (request.batch_key, request.tries, request.state) == ("k2", 2, BatchRequestState.PENDING)


async def test_batch_results_are_stored_in_one_transaction(store: RunStore) -> None:
    await a_run(store, "r1")
    requests = [batch_request("r1", "k1", "c1"), batch_request("r1", "k1", "c2", "fan[1]")]
    batch = provider_batch("r1", "k1", state=BatchState.SUBMITTED, remote_id="b1")
    await store.insert_provider_batch(batch, requests)
    # an answer stored already for c1's call (e.g. by a step that called directly) is kept
    kept = CompletionRow("r1", "fan[0]", 0, "h-c1", '{"kept": 1}', T0)
    await store.write(WriteBatch(completions=[kept]))
    requests[0].state = BatchRequestState.ANSWERED
    requests[1].state, requests[1].error = BatchRequestState.ERRORED, "400: bad request"
    batch.state, batch.cost, batch.standard_cost = BatchState.DONE, Decimal("1.5"), Decimal("3")
    paid = CallRecord(
        run_id="r1",
        step="fan[0]",
        model="openai/gpt-4o-mini",
        provider="openai",
        attempt=1,
        call_index=0,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=Decimal("1.5"),
        latency_ms=1000.0,
        replayed=False,
        estimated=False,
        created_at=T0,
        pricing=CallPricing("openai/gpt-4o-mini", "test", "openai/gpt-4o-mini", None, batch=True),
    )
    answers = [
        CompletionRow("r1", "fan[0]", 0, "h-c1", '{"new": 1}', T0),
        CompletionRow("r1", "fan[1]", 0, "h-other", '{"new": 2}', T0),
    ]
    await store.store_batch_results(batch, requests, answers, [paid])
    [stored] = await store.get_provider_batches("r1")
    assert (stored.state, stored.cost, stored.saved) == (
        BatchState.DONE,
        Decimal("1.5"),
        Decimal("1.5"),
    )
    states = {r.custom_id: (r.state, r.error) for r in await store.get_batch_requests("r1")}
    assert states == {
        "c1": (BatchRequestState.ANSWERED, None),
        "c2": (BatchRequestState.ERRORED, "400: bad request"),
    }
    assert await store.get_completions("r1", "fan[0]") == {0: ("h-c1", '{"kept": 1}')}
    assert await store.get_completions("r1", "fan[1]") == {0: ("h-other", '{"new": 2}')}
    [call_row] = await store.get_stats(["r1"])
    assert call_row.pricing is not None and call_row.pricing.batch
    assert call_row.repriced().pricing.batch  # type: ignore[union-attr]


# ── budgets and the response cache (DESIGN §11, migration 11) ─────────────────


async def test_budgets_reserve_all_or_none_and_settle(store: RunStore) -> None:
    from baton_nb.store import RUN_SCOPE

    rows = await store.open_budgets(
        "b1", {RUN_SCOPE: Decimal(1), "s": Decimal("0.5")}, {RUN_SCOPE: Decimal("0.1")}
    )
    assert [(r.scope, r.cap, r.spent, r.reserved) for r in rows] == [
        (RUN_SCOPE, Decimal(1), Decimal("0.1"), Decimal(0)),
        ("s", Decimal("0.5"), Decimal(0), Decimal(0)),
    ]
    both = [RUN_SCOPE, "s"]
    assert await store.reserve("b1", both, Decimal("0.3")) is None
    assert await store.reserve("b1", both, Decimal("0.3")) == "s"  # the step's cap
    assert await store.reserve("b1", [RUN_SCOPE], Decimal("0.6")) is None  # 0.1 + 0.3 + 0.6
    assert await store.reserve("b1", [RUN_SCOPE], Decimal("1e-12")) == RUN_SCOPE
    await store.settle("b1", both, Decimal("0.3"), Decimal("0.25"))
    await store.settle("b1", [RUN_SCOPE], Decimal("0.6"), Decimal(0))
    got = {r.scope: r for r in await store.get_budgets("b1")}
    assert (got[RUN_SCOPE].spent, got[RUN_SCOPE].reserved) == (Decimal("0.35"), Decimal(0))
    assert (got["s"].spent, got["s"].reserved, got["s"].refused) == (Decimal("0.25"), 0, 1)
    assert got[RUN_SCOPE].refused == 1
    # a resume: the cap kept (None) or raised, spent recomputed, reservations dropped
    await store.reserve("b1", [RUN_SCOPE], Decimal("0.2"))
    rows = await store.open_budgets(
        "b1", {RUN_SCOPE: None, "s": Decimal(2)}, {RUN_SCOPE: Decimal("0.35")}
    )
    assert [(r.cap, r.spent, r.reserved) for r in rows] == [
        (Decimal(1), Decimal("0.35"), Decimal(0)),
        (Decimal(2), Decimal(0), Decimal(0)),
    ]
    assert await store.get_budgets("other") == []


async def test_no_reservation_once_a_budget_stopped_the_run(store: RunStore) -> None:
    # Workers: a call refused in one process stops the run for every process; the calls
    # sent before land and settle, no new one is reserved (a resume opens the rows again).
    from baton_nb.store import RUN_SCOPE

    await store.open_budgets("b3", {RUN_SCOPE: Decimal(1), "s": Decimal(1)}, {})
    assert await store.reserve("b3", [RUN_SCOPE], Decimal("0.1")) is None
    await store.budget_reached("b3", "s", "budget reached: the budget of step 's'")
    assert await store.reserve("b3", [RUN_SCOPE], Decimal("0.1")) == RUN_SCOPE
    await store.settle("b3", [RUN_SCOPE], Decimal("0.1"), Decimal("0.05"))
    got = {r.scope: r for r in await store.get_budgets("b3")}
    assert (got[RUN_SCOPE].spent, got[RUN_SCOPE].reserved) == (Decimal("0.05"), 0)
    await store.open_budgets("b3", {RUN_SCOPE: None}, {RUN_SCOPE: Decimal("0.05")})
    assert await store.reserve("b3", [RUN_SCOPE, "s"], Decimal("0.1")) is None


async def test_concurrent_reservations_never_pass_the_cap(store: RunStore) -> None:
    from baton_nb.store import RUN_SCOPE

    await store.open_budgets("b2", {RUN_SCOPE: Decimal(1)}, {})
    results = await asyncio.gather(
        *(store.reserve("b2", [RUN_SCOPE], Decimal("0.03")) for _ in range(50))
    )
    assert results.count(None) == 33
    [row] = await store.get_budgets("b2")
    assert row.reserved == Decimal("0.99") and row.refused == 17


async def test_response_cache_rows(store: RunStore) -> None:
    from baton_nb.store import CacheEntry

    await store.cache_clear()
    old = CacheEntry("k-old", "m", '{"r":1}', '{"a":1}', Decimal("0.5"), T0)
    new = CacheEntry("k-new", "m", '{"r":2}', '{"a":2}', None, T0 + timedelta(days=10))
    await store.cache_put(old)
    await store.cache_put(new)
    await store.cache_put(CacheEntry("k-old", "m", "{}", '{"a":"other"}', Decimal(9), T0))
    assert await store.cache_get("missing") is None
    hit = await store.cache_get("k-old")
    assert hit is not None and (hit.response, hit.cost, hit.hits) == ('{"a":1}', Decimal("0.5"), 1)
    await store.cache_get("k-old")
    stats = await store.cache_stats()
    assert (stats.entries, stats.hits, stats.saved) == (2, 2, Decimal(1))
    assert stats.size_bytes == len('{"r":1}{"a":1}{"r":2}{"a":2}')
    assert (stats.oldest, stats.newest) == (T0, T0 + timedelta(days=10))
    cutoff = T0 + timedelta(days=1)
    assert await store.count_cache(cutoff) == 1
    assert await store.cache_clear(cutoff) == 1
    assert await store.cache_get("k-old") is None and await store.count_cache() == 1
    assert await store.cache_clear() == 1


async def test_one_in_memory_sqlite_store_used_by_two_tasks_loses_no_commit() -> None:
    """``sqlite:///:memory:`` is one connection shared by every checkout: a batch written
    by one task (``write``) must not roll back another task's transaction (``insert_run``)
    when its connection goes back to the pool after the store's lock is released."""
    store = await Store.open("sqlite:///:memory:")
    try:
        now = datetime.now(timezone.utc)
        await store.insert_run(
            RunRow("base", "wf", "{}", RunStatus.RUNNING, now),
            [NodeRow("base", "a", NodeKind.STEP, "w", [], 0, 1, now)],
        )
        inserted: list[str] = []

        async def insert() -> None:
            for i in range(100):
                run = RunRow(f"r{i}", "wf", "{}", RunStatus.RUNNING, now)
                await store.insert_run(
                    run, [NodeRow(f"r{i}", "s", NodeKind.STEP, "w", [], 0, 1, now)]
                )
                inserted.append(f"r{i}")

        async def write() -> None:
            update = RunUpdate("base", RunStatus.RUNNING, (), None)
            for _ in range(500):
                await store.write(WriteBatch(run_id="base", run=update))
                await asyncio.sleep(0)

        await asyncio.gather(insert(), write())
        missing = [run_id for run_id in inserted if await store.get_run(run_id) is None]
        assert len(inserted) == 100 and missing == []
    finally:
        await store.close()
