"""A coordinating worker running the attempts it has room for itself (DESIGN §10,
docs/workers.md "The coordinator's own attempts"), with REAL worker subprocesses on the
local Postgres and the fake provider: no task row for them, their outcome and ``ran_on``
committed by the run's group commit under the run's lease; kill -9 and SIGTERM of the
coordinator while they are in flight; ``--concurrency`` bounding claimed tasks and its
own attempts together.
"""

from __future__ import annotations

import collections
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb._gc import RUN_THRESHOLD
from baton_nb.store import Store, open_worker_store
from tests import workers_app as app
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres
from tests.fakes.provider_server import FakeProviderServer
from tests.integration.test_workers import WorkerProcs, _llm_env, _until, _wait

pytestmark = pytest.mark.anyio
N, HOLD = 12, 4  # items; those from HOLD on wait for $MARKS/release after paying their call


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[WorkerProcs]:
    """Worker subprocesses on the local Postgres, all killed at teardown."""
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    started = WorkerProcs(POSTGRES_URL, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _start(procs: WorkerProcs, server: FakeProviderServer, *args: str) -> subprocess.Popen[bytes]:
    return procs.start(
        "tests.workers_app:held_map",
        args=("--concurrency", "20", *args),
        HOLD_FROM=str(HOLD),
        **_llm_env(server),
    )


def _pid(worker: str) -> int:
    return int(worker.split(":")[1])


async def _holding(procs: WorkerProcs, server: FakeProviderServer, run_id: str) -> None:
    """Every call paid, the first HOLD items completed and committed, the rest in flight
    (holding); and all of it run by the coordinator itself: no task was ever queued."""
    await _until(lambda: server.request_count >= N and len(procs.marked("held-done")) >= HOLD)
    with anyio.fail_after(30):
        while True:
            loaded = await bn.Run.load(run_id, db=procs.db)
            done = [n for n, s in loaded.steps.items() if n.startswith("held[")
                    and s.state == "completed"]  # fmt: skip
            if len(done) >= HOLD:
                break
            await anyio.sleep(0.05)
    assert sorted(done) == sorted(f"held[{i}]" for i in range(HOLD))
    async with await open_worker_store(procs.db) as queue:
        assert await queue.run_tasks(run_id) == {}  # its own attempts: no task rows


async def _ended_once_each(
    procs: WorkerProcs, server: FakeProviderServer, run: bn.SubmittedRun
) -> bn.Run:
    """The run completed with every result, each item's call paid once at the server and
    each item ended once (the completed ones never ran again)."""
    done = await _wait(run, procs, 120)
    assert done.status == "completed", procs.logs()
    assert done.results["held_total"] == N
    assert server.request_count == N  # no paid call sent again
    assert set(procs.marked("held-done").values()) == {1}
    assert len(procs.marked("held-done")) == N
    async with await Store.open(procs.db) as store:
        stats = await store.get_stats([run.id])
    paid = collections.Counter(c.step for c in stats if not c.replayed)
    assert len(paid) == N and set(paid.values()) == {1}
    return done


async def test_coordinator_killed_with_its_own_attempts_in_flight(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """kill -9 of the coordinator while attempts it runs itself hold: another worker takes
    the run over once its lease lapses and runs those steps again, replaying their paid
    calls; the steps it completed are not run again; ``ran_on`` names who ran each."""
    fake_provider.latency = 0.01
    run = await app.held_map.submit({"n": N}, db=procs.db, concurrency=200)
    first = _start(procs, fake_provider)
    await _holding(procs, fake_provider, run.id)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    (procs.marks / "release").touch()
    second = _start(procs, fake_provider)
    done = await _ended_once_each(procs, fake_provider, run)

    started = procs.marked("held")
    assert all(started[f"held[{i}]"] == 1 for i in range(HOLD))
    assert all(started[f"held[{i}]"] == 2 for i in range(HOLD, N))  # again, replayed
    replayed = [c for c in done.calls if c.replayed]
    assert sorted(c.step for c in replayed) == sorted(f"held[{i}]" for i in range(HOLD, N))
    ran_on = {name: _pid(s.ran_on) for name, s in done.steps.items() if s.kind != "group"}
    expected = {"held_items": first.pid, "held_total": second.pid}
    expected |= {f"held[{i}]": first.pid if i < HOLD else second.pid for i in range(N)}
    assert ran_on == expected


async def test_coordinator_stopped_hands_its_own_attempts_over_after_the_grace(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """SIGTERM while its own attempts hold past the grace period (2 s): the worker exits
    cleanly without committing them, and the next worker runs them again (paid calls
    replayed, completed steps not run again)."""
    fake_provider.latency = 0.01
    run = await app.held_map.submit({"n": N}, db=procs.db, concurrency=200)
    first = _start(procs, fake_provider)
    await _holding(procs, fake_provider, run.id)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, procs.logs()
    handed = await bn.Run.load(run.id, db=procs.db)
    completed = {s for s, step in handed.steps.items() if step.state == "completed"}
    assert {s for s in completed if s.startswith("held[")} == {f"held[{i}]" for i in range(HOLD)}
    (procs.marks / "release").touch()
    second = _start(procs, fake_provider)
    done = await _ended_once_each(procs, fake_provider, run)
    assert all(procs.marked("held")[f"held[{i}]"] == 2 for i in range(HOLD, N))
    ran_on = {name: _pid(s.ran_on) for name, s in done.steps.items() if name.startswith("held[")}
    assert ran_on == {f"held[{i}]": first.pid if i < HOLD else second.pid for i in range(N)}


async def test_coordinator_stopped_lets_its_own_attempts_finish_within_the_grace(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """SIGTERM while its own attempts hold, released within the grace period (60 s): they
    end and are committed by the stopping coordinator; what becomes ready meanwhile is not
    started in the stopping worker but queued for the others; the run ends, each step run
    once, and the worker exits cleanly."""
    fake_provider.latency = 0.01
    run = await app.held_map.submit({"n": N}, db=procs.db, concurrency=200)
    first = _start(procs, fake_provider, "--grace", "60")
    await _holding(procs, fake_provider, run.id)
    first.send_signal(signal.SIGTERM)
    async with await open_worker_store(procs.db) as queue:
        with anyio.fail_after(30):
            while not any(w.pid == first.pid and w.stopping for w in await queue.workers()):
                await anyio.sleep(0.05)
    (procs.marks / "release").touch()
    second = _start(procs, fake_provider)
    done = await _ended_once_each(procs, fake_provider, run)
    assert first.wait(timeout=60) == 0, procs.logs()
    assert set(procs.marked("held").values()) == {1}  # none ran twice
    ran_on = {name: _pid(s.ran_on) for name, s in done.steps.items() if s.kind != "group"}
    expected = {"held_items": first.pid, "held_total": second.pid}
    expected |= {f"held[{i}]": first.pid for i in range(N)}
    assert ran_on == expected


async def test_concurrency_bounds_claimed_tasks_and_own_attempts_together(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """One worker with ``--concurrency 4`` coordinating a 30-item map whose run allows 200
    at once: 4 attempts run in the coordinator, the rest are queued and claimed by the same
    worker as slots free; counted at the server, never more than 4 calls in flight."""
    n = 30
    fake_provider.latency = 0.1
    run = await app.llm_map.submit({"n": n}, db=procs.db, concurrency=200)
    proc = procs.start(
        "tests.workers_app:llm_map", args=("--concurrency", "4"), **_llm_env(fake_provider)
    )
    queued = 0
    async with await open_worker_store(procs.db) as queue:
        with anyio.fail_after(120):
            while fake_provider.request_count < n:
                queued = max(queued, len(await queue.run_tasks(run.id)))
                await anyio.sleep(0.02)
    done = await _wait(run, procs, 120)
    assert done.status == "completed", procs.logs()
    assert done.results["total"] == n
    assert fake_provider.request_count == n
    assert fake_provider.max_in_flight == 4  # the bound, and reached
    assert 0 < queued <= n - 4  # the rest went through the queue
    assert {_pid(s.ran_on) for s in done.steps.values() if s.kind != "group"} == {proc.pid}


async def test_coordinator_stalled_past_its_lease_commits_nothing_after(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """The coordinator is paused (SIGSTOP) with its own attempts holding, long enough for
    its lease to lapse and another worker to take the run over and end it; resumed, its
    attempts end too, and nothing of them is committed (``Lease.held``, checked before
    each commit): every step ran on the new coordinator has its row and ``ran_on`` from it."""
    fake_provider.latency = 0.01
    run = await app.held_map.submit({"n": N}, db=procs.db, concurrency=200)
    first = _start(procs, fake_provider)
    await _holding(procs, fake_provider, run.id)
    first.send_signal(signal.SIGSTOP)
    try:
        (procs.marks / "release").touch()
        second = _start(procs, fake_provider)
        done = await _wait(run, procs, 120)
        assert done.status == "completed", procs.logs()
    finally:
        first.send_signal(signal.SIGCONT)
    # Its held attempts see the release and end (marked), then try to commit.
    await _until(lambda: sum(procs.marked("held-done").values()) == 2 * N - HOLD)
    await anyio.sleep(1.0)  # what it would have committed, it would have by now
    async with await Store.open(procs.db) as store:
        ran_on = await store.get_ran_on(run.id)
        after = await bn.Run.load(run.id, db=procs.db)
    assert {s: _pid(w) for s, w in ran_on.items() if s.startswith("held[")} == {
        f"held[{i}]": first.pid if i < HOLD else second.pid for i in range(N)
    }
    assert after.status == "completed" and after.results["held_total"] == N
    assert fake_provider.request_count == N  # paid calls replayed by the new coordinator
    assert "its lease lapsed" in procs.logs()
    # It says the run was taken over and ended elsewhere (read from the run's row), not
    # that it was cancelled.
    await _until(lambda: "which ended it (completed)" in procs.logs())
    [stopped] = [line for line in procs.logs().splitlines() if "stopped coordinating" in line]
    assert f"run {run.id} of workflow" in stopped and "was taken over by" in stopped, stopped


async def test_steps_run_on_a_worker_with_rarer_young_collections(procs: WorkerProcs) -> None:
    """A worker runs steps all along (its coordinator's and its tasks'): the collector's
    young threshold is the one a run executing in process has (``_gc``)."""
    run = await app.noop_map.submit({"n": 5}, db=procs.db)
    procs.start("tests.workers_app:noop_map", MARK_GC="1")
    done = await _wait(run, procs, 60)
    assert done.status == "completed", procs.logs()
    assert procs.marked("gc") == {str(RUN_THRESHOLD): 5}


async def test_coordinator_whose_clock_says_held_commits_nothing_once_its_run_was_taken(
    procs: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """The run's lease is taken in the database while the coordinator's own attempts are
    in flight, its lease long (600 s): its clock says "held" and its heartbeat (every
    200 s) does not come. Their ends are refused in the commit itself (``WriteBatch.owner``)
    and it stops coordinating, nothing more committed; a second worker takes the run over
    and completes it, every call paid once at the server."""
    fake_provider.latency = 0.01
    run = await app.held_map.submit({"n": N}, db=procs.db, concurrency=200)
    first = _start(procs, fake_provider, "--lease-ttl", "600")
    await _holding(procs, fake_provider, run.id)
    async with await Store.open(procs.db) as store:
        row = await store.get_run(run.id)
        assert row is not None and row.lease_owner is not None
        assert await store.acquire_lease(run.id, "intruder", 600, steal_from=row.lease_owner)
        # Its held attempts end; the first to commit is refused and the execution stops
        # (the others cancelled, if they had not ended yet).
        (procs.marks / "release").touch()
        # It says who took the run over (the lease's holder, read from the run's row),
        # not that the run was cancelled.
        await _until(lambda: "is being continued by intruder" in procs.logs())
        nodes = {n.step: n.state for n in await store.get_nodes(run.id)}
        ran_on = await store.get_ran_on(run.id)
        stats = await store.get_stats([run.id])
    assert all(nodes[f"held[{i}]"] == "completed" for i in range(HOLD))
    assert all(nodes[f"held[{i}]"] == "executing" for i in range(HOLD, N)), nodes
    assert sorted(s for s in ran_on if s.startswith("held[")) == [f"held[{i}]" for i in range(HOLD)]
    assert len(stats) == N  # the paid calls, committed before the takeover
    assert first.poll() is None  # the worker lives on: it stopped coordinating this run
    [stopped] = [line for line in procs.logs().splitlines() if "stopped coordinating" in line]
    assert f"run {run.id} of workflow" in stopped and "cancelled" not in stopped, stopped
    first.kill()  # (it would take the run again once its lease lapses)
    first.wait()
    async with await Store.open(procs.db) as store:
        assert await store.acquire_lease(run.id, "intruder", -1)  # lapses: the next takes it
    second = _start(procs, fake_provider)
    done = await _wait(run, procs, 120)
    assert done.status == "completed", procs.logs()
    assert done.results["held_total"] == N
    assert fake_provider.request_count == N  # no paid call sent again
    async with await Store.open(procs.db) as store:
        stats = await store.get_stats([run.id])
        ran_on = await store.get_ran_on(run.id)
    paid = collections.Counter(c.step for c in stats if not c.replayed)
    assert len(paid) == N and set(paid.values()) == {1}
    assert {s: _pid(w) for s, w in ran_on.items() if s.startswith("held[")} == {
        f"held[{i}]": first.pid if i < HOLD else second.pid for i in range(N)
    }
