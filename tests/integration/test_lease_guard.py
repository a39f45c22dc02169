"""The lease guard in every commit of a run held under a lease (``WriteBatch.owner``,
docs/workers.md "Failures"): a commit of an owner that lost the run's lease writes
nothing (``RunLocked``), on each store and each write path, checked in the commit's own
transaction and serialised against a takeover (Postgres: FOR SHARE); the workers' queue
changes and ``requeue_run`` of a coordinator that lost its run change nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from baton_nb._errors import RunLocked
from baton_nb._states import NodeKind, RunStatus, State
from baton_nb.store import (
    AttemptRow,
    CompletionRow,
    NewTask,
    RunRow,
    RunStore,
    RunUpdate,
    SqlStore,
    SqlWorkers,
    StepWorkerRow,
    Store,
    WriteBatch,
    open_worker_store,
)
from baton_nb.store._sql_base import NOTIFY_CHANNEL, driver_connection
from baton_nb.store._sql_write import guard_lease
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres
from tests.integration.test_store import (
    T0,
    a_run,
    batch_request,
    call,
    log,
    node_row,
    provider_batch,
)

pytestmark = pytest.mark.anyio


def _postgres() -> str:
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'guard.db'}"
    elif request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = _postgres()
    async with await Store.open(url) as opened:
        yield opened


@pytest.fixture
def run_id() -> str:
    return f"guard-{uuid.uuid4().hex[:12]}"


def _dialect(store: RunStore) -> str:
    return store.dialect if isinstance(store, SqlStore) else "memory"


def _batch(store: RunStore, run_id: str, ids: dict[str, int], path: str, owner: str) -> WriteBatch:
    """A batch of the rows a coordinator commits; ``one-statement``: only those that the
    dialect's one-round-trip path takes (SQLite: no ``ran_on``)."""
    later = T0 + timedelta(seconds=3)
    update = (State.COMPLETED, 1, None, '{"v": 1}', True, 0, T0, later, later, ids["a"])
    batch = WriteBatch(
        run_id=run_id,
        nodes=[update],
        completions=[CompletionRow(run_id, "a", 0, "h1", '{"text": "hi"}', later)],
        stats=[call(run_id, "a")],
        owner=owner,
    )
    if path != "one-statement" or _dialect(store) == "postgresql":
        batch.ran_on = [StepWorkerRow(run_id, "a", 1, "w1", later)]
    if path != "one-statement":
        batch.logs = [log(run_id, "a")]
        batch.attempts = [AttemptRow(run_id, "a", 1, "completed", None, T0, later)]
    return batch


async def _nothing_written(store: RunStore, run_id: str) -> None:
    nodes = {n.step: n for n in await store.get_nodes(run_id)}
    assert nodes["a"].state is State.PENDING and nodes["a"].result is None
    assert await store.get_completions(run_id, "a") == {}
    assert await store.get_stats([run_id]) == []
    assert await store.get_ran_on(run_id) == {}
    assert await store.get_attempts(run_id) == []
    assert await store.get_debug_logs(run_id) == []


async def _write(store: RunStore, batch: WriteBatch, path: str) -> None:
    """``batch`` through ``path``; on SQL stores, first that the path is the one taken."""
    if path == "write":
        await store.write(batch)
        return
    async with store.writer() as writer:
        if isinstance(store, SqlStore):
            conn = writer.write.args[0]  # type: ignore[attr-defined]
            fits = store._driver_commit_fits(conn, batch) or store._pg_statement_fits(conn, batch)
            assert fits is (path == "one-statement")
        await writer.write(batch)


@pytest.mark.parametrize("path", ["one-statement", "transaction", "write"])
async def test_a_batch_of_an_owner_that_lost_the_lease_writes_nothing(
    store: RunStore, run_id: str, path: str
) -> None:
    """A coordinator (p1) stalled past its lease, p2 took the run over: p1's next commit,
    through any path, writes none of its rows; p2's is written."""
    ids = await a_run(store, run_id)
    assert await store.acquire_lease(run_id, "p1", 60)
    assert await store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    with pytest.raises(RunLocked, match="no longer held by p1"):
        await _write(store, _batch(store, run_id, ids, path, "p1"), path)
    await _nothing_written(store, run_id)
    run = await store.get_run(run_id)
    assert run is not None and run.lease_owner == "p2"
    await _write(store, _batch(store, run_id, ids, path, "p2"), path)
    nodes = {n.step: n for n in await store.get_nodes(run_id)}
    assert nodes["a"].state is State.COMPLETED
    assert len(await store.get_stats([run_id])) == 1


async def test_a_batch_of_a_lease_given_back_writes_nothing(store: RunStore, run_id: str) -> None:
    """No owner at all (the run ended, or was handed over and requeued): refused too."""
    ids = await a_run(store, run_id)
    with pytest.raises(RunLocked):
        await _write(store, _batch(store, run_id, ids, "one-statement", "p1"), "one-statement")
    await _nothing_written(store, run_id)


async def test_the_sqlite_driver_commit_checks_the_lease_first(tmp_path: Path, run_id: str) -> None:
    """On aiosqlite's thread, the transaction begins IMMEDIATE (the write lock taken) and
    the guard reads the run's row first: refused, no row of the batch was even sent, and
    the connection goes on (rolled back, no transaction left open)."""
    async with await Store.open(f"sqlite:///{tmp_path / 'trace.db'}") as store:
        ids = await a_run(store, run_id)
        assert await store.acquire_lease(run_id, "p2", 60)
        traced: list[str] = []
        async with store.writer() as writer:
            conn = writer.write.args[0]  # type: ignore[attr-defined]
            driver = await driver_connection(conn)
            await driver._execute(driver._conn.set_trace_callback, traced.append)
            with pytest.raises(RunLocked):
                await writer.write(_batch(store, run_id, ids, "one-statement", "p1"))
            writes = [sql for sql in traced if sql.split()[0] in ("INSERT", "UPDATE", "WITH")]
            assert writes == []
            assert traced[0] == "BEGIN IMMEDIATE", traced
            assert traced[1].startswith("SELECT 1 FROM workflow_runs WHERE id = "), traced
            assert "ROLLBACK" in traced
            await writer.write(_batch(store, run_id, ids, "one-statement", "p2"))
        assert len(await store.get_stats([run_id])) == 1


async def test_the_run_end_of_an_owner_that_lost_the_lease_is_not_stored(
    store: RunStore, run_id: str
) -> None:
    """A run's end (its status, the lease given back) with the last node updates, as an
    execution's last commit writes it (``store.write``; on SQLite in one round trip):
    refused whole for an owner that lost the lease, stored for the one holding it."""
    ids = await a_run(store, run_id)
    assert await store.acquire_lease(run_id, "p1", 60)
    assert await store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    later = T0 + timedelta(seconds=3)
    update = (State.COMPLETED, 1, None, '{"v": 1}', True, 0, T0, later, later, ids["a"])
    end = RunUpdate(run_id, RunStatus.COMPLETED, (), later, 2, True)
    with pytest.raises(RunLocked):
        await store.write(WriteBatch(run_id=run_id, nodes=[update], run=end, owner="p1"))
    run = await store.get_run(run_id)
    assert run is not None and (run.status, run.lease_owner) == ("running", "p2")
    await _nothing_written(store, run_id)
    await store.write(WriteBatch(run_id=run_id, nodes=[update], run=end, owner="p2"))
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.status, run.finished_at, run.executions, run.lease_owner) == (
        "completed",
        later,
        2,
        None,
    )
    assert {n.step: n for n in await store.get_nodes(run_id)}["a"].state is State.COMPLETED


async def test_map_children_of_an_owner_that_lost_the_lease_are_not_stored(
    store: RunStore, run_id: str
) -> None:
    """A map's children and item count, stored on a connection of their own: refused too."""
    ids = await a_run(store, run_id)
    assert await store.acquire_lease(run_id, "p1", 60)
    assert await store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    rows = [node_row(run_id, f"fan[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(3)]
    with pytest.raises(RunLocked):
        await store.insert_nodes(rows, owner="p1")
    with pytest.raises(RunLocked):
        await store.set_map_items(ids["fan"], 3, owner="p1")
    with pytest.raises(RunLocked):  # the count with the first chunk (``map_items``)
        await store.insert_nodes(rows, owner="p1", map_items=(ids["fan"], 3))
    nodes = {n.step: n for n in await store.get_nodes(run_id)}
    assert len(nodes) == 4 and nodes["fan"].map_items is None
    assert set(await store.insert_nodes(rows[:1], owner="p2", map_items=(ids["fan"], 3))) == {
        "fan[0]"
    }
    assert {n.step: n for n in await store.get_nodes(run_id)}["fan"].map_items == 3
    assert set(await store.insert_nodes(rows[1:], owner="p2")) == {"fan[1]", "fan[2]"}
    await store.set_map_items(ids["fan"], 4, owner="p2")
    assert {n.step: n for n in await store.get_nodes(run_id)}["fan"].map_items == 4


async def test_provider_batch_rows_of_an_owner_that_lost_the_lease_are_not_stored(
    store: RunStore, run_id: str
) -> None:
    """A provider batch stored before it is submitted, its updates, its answers and their
    stats: refused too (a late coordinator neither submits paid work nor stores stats of
    answers the new one stores as well)."""
    await a_run(store, run_id)
    assert await store.acquire_lease(run_id, "p1", 60)
    requests = [batch_request(run_id, "k1", "c1")]
    await store.insert_provider_batch(provider_batch(run_id, "k1"), requests, owner="p1")
    assert await store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    with pytest.raises(RunLocked):
        await store.insert_provider_batch(
            provider_batch(run_id, "k2"), [batch_request(run_id, "k2", "c2")], owner="p1"
        )
    [stored] = await store.get_provider_batches(run_id)
    stored.remote_id = "b1"
    with pytest.raises(RunLocked):
        await store.update_provider_batch(stored, owner="p1")
    answer = CompletionRow(run_id, "fan[0]", 0, "h-c1", "{}", T0)
    with pytest.raises(RunLocked):
        await store.store_batch_results(
            stored, requests, [answer], [call(run_id, "fan[0]")], owner="p1"
        )
    [again] = await store.get_provider_batches(run_id)
    assert again.key == "k1" and again.remote_id is None
    assert await store.get_stats([run_id]) == []
    assert await store.get_completions(run_id, "fan[0]") == {}
    await store.store_batch_results(
        stored, requests, [answer], [call(run_id, "fan[0]")], owner="p2"
    )
    assert len(await store.get_stats([run_id])) == 1


# ── Postgres: a takeover and a commit, serialised ───────────────────────────


@pytest.fixture
async def pg_store() -> AsyncIterator[SqlStore]:
    async with await Store.open(_postgres()) as opened:
        assert isinstance(opened, SqlStore)
        yield opened


async def _waiting_on_a_lock(admin: asyncpg.Connection, pid: int) -> None:
    """Return once backend ``pid`` waits for a row lock."""
    with anyio.fail_after(30):
        while True:
            event = await admin.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            if event == "Lock":
                return
            await anyio.sleep(0.01)


async def _backend(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_takeover_waits_for_a_commit_under_the_lease(
    pg_store: SqlStore, run_id: str
) -> None:
    """A commit under the lease holds the run's row FOR SHARE until it ends: a takeover
    (another worker taking the lapsed lease: ``acquire_lease``'s UPDATE) waits for it, and
    takes the run after it."""
    ids = await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", -1)  # lapsed at once
    held, taker, admin = [await asyncpg.connect(POSTGRES_URL) for _ in range(3)]
    taken: list[str] = []
    try:
        tx = held.transaction()
        await tx.start()  # p1's commit, under way: its guard taken (``guard_lease``)
        assert await held.fetchval(_GUARD, run_id, "p1") == 1
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                taken.append(await taker.execute(_TAKEOVER, run_id, "p2"))

            pid = await _backend(taker)
            tg.start_soon(take)
            await _waiting_on_a_lock(admin, pid)
            assert taken == []  # waits for p1's commit
            await held.execute(
                "UPDATE workflow_nodes SET state = 'completed' WHERE id = $1", ids["a"]
            )
            await tx.commit()
    finally:
        for conn in (held, taker, admin):
            await conn.close()
    assert taken == ["UPDATE 1"]
    nodes = {n.step: n for n in await pg_store.get_nodes(run_id)}
    assert nodes["a"].state is State.COMPLETED  # p1's commit, before the takeover
    run = await pg_store.get_run(run_id)
    assert run is not None and run.lease_owner == "p2"


# The guard (``_sql_write._GUARD_PG``) and a takeover (``acquire_lease``: a lapsed lease).
_GUARD = "SELECT 1 FROM workflow_runs WHERE id = $1 AND lease_owner = $2 FOR SHARE"
_TAKEOVER = (
    "UPDATE workflow_runs SET lease_owner = $2, lease_expires_at = now() + interval '60 s' "
    "WHERE id = $1 AND (lease_owner IS NULL OR lease_expires_at < now())"
)


@pytest.mark.parametrize("path", ["one-statement", "transaction"])
async def test_a_commit_waiting_for_a_takeover_sees_it_and_writes_nothing(
    pg_store: SqlStore, run_id: str, path: str
) -> None:
    """The reverse order: a takeover under way (its UPDATE of the run's row not committed)
    makes p1's commit wait; once the takeover commits, the commit finds the row changed
    (READ COMMITTED re-checks it) and writes nothing: ``RunLocked``."""
    ids = await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", 60)
    taker = await asyncpg.connect(POSTGRES_URL)
    admin = await asyncpg.connect(POSTGRES_URL)
    outcome: list[BaseException | None] = []
    try:
        tx = taker.transaction()
        await tx.start()
        await taker.execute(
            "UPDATE workflow_runs SET lease_owner = 'p2' WHERE id = $1 AND lease_owner = 'p1'",
            run_id,
        )
        async with pg_store.writer() as writer, anyio.create_task_group() as tg:
            conn = writer.write.args[0]  # type: ignore[attr-defined]
            pid = await _backend(await driver_connection(conn))

            async def write_on() -> None:
                batch = _batch(pg_store, run_id, ids, path, "p1")
                assert pg_store._pg_statement_fits(conn, batch) is (path == "one-statement")
                try:
                    await writer.write(batch)
                    outcome.append(None)
                except RunLocked as exc:
                    outcome.append(exc)

            tg.start_soon(write_on)
            await _waiting_on_a_lock(admin, pid)
            assert outcome == []  # waits for the takeover
            await tx.commit()
    finally:
        await taker.close()
        await admin.close()
    assert len(outcome) == 1 and isinstance(outcome[0], RunLocked)
    await _nothing_written(pg_store, run_id)


# ── the workers' queue and the hand-over ────────────────────────────────────


@pytest.fixture
async def queue() -> AsyncIterator[SqlWorkers]:
    workers = await open_worker_store(_postgres())
    try:
        yield workers
    finally:
        await workers.close()


async def test_requeue_run_by_a_coordinator_that_lost_the_run_changes_nothing(
    pg_store: SqlStore, queue: SqlWorkers, run_id: str
) -> None:
    await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", 60)
    assert await pg_store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    before = await pg_store.get_run(run_id)
    assert not await queue.requeue_run(run_id, "p1")
    after = await pg_store.get_run(run_id)
    assert after is not None and after == before and after.lease_owner == "p2"
    assert await queue.requeue_run(run_id, "p2")  # the holder hands it over
    freed = await pg_store.get_run(run_id)
    assert freed is not None and freed.lease_owner is None
    assert freed.status is RunStatus.RUNNING


async def test_queue_changes_of_a_coordinator_that_lost_the_run_change_nothing(
    pg_store: SqlStore, queue: SqlWorkers, run_id: str
) -> None:
    """Queued attempts, outcomes taken, tasks dropped: only by the run's lease holder."""
    await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", 60)
    tasks = [NewTask(run_id, run_id, f"s[{i}]", "s", 1, str(i), None, replay=False) for i in (0, 1)]
    ids = await queue.enqueue(tasks[:1], owner="p1")
    assert await pg_store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    with pytest.raises(RunLocked):
        await queue.enqueue(tasks[1:], owner="p1")
    [(task_id, state, _, _)] = (await queue.run_tasks(run_id)).values()
    assert task_id == ids[run_id, "s[0]"] and state == "queued"
    [claimed] = await queue.claim("w1", [run_id], False, 1, 60)
    assert await queue.finish("w1", claimed, '{"v": 1}')
    with pytest.raises(RunLocked):
        await queue.take_done(run_id, owner="p1")
    with pytest.raises(RunLocked):
        await queue.drop_tasks([task_id], run_id=run_id, owner="p1")
    assert list(await queue.run_tasks(run_id)) == ["s[0]"]  # still there, done
    [done] = await queue.take_done(run_id, owner="p2")
    assert done.id == task_id
    assert await queue.take_done(run_id, owner="p2") == []


async def test_tasks_left_queued_when_the_run_ended_are_dropped_by_its_coordinator(
    pg_store: SqlStore, queue: SqlWorkers, run_id: str
) -> None:
    """The run's end frees its lease: a drop of the coordinator's racing it (a cancel, a
    quorum met) still goes through, or the tasks left queued would be claimed and run
    (paid calls) for a run nobody follows; while another coordinator holds the run its
    tasks are left to it."""
    await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", 60)
    tasks = [NewTask(run_id, run_id, f"s[{i}]", "s", 1, str(i), None, replay=False) for i in (0, 1)]
    ids = await queue.enqueue(tasks, owner="p1")
    assert await pg_store.acquire_lease(run_id, "p2", 60, steal_from="p1")
    assert await queue.drop_run_tasks(run_id, "p1") == 0  # p2's now: it adopts them
    assert await pg_store.acquire_lease(run_id, "p1", 60, steal_from="p2")
    end = RunUpdate(run_id, RunStatus.CANCELLED, (), T0, None, True)
    await pg_store.write(WriteBatch(run_id=run_id, run=end, owner="p1"))
    ended = await pg_store.get_run(run_id)
    assert ended is not None and ended.lease_owner is None
    await queue.drop_tasks([ids[run_id, "s[0]"]], run_id=run_id, owner="p1")  # no RunLocked
    assert list(await queue.run_tasks(run_id)) == ["s[1]"]
    assert await queue.drop_run_tasks(run_id, "p1") == 1
    assert await queue.claim("w1", [run_id], False, 10, 60) == []


async def test_the_guard_of_a_transaction_holds_its_row_lock_until_the_end(
    pg_store: SqlStore, run_id: str
) -> None:
    """``guard_lease`` in a transaction (``store.begin()``: a provider batch's rows, a map's
    item count, a commit holding logs) locks the run's row in THAT transaction: a takeover
    waits until the block ends. (It ran on the driver before SQLAlchemy's BEGIN, in a
    transaction of its own whose lock was gone before the writes.)"""
    await a_run(pg_store, run_id)
    assert await pg_store.acquire_lease(run_id, "p1", 60)
    taker = await asyncpg.connect(POSTGRES_URL)
    try:
        await taker.execute("SET lock_timeout = '200ms'")
        async with pg_store.begin() as conn:
            await guard_lease(conn, run_id, "p1")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await taker.execute(
                    "UPDATE workflow_runs SET lease_owner = 'p2' WHERE id = $1", run_id
                )
        assert (
            await taker.execute("UPDATE workflow_runs SET lease_owner = 'p2' WHERE id = $1", run_id)
            == "UPDATE 1"
        )
    finally:
        await taker.close()


async def test_a_run_s_rows_map_chunk_and_end_are_one_statement_each_on_postgres(
    pg_store: SqlStore, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's rows with its nodes, a map's chunk under the lease with the group's item
    count, and the run's end under the lease: one statement each (BEGIN, the guard, each
    table, NOTIFY and COMMIT were a round trip each), and each notifies watchers."""
    from asyncpg.protocol import Protocol

    await a_run(pg_store, f"{run_id}-warm")  # the connection's types and statements
    notified: list[str] = []
    listener = await asyncpg.connect(POSTGRES_URL)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: notified.append(args[-1]))
    sent: list[str] = []
    for name in ("bind_execute", "bind_execute_many", "query"):  # not prepare: cached

        def counting(original: Any, name: str = name) -> Any:
            async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
                sent.append(name)
                return await original(self, *args, **kwargs)

            return method

        monkeypatch.setattr(Protocol, name, counting(getattr(Protocol, name)))
    try:
        ids = await a_run(pg_store, run_id)
        assert len(sent) == 1, sent
        assert await pg_store.acquire_lease(run_id, "p1", 60)
        sent.clear()
        rows = [node_row(run_id, f"fan[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(3)]
        found = await pg_store.insert_nodes(rows, owner="p1", map_items=(ids["fan"], 3))
        assert set(found) == {"fan[0]", "fan[1]", "fan[2]"} and len(sent) == 1, sent
        sent.clear()
        end = RunUpdate(run_id, RunStatus.COMPLETED, (), T0, 1, True)
        await pg_store.write(WriteBatch(run_id=run_id, run=end, owner="p1"))
        assert len(sent) == 1, sent
        with anyio.fail_after(10):
            while notified.count(run_id) < 3:
                await anyio.sleep(0.01)
    finally:
        monkeypatch.undo()
        await listener.close()
    nodes = {n.step: n for n in await pg_store.get_nodes(run_id)}
    assert nodes["fan"].map_items == 3 and found["fan[2]"] == nodes["fan[2]"].id
    run = await pg_store.get_run(run_id)
    assert run is not None and (run.status, run.lease_owner) == ("completed", None)


async def _a_run_with_a_map_chunk_and_its_end(store: RunStore, run_id: str) -> RunRow | None:
    ids = await a_run(store, run_id)
    assert await store.acquire_lease(run_id, "p1", 60)
    rows = [node_row(run_id, f"fan[{i}]", kind=NodeKind.CHILD, parent="fan") for i in range(2)]
    await store.insert_nodes(rows, owner="p1", map_items=(ids["fan"], 2))
    later = T0 + timedelta(seconds=3)
    update = (State.COMPLETED, 1, None, '{"v": 1}', True, 0, T0, later, later, ids["a"])
    end = RunUpdate(run_id, RunStatus.COMPLETED, (), later, 1, True)
    await store.write(WriteBatch(run_id=run_id, nodes=[update], run=end, owner="p1"))
    return await store.get_run(run_id)


async def test_built_in_types_are_looked_up_once_per_process_on_postgres(
    run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg looks up the array types it has no codec for (``int[]``, ``bool[]``,
    ``timestamptz[]``: the store's statements) on each new connection; the store's
    connections remember them for the process: a store opened later (a new engine, new
    connections) stores a run, its map's chunk and its end without looking them up."""
    async with await Store.open(_postgres()) as first:
        await _a_run_with_a_map_chunk_and_its_end(first, f"{run_id}-first")
    looked_up: list[frozenset[int]] = []
    original = asyncpg.Connection._introspect_types

    async def counting(self: Any, typeoids: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(frozenset(typeoids))
        return await original(self, typeoids, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", counting)
    async with await Store.open(_postgres()) as store:
        run = await _a_run_with_a_map_chunk_and_its_end(store, run_id)
    assert run is not None and run.status == "completed"
    assert looked_up == []
