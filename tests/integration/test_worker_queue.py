"""The workers' task queue on Postgres (store/_sql_workers.py): claims with FOR UPDATE
SKIP LOCKED never overlap, a lapsed lease is taken over with a new fencing token, a
commit under a stale token is refused, a released task keeps its attempt."""

from __future__ import annotations

import anyio
import pytest

import baton_nb as bn
from baton_nb import _jsonutil
from baton_nb.store import (
    DONE_CHANNEL,
    TASKS_CHANNEL,
    NewTask,
    SqlStore,
    SqlWorkers,
    _sql_workers,
    open_worker_store,
)
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture
async def queue(unique: str) -> SqlWorkers:
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    store = await open_worker_store(POSTGRES_URL)
    try:
        yield store  # type: ignore[misc]
    finally:
        await store.close()


def _tasks(run_id: str, workflow: str, n: int, attempt: int = 1) -> list[NewTask]:
    return [
        NewTask(run_id, workflow, f"s[{i}]", "s", attempt, str(i), None, replay=False)
        for i in range(n)
    ]


async def test_concurrent_claims_never_overlap(queue: SqlWorkers, unique: str) -> None:
    wf = f"q-{unique}"
    ids = await queue.enqueue(_tasks(f"r-{unique}", wf, 200))
    assert len(ids) == 200
    claimed: dict[str, list[int]] = {}

    async def claimer(name: str) -> None:
        got = claimed.setdefault(name, [])
        while True:
            batch = await queue.claim(name, [wf], False, 7, 30.0)
            if not batch:
                return
            got += [t.id for t in batch]

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c", "d"):
            tg.start_soon(claimer, name)
    every = [i for got in claimed.values() for i in got]
    assert sorted(every) == sorted(ids.values())  # each task claimed exactly once


async def test_lapsed_lease_is_taken_over_and_the_late_commit_refused(
    queue: SqlWorkers, unique: str
) -> None:
    wf = f"q-{unique}"
    await queue.enqueue(_tasks(f"r-{unique}", wf, 1))
    (first,) = await queue.claim("old", [wf], False, 10, 0.05)
    assert first.token == 1
    assert await queue.claim("new", [wf], False, 10, 30.0) == []  # leased: not claimable
    await anyio.sleep(0.2)  # the lease lapses (its holder died)
    (second,) = await queue.claim("new", [wf], False, 10, 30.0)
    assert (second.id, second.token, second.attempt) == (first.id, 2, first.attempt)
    assert await queue.renew("old", [first.id], 30.0) == set()  # old holder: no longer its
    assert not await queue.finish("old", first, '{"kind":"completed","result":1}')
    assert await queue.finish("new", second, '{"kind":"completed","result":2}')
    (done,) = await queue.take_done(f"r-{unique}")
    assert (done.outcome, done.worker) == ('{"kind":"completed","result":2}', "new")


async def test_released_task_keeps_its_attempt_and_replays(queue: SqlWorkers, unique: str) -> None:
    wf = f"q-{unique}"
    await queue.enqueue(_tasks(f"r-{unique}", wf, 1, attempt=2))
    (task,) = await queue.claim("stopping", [wf], False, 10, 30.0)
    await queue.release("stopping", [task.id])
    (again,) = await queue.claim("other", [wf], False, 10, 30.0)
    assert (again.id, again.attempt, again.replay) == (task.id, 2, True)


async def test_dropped_task_cannot_be_committed(queue: SqlWorkers, unique: str) -> None:
    wf = f"q-{unique}"
    await queue.enqueue(_tasks(f"r-{unique}", wf, 1))
    (task,) = await queue.claim("w", [wf], False, 10, 30.0)
    await queue.drop_tasks([task.id])  # the run was cancelled meanwhile
    assert await queue.renew("w", [task.id], 30.0) == set()
    assert not await queue.finish("w", task, '{"kind":"completed","result":1}')


async def test_claims_only_served_workflows_and_by_value_when_allowed(
    queue: SqlWorkers, unique: str
) -> None:
    await queue.enqueue(_tasks(f"r-{unique}", f"mine-{unique}", 1))
    shipped = _tasks(f"v-{unique}", f"other-{unique}", 1)
    shipped[0].by_value = True
    await queue.enqueue(shipped)
    assert await queue.claim("w", [f"nope-{unique}"], False, 10, 30.0) == []
    (mine,) = await queue.claim("w", [f"mine-{unique}"], False, 10, 30.0)
    assert mine.workflow == f"mine-{unique}"
    (by_value,) = await queue.claim("w", [], True, 10, 30.0)
    assert by_value.by_value


async def test_worker_store_needs_postgres(sqlite_url: str) -> None:
    with pytest.raises(bn.ConfigurationError, match="workers need Postgres"):
        await open_worker_store(sqlite_url)
    with pytest.raises(bn.ConfigurationError, match="workers need Postgres"):
        await open_worker_store("memory://x")


async def test_a_stored_outcome_names_its_worker_in_the_changes_read(
    queue: SqlWorkers, unique: str
) -> None:
    """What ``bn.watch`` reads as a run goes (``changes_since``) carries which worker ran
    each step, from the marks on (``last_ran_on_id``): the widget shows it live."""
    run_id, wf = f"r-{unique}", f"q-{unique}"
    store = SqlStore(queue.url, queue.engine)
    marks = await store.change_marks(run_id)
    await queue.enqueue(_tasks(run_id, wf, 2))
    first, second = await queue.claim("w1", [wf], False, 1, 30.0) + await queue.claim(
        "w2", [wf], False, 1, 30.0
    )
    assert await queue.finish_many("w1", [(first, '{"kind":"completed","result":1}')])
    changes = await store.changes_since(run_id, marks)
    assert [(r.step, r.worker) for r in changes.ran_on] == [(first.step, "w1")]
    marks = await store.change_marks(run_id)
    assert marks.last_ran_on_id == changes.ran_on[0].id
    assert await queue.finish_many("w2", [(second, '{"kind":"completed","result":2}')])
    later = await store.changes_since(run_id, marks)
    assert [(r.step, r.worker) for r in later.ran_on] == [(second.step, "w2")]


async def test_queue_statements_notify_in_one_round_trip(queue: SqlWorkers, unique: str) -> None:
    """Queueing tasks NOTIFYs the workers (payload: workflow) and storing outcomes NOTIFYs
    the coordinators (payload: run id), once per workflow or run, from the same statement
    (no transaction of four round trips around it)."""
    run_a, run_b, wf = f"a-{unique}", f"b-{unique}", f"q-{unique}"
    heard: list[tuple[str, str]] = []

    def on_notify(channel: str, payload: str) -> None:
        if unique in payload:
            heard.append((channel, payload))

    async def until(count: int) -> None:
        with anyio.fail_after(10):
            while len(heard) < count:
                await anyio.sleep(0.01)

    async with queue.listen([TASKS_CHANNEL, DONE_CHANNEL], on_notify):
        ids = await queue.enqueue(_tasks(run_a, wf, 3) + _tasks(run_b, wf, 2))
        assert len(ids) == 5
        await until(1)
        claimed = await queue.claim("w", [wf], False, 10, 30.0)
        assert len(claimed) == 5
        stored = await queue.finish_many("w", [(t, '{"kind":"parked"}') for t in claimed])
        assert stored == set(ids.values())
        await until(3)
        assert not await queue.finish_many("w", [(claimed[0], '{"kind":"parked"}')])
        await anyio.sleep(0.2)
    assert heard[0] == (TASKS_CHANNEL, wf)
    assert sorted(heard[1:]) == [(DONE_CHANNEL, run_a), (DONE_CHANNEL, run_b)]  # nothing more


async def test_a_queue_statement_past_its_shield_raises_storage_error(
    queue: SqlWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue statements are shielded from cancellation for a while; a statement still
    running past that is cut with a clear ``StorageError``, never left half done."""
    monkeypatch.setattr(_sql_workers, "TX_SHIELD", 0.2)
    with pytest.raises(bn.StorageError, match="did not answer within"):
        async with queue._one() as db:
            await db.execute("SELECT pg_sleep(5)")
    with pytest.raises(bn.StorageError, match="did not answer within"):
        async with queue._tx() as db:
            await db.execute("SELECT pg_sleep(5)")
    assert await queue.claim("w", ["nothing"], False, 1, 1.0) == []  # the pool still works


async def test_dep_results_give_a_failed_groups_survivors(queue: SqlWorkers, unique: str) -> None:
    """A worker running a step that ignores a failed fan-out group reads what its
    completed children returned, as the in-process runtime gives it: a map's list in item
    order with null for the failed items, a multi-model group's dict of the models that
    completed, nothing for a group none of whose children completed."""
    wf = bn.Workflow(f"partial-{unique}", db=POSTGRES_URL)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(12))

    @wf.step(map_over="items", max_attempts=1)
    async def work(ctx: bn.Context) -> dict[str, int]:
        if ctx.item in (1, 10):
            raise ValueError("malformed")
        return {"n": ctx.item}

    @wf.step(models=["mock/a", "mock/b"], max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        if ctx.model == "mock/b":
            raise ValueError("b is down")
        return "from a"

    @wf.step(map_over="items", max_attempts=1)
    async def never(ctx: bn.Context) -> int:
        raise ValueError("always")

    run = await wf.run(display=False)
    assert run.status == "failed"
    found = await queue.dep_results(run.id, ["items", "work", "ask", "never"])
    assert set(found) == {"items", "work", "ask"}
    expected = [None if i in (1, 10) else {"n": i} for i in range(12)]
    assert _jsonutil.loads(found["work"]) == expected
    assert _jsonutil.loads(found["ask"]) == {"mock/a": "from a"}
