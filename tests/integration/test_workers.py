"""Workers through Postgres (DESIGN §10), with REAL worker subprocesses on the local
Postgres: ``baton-nb worker tests.workers_app:... --db postgresql://...``.

Every worker started here is killed in the fixture's teardown. Sizes are scaled for the
suite (500 calls); the 5,000-call version is marked slow.
"""

from __future__ import annotations

import bisect
import collections
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.store import Store, open_worker_store
from baton_nb.widget._state import detail
from tests import workers_app as app
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, FakeUsage

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg() -> str:
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    return POSTGRES_URL


class WorkerProcs:
    """Worker subprocesses; all killed at teardown."""

    def __init__(self, db: str, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.env: dict[str, str] = {**os.environ, "MARKS": str(self.marks)}

    def start(self, *refs: str, args: tuple[str, ...] = (), **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "baton_nb.cli", "worker", *refs, "--db", self.db,
             "--lease-ttl", "2", "--grace", "2", *args],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("worker*.log")))

    def marked(self, name: str) -> collections.Counter[str]:
        path = self.marks / name
        lines = path.read_text().split() if path.exists() else []
        return collections.Counter(lines)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(timeout=30)


@pytest.fixture
def workers(pg: str, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(pg, tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def _llm_env(server: FakeProviderServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": f"{server.base_url}/v1", "OPENAI_API_KEY": DUMMY_KEYS["openai"]}


async def _wait(run: bn.SubmittedRun, procs: WorkerProcs, seconds: float = 120) -> bn.Run:
    try:
        with anyio.fail_after(seconds):
            return await run.wait()
    except TimeoutError:
        pytest.fail(f"run {run.id} did not end in {seconds}s; worker logs:\n{procs.logs()}")


async def _until(predicate: object, seconds: float = 60) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.05)


async def _coordinator(
    workers: WorkerProcs, run_id: str, procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """The worker process holding the run's lease (its coordinator), once one does."""
    by_pid = {p.pid: p for p in procs}
    async with await Store.open(workers.db) as store:
        with anyio.fail_after(60):
            while True:
                row = await store.get_run(run_id)
                owner = row.lease_owner if row else None
                pid = int(owner.split(":")[1]) if owner else 0
                if pid in by_pid:
                    return by_pid[pid]
                await anyio.sleep(0.05)


async def _llm_map_survives(
    workers: WorkerProcs, server: FakeProviderServer, n: int, concurrency: int
) -> None:
    server.latency = 0.01
    run = await app.llm_map.submit({"n": n}, db=workers.db, concurrency=200)
    env = _llm_env(server)
    # A longer lease than the other tests': a loaded machine may stall a live worker's
    # heartbeat past 2 s, and its steps would then run twice (both paying their call).
    args = ("--concurrency", str(concurrency), "--lease-ttl", "5")
    procs = [workers.start("tests.workers_app:llm_map", args=args, **env) for _ in range(3)]
    patience = 60 + n * 0.1  # seconds: a loaded machine is slow
    await _until(lambda: server.request_count >= n // 5, patience)
    # The worker coordinating the run is lost mid-run (kill -9): its leases lapse, another
    # worker takes the run over and the others its steps.
    killed = await _coordinator(workers, run.id, procs)
    killed.send_signal(signal.SIGKILL)
    await _until(lambda: server.request_count >= n // 2, patience)
    # The new coordinator is stopped (SIGTERM): it finishes or releases its steps, hands
    # the run over and exits; the last worker ends the run.
    stopped = await _coordinator(workers, run.id, [p for p in procs if p is not killed])
    stopped.send_signal(signal.SIGTERM)
    done = await _wait(run, workers, 120 + n * 0.2)
    assert stopped.wait(timeout=30) == 0, workers.logs()

    assert done.status == "completed", workers.logs()
    assert done.results["total"] == n  # 0 results lost
    children = [s for s in done.steps.values() if s.name.startswith("ask[")]
    assert len(children) == n and all(s.state == "completed" for s in children)
    async with await Store.open(workers.db) as store:
        stats = await store.get_stats([run.id])
    paid = collections.Counter(c.step for c in stats if not c.replayed)
    assert sum(paid.values()) == n and set(paid.values()) == {1}  # no committed call twice
    sent = collections.Counter(r.json["messages"][0]["content"] for r in server.requests)
    assert len(sent) == n
    # Calls sent again: only those in flight, not committed, when a worker was killed.
    assert sum(sent.values()) - n <= concurrency, sent.most_common(3)
    async with await open_worker_store(workers.db) as queue:
        assert await queue.run_tasks(run.id) == {}  # the queue is left empty


async def test_three_workers_llm_map_survive_kill9_and_sigterm(
    workers: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    await _llm_map_survives(workers, fake_provider, 500, 20)


async def test_limits_hold_across_three_workers(
    workers: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """``bn.Limit(concurrency=2, rpm=6)`` on the provider, 3 workers with room for 10 calls
    each: counted at the server, no window holds more than 6 requests and no more than 2
    are ever in flight. The window is shortened to 2 s (BATON_NB_LIMIT_WINDOW)."""
    window, rpm, concurrency, n = 2.0, 6, 2, 18
    fake_provider.latency = 1.0  # 6 requests at once would be 6 in flight without the cap
    run = await app.llm_map.submit({"n": n}, db=workers.db, concurrency=200)
    env = {
        **_llm_env(fake_provider),
        "BATON_NB_LIMIT_WINDOW": str(window),
        "LIMIT_RPM": str(rpm),
        "LIMIT_CONCURRENCY": str(concurrency),
    }
    args = ("--concurrency", "10", "--lease-ttl", "5")
    for _ in range(3):
        workers.start("tests.workers_app:llm_map", args=args, **env)
    done = await _wait(run, workers, 240)
    assert done.status == "completed", workers.logs()
    assert done.results["total"] == n

    times = sorted(r.received_at for r in fake_provider.requests)
    assert len(times) == n
    busiest = max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))
    assert busiest <= rpm, times
    # throttled: n requests at rpm per window cannot all arrive sooner than this
    assert times[-1] - times[0] >= (n // rpm - 1) * window, times
    assert fake_provider.max_in_flight <= concurrency


async def test_a_shared_slot_let_go_wakes_the_workers_waiting_for_one(
    workers: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    """``bn.Limit(concurrency=2)`` across 3 workers whose slot waiters poll only every hour
    (BATON_NB_SLOT_POLL): the run still ends, each call let through by a slot let go on
    some worker (NOTIFY), and never more than 2 in flight at the server."""
    n = 16
    fake_provider.latency = 0.2
    run = await app.llm_map.submit({"n": n}, db=workers.db, concurrency=200)
    env = {
        **_llm_env(fake_provider),
        "BATON_NB_SLOT_POLL": "3600",
        "LIMIT_RPM": "100000",
        "LIMIT_CONCURRENCY": "2",
    }
    args = ("--concurrency", "10", "--lease-ttl", "5")
    for _ in range(3):
        workers.start("tests.workers_app:llm_map", args=args, **env)
    done = await _wait(run, workers, 180)
    assert done.status == "completed", workers.logs()
    assert done.results["total"] == n
    assert len(fake_provider.requests) == n
    assert fake_provider.max_in_flight <= 2


async def test_show_and_run_steps_name_the_worker_that_ran_each_step(
    workers: WorkerProcs,
) -> None:
    """A run on 2 workers: ``run.steps[name].ran_on`` and ``baton-nb show`` name the worker
    (host:pid:tag) that ran each step, and both workers appear."""
    run = await app.noop_map.submit({"n": 40}, db=workers.db)
    procs = [
        workers.start("tests.workers_app:noop_map", args=("--concurrency", "4"), STEP_DELAY="0.05")
        for _ in range(2)
    ]
    done = await _wait(run, workers)
    assert done.status == "completed", workers.logs()
    pids = {p.pid for p in procs}
    ran_on = {name: s.ran_on for name, s in done.steps.items() if s.kind != "group"}
    assert all(ran_on.values()), ran_on  # every step, the map's children included
    assert {int(w.split(":")[1]) for w in ran_on.values()} == pids  # both workers ran some

    shown = await anyio.run_process(
        [sys.executable, "-m", "baton_nb.cli", "show", run.id, "--all", "--db", workers.db],
        cwd=ROOT,
    )
    text = shown.stdout.decode()
    assert "ran_on" in text
    for name, worker in ran_on.items():
        line = next(ln for ln in text.splitlines() if f" {name} " in ln)
        assert line.rstrip().endswith(worker), line
    async with await Store.open(workers.db) as store:
        assert await store.get_ran_on(run.id) == ran_on


async def test_a_watcher_sees_which_worker_ran_each_step_as_it_ends(
    workers: WorkerProcs,
) -> None:
    """Watched from another process while it runs (``bn.watch``, what the widget follows):
    each step that ends on a worker names that worker at once, in ``run.steps`` and in the
    widget's side panel, not only once the run has ended."""
    run = await app.noop_map.submit({"n": 40}, db=workers.db)
    seen: dict[str, str] = {}  # step -> ran_on when its end was seen, before the run's end
    async with bn.watch(run.id, db=workers.db) as live:
        assert live.listening
        procs = [
            workers.start(
                "tests.workers_app:noop_map", args=("--concurrency", "4"), STEP_DELAY="0.05"
            )
            for _ in range(2)
        ]
        with anyio.fail_after(120):
            async for update in live:
                if isinstance(update, bn.StepUpdated) and update.state == "completed":
                    seen[update.step_name] = detail(live.run, update.step_name)["ran_on"]
    assert live.run.status == "completed", workers.logs()
    children = {name: w for name, w in seen.items() if name.startswith("double[")}
    assert len(children) == 40 and all(children.values()), seen
    assert {int(w.split(":")[1]) for w in children.values()} <= {p.pid for p in procs}


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_three_workers_5000_call_map_survive_kill9_and_sigterm(
    workers: WorkerProcs, fake_provider: FakeProviderServer
) -> None:
    await _llm_map_survives(workers, fake_provider, 5000, 100)


async def test_two_workers_racing_never_run_one_step_twice(workers: WorkerProcs) -> None:
    for _ in range(2):
        workers.start("tests.workers_app:noop_map", "--concurrency", "50")
    # Both registered before the run is there to take: both race for its steps (on a
    # loaded machine the second one could start after the first had taken them all).
    mine = {p.pid for p in workers.procs}
    async with await open_worker_store(workers.db) as queue:
        with anyio.fail_after(60):
            while len({w.pid for w in await queue.workers()} & mine) < 2:
                await anyio.sleep(0.05)
    run = await app.noop_map.submit({"n": 300}, db=workers.db)
    done = await _wait(run, workers)
    assert done.status == "completed"
    assert done.results["summed"] == sum(2 * i for i in range(300))
    marks = workers.marked("noop")
    assert len(marks) == 300 and set(marks.values()) == {1}, marks.most_common(3)


SUBMITTER = textwrap.dedent(
    """
    import sys, anyio
    import baton_nb as bn

    wf = bn.Workflow(sys.argv[2])  # defined in __main__: shipped by value

    @wf.step()
    async def base(ctx: bn.Context) -> int:
        return int(ctx.params["x"])

    @wf.step()
    async def plus(ctx: bn.Context, base: int) -> int:
        return base + 1

    async def main() -> None:
        run = await wf.submit({"x": 41}, db=sys.argv[1])
        print(run.id, flush=True)

    anyio.run(main)
    """
)


async def test_submit_from_one_process_watch_from_another(
    workers: WorkerProcs, tmp_path: Path, unique: str
) -> None:
    script = tmp_path / "submit.py"
    script.write_text(SUBMITTER)
    out = subprocess.run(
        [sys.executable, str(script), workers.db, f"by-value-{unique}"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    run_id = out.stdout.decode().strip()
    workers.start()  # no workflow of its own: by-value runs only
    seen = []
    with anyio.fail_after(60):
        async with bn.watch(run_id, db=workers.db) as live:
            async for update in live:
                seen.append(type(update).__name__)
    assert live.run.status == "completed", workers.logs()
    assert live.run.results == {"base": 41, "plus": 42}
    assert seen[-1] == "WorkflowFinished"
    again = await bn.SubmittedRun.attach(run_id, db=workers.db)
    assert (await again.wait()).results["plus"] == 42


async def test_worker_with_other_code_refuses_the_run(workers: WorkerProcs) -> None:
    run = await app.noop_map.submit({"n": 3}, db=workers.db)
    workers.start("tests.workers_app:noop_map", CODE_VARIANT="1")
    with pytest.raises(bn.RunRefused, match="--accept-other-code"):
        await _wait(run, workers)
    again = await bn.Run.load(run.id, db=workers.db)
    assert again.status == "failed"
    assert not workers.marked("noop")  # nothing ran


async def test_worker_started_to_accept_other_code_runs_it(workers: WorkerProcs) -> None:
    run = await app.noop_map.submit({"n": 3}, db=workers.db)
    workers.start("tests.workers_app:noop_map", "--accept-other-code", CODE_VARIANT="1")
    done = await _wait(run, workers)
    assert done.status == "completed"
    assert done.results["summed"] == 2 * (0 + 1 + 2 + 3)  # the worker's code ran


async def test_cancel_reaches_the_workers(workers: WorkerProcs) -> None:
    run = await app.noop_map.submit({"n": 40}, db=workers.db, concurrency=4)
    workers.start("tests.workers_app:noop_map", STEP_DELAY="0.5")
    await _until(lambda: len(workers.marked("noop")) >= 2)
    run.cancel()
    done = await _wait(run, workers, 60)
    assert done.status == "cancelled"
    assert len(workers.marked("noop")) < 40
    async with await open_worker_store(workers.db) as queue:
        assert await queue.run_tasks(run.id) == {}


async def test_run_with_workers_true_submits_watches_and_waits(workers: WorkerProcs) -> None:
    workers.start("tests.workers_app:noop_map")
    run = await app.noop_map.run({"n": 5}, db=workers.db, workers=True, display=False)
    assert run.status == "completed" and run.results["summed"] == 20


async def test_a_worker_takes_a_url_with_libpq_parameters(workers: WorkerProcs) -> None:
    """``--db`` as hosted Postgres hands it out (``?sslmode=...``): the worker process
    translates its parameters for asyncpg as ``wf.run()`` does (it crashed on a
    TypeError), and so do submit and wait (LISTEN) here."""
    workers.db = f"{workers.db}?sslmode=disable&application_name=baton-nb-worker"
    workers.start("tests.workers_app:noop_map")
    run = await app.noop_map.submit({"n": 3}, db=workers.db)
    done = await _wait(run, workers, 60)
    assert done.status == "completed", workers.logs()
    assert done.results["summed"] == 2 * (0 + 1 + 2)


async def test_submit_needs_postgres(sqlite_url: str) -> None:
    with pytest.raises(bn.ConfigurationError, match="workers need Postgres"):
        await app.noop_map.submit({"n": 1}, db=sqlite_url)


async def test_retries_and_snoozes_decided_by_the_coordinator_run_on_workers(
    workers: WorkerProcs,
) -> None:
    run = await app.flaky.submit(db=workers.db)
    for _ in range(2):
        workers.start("tests.workers_app:flaky")
    done = await _wait(run, workers, 60)
    assert done.status == "completed", workers.logs()
    assert done.results["shaky_total"] == 10 * sum(range(6))
    attempts = {i: done.steps[f"shaky[{i}]"].attempt for i in range(6)}
    assert attempts == {0: 2, 1: 1, 2: 2, 3: 1, 4: 2, 5: 1}  # a snooze uses no attempt
    assert workers.marked("snoozed") == {"5": 1}


async def test_workflow_budget_holds_on_the_workers(
    workers: WorkerProcs, fake_provider: FakeProviderServer, unique: str
) -> None:
    fake_provider.usage = FakeUsage(input=10, output=1000)
    per_call = bn.price("openai/gpt-4o", bn.Usage(input_tokens=10, output_tokens=1000))
    assert per_call is not None
    run = await app.spend_map.submit({"n": 20, "tag": unique}, db=workers.db, concurrency=20)
    for _ in range(2):
        workers.start("tests.workers_app:spend_map", **_llm_env(fake_provider))
    done = await _wait(run, workers, 120)
    sent = fake_provider.request_count
    assert 0 < sent < 20, workers.logs()
    assert per_call * sent <= Decimal("0.05")  # paid at the fake server: never past the cap
    assert done.status == "cancelled", workers.logs()
    assert done.known_cost == per_call * sent  # every paid answer stored
    why = done.budget_stop or ""  # a worker's call was refused: the run says so
    assert why.startswith("budget reached") and why.endswith(f'run_id="{done.id}", budget=...)')
    assert "cancelled (budget reached)" in repr(done)
    cancelled = [s for s in done.steps.values() if s.state == "cancelled"]
    assert cancelled and all(s.error == f"run cancelled: {why}" for s in cancelled)


async def test_budget_stop_on_workers_stores_the_calls_in_flight_everywhere(
    workers: WorkerProcs, fake_providers: FakeProviderServer, unique: str
) -> None:
    # Two workers, each with steps calling (the coordinator's own attempts and the other
    # worker's claimed tasks); the budget holds two calls' worst cases, answered after
    # 2 s. A call refused in a process with none of its own in flight used to stop the run
    # at once: the other process's calls were cancelled (answers thrown away, counted at
    # their worst as unanswered) and bought again on resume.
    server = fake_providers
    server.usage = FakeUsage(input=10, output=1000)
    server.latency = 2.0
    n = 20
    run = await app.landing_map.submit({"n": n, "tag": unique}, db=workers.db, concurrency=n)
    for _ in range(2):
        workers.start(
            "tests.workers_app:landing_map", args=("--concurrency", "10"), **_llm_env(server)
        )
    done = await _wait(run, workers, 120)
    sent = collections.Counter(r.json["messages"][0]["content"] for r in server.requests)
    assert done.status == "cancelled", workers.logs()
    assert (done.budget_stop or "").startswith("budget reached"), (
        [s.error for s in done.steps.values()],
        done.spend,
        workers.logs(),
    )
    assert 0 < sum(sent.values()) <= 2 and max(sent.values()) == 1, sent
    # every request the server received: its answer stored, none counted as unanswered
    answered = [c for c in done.calls if not c.is_unanswered]
    assert not [c for c in done.calls if c.is_unanswered], workers.logs()
    assert len(answered) == sum(sent.values()), workers.logs()
    assert done.known_cost <= Decimal("0.025")
    # every child had started (n <= concurrency): each one completed or cancelled
    assert {s.state for s in done.steps.values()} <= {"completed", "cancelled"}, done.counts()
    # resumed with room for all: the calls paid are replayed, none sent twice
    server.latency = 0.0
    again = await app.landing_map.run(run_id=run.id, budget="1", db=workers.db, display=False)
    assert again.status == "completed"
    sent = collections.Counter(r.json["messages"][0]["content"] for r in server.requests)
    assert sum(sent.values()) == n and set(sent.values()) == {1}, sent


async def test_response_cache_answers_on_the_workers(
    workers: WorkerProcs, fake_provider: FakeProviderServer, unique: str
) -> None:
    fake_provider.usage = FakeUsage(input=10, output=10)
    workers.start("tests.workers_app:spend_map", **_llm_env(fake_provider))
    first = await _wait(
        await app.spend_map.submit({"n": 3, "tag": unique}, db=workers.db), workers, 60
    )
    assert first.status == "completed", workers.logs()
    sent = fake_provider.request_count
    assert sent == 3
    second = await _wait(
        await app.spend_map.submit({"n": 3, "tag": unique}, db=workers.db), workers, 60
    )
    assert second.status == "completed", workers.logs()
    assert fake_provider.request_count == sent  # all three answered from the cache
    assert [c.cached for c in second.calls] == [True] * 3


async def test_the_worker_log_says_when_a_run_ends_and_when_it_stops(
    workers: WorkerProcs,
) -> None:
    """The log of ``baton-nb worker``: each run it coordinated to its end, with its status;
    on SIGTERM, what was in flight as it stopped, then that it stopped."""
    import re

    proc = workers.start("tests.workers_app:noop_map")
    run = await app.noop_map.submit({"n": 3}, db=workers.db)
    done = await _wait(run, workers, 60)
    assert done.status == "completed"
    await _until(lambda: f"run {run.id} (workers-noop-map) completed" in workers.logs())
    assert re.search(
        rf"run {run.id} \(workers-noop-map\) completed: 5 completed of 5 steps", workers.logs()
    ), workers.logs()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    log = workers.logs()
    assert "SIGTERM received: stopping" in log
    assert re.search(r"worker \S+ stopping: 0 tasks in flight, coordinating 0 runs; grace 2s", log)
    assert re.search(r"worker \S+ stopped \(\d+ tasks? done\)", log), log

    # Stopped with a step running: it says so, releases it and hands the run over.
    before = sum(workers.marked("noop").values())
    slow = workers.start("tests.workers_app:noop_map", STEP_DELAY="600")
    held = await app.noop_map.submit({"n": 2}, db=workers.db)
    await _until(lambda: sum(workers.marked("noop").values()) >= before + 2)  # both started
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(timeout=60) == 0
    log = workers.logs().split("SIGTERM received: stopping")[-1]
    assert re.search(r"stopping: 2 tasks in flight, coordinating 1 run; grace 2s", log), log
    assert f"run {held.id} handed over to the other workers" in log
    assert f"run {held.id} (workers-noop-map) cancelled" not in log  # handed over, not ended
    assert re.search(r"worker \S+ stopped \(\d+ tasks? done\)", log), log
    # The handed-over run finished here: none is left for other tests' workers of noop_map
    workers.start("tests.workers_app:noop_map")
    assert (await _wait(held, workers, 60)).status == "completed", workers.logs()
