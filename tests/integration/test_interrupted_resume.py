"""A run an interrupt stopped is resumed by the next ``wf.run()`` once the process it
stopped in is gone (a kernel restart interrupts the kernel before shutting it down, and
the run may be stored ``cancelled`` before the process dies), paying nothing twice
(counted at the fake provider); not one stopped by ``run.cancel()`` or a budget, not one
interrupted in this same process (a re-run there is a new run, as the printed line
says), nor one after which a newer run of the same kind was started."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.runtime._driver import active_run
from baton_nb.store import Store, utcnow
from baton_nb.store._sql_rows import RUNS
from tests.fakes.provider_server import FakeProviderServer
from tests.integration._process import dead_owner, paid_by_run

pytestmark = pytest.mark.anyio

N = 8
HANG_FROM = 4  # items from this one pay their call, then wait until cancelled
CONCURRENCY = 4
MODEL = "openai/gpt-4o-mini"


class Hang:
    """Steps from ``HANG_FROM`` on wait (after paying) while ``on``; ``cancel_at``: the
    run cancelled by ``run.cancel()`` once that many have paid."""

    def __init__(self) -> None:
        self.on = True
        self.paid = 0
        self.all_hung = anyio.Event()
        self.cancel_at: int | None = None


def _workflow(db: str, name: str, hang: Hang) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"item {i}" for i in range(ctx.params["n"])]

    @wf.step(map_over="items", max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        reply = await ctx.complete(model=MODEL, prompt=f"{ctx.run_id} {ctx.item}", max_tokens=5)
        if hang.on and int(ctx.item.split()[1]) >= HANG_FROM:
            hang.paid += 1
            if hang.cancel_at is not None and hang.paid == hang.cancel_at:
                live = active_run(ctx.run_id)
                assert live is not None
                live.cancel()  # what the widget's Cancel does
            if hang.paid == N - HANG_FROM:
                hang.all_hung.set()
            await anyio.sleep_forever()
        return reply.text

    return wf


async def _interrupted(wf: bn.Workflow, hang: Hang) -> str:
    """Run ``wf`` until every hanging step paid its call, then cancel it from outside (as
    an interrupt does): the run's id."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: wf.run(params={"n": N}, concurrency=CONCURRENCY, display=False))
        with anyio.fail_after(30):
            await hang.all_hung.wait()
        tg.cancel_scope.cancel()
    assert wf.last_run is not None
    return wf.last_run.id


async def _set_stopped_by(db: str, run_id: str, owner: str) -> None:
    async with await Store.open(db) as store, store.engine.begin() as conn:
        await conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(stopped_by=owner))


async def _row(db: str, run_id: str) -> tuple[str, str | None, str | None]:
    async with await Store.open(db) as store:
        row = await store.get_run(run_id)
    assert row is not None
    return row.status.value, row.stopped_by, row.lease_owner


async def test_an_interrupted_run_whose_process_is_gone_is_resumed_paying_nothing_twice(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hang = Hang()
    wf = _workflow(db_url, f"stopped-{unique}", hang)
    stopped = await _interrupted(wf, hang)
    status, stopper, lease = await _row(db_url, stopped)
    assert status == "cancelled" and lease is None
    assert stopper is not None and stopper.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    paid_before = paid_by_run(fake_providers)[stopped]
    assert sum(paid_before.values()) == N  # every item paid once, 4 of them left hanging

    dead = dead_owner()  # as if this process were the kernel that was restarted
    await _set_stopped_by(db_url, stopped, dead)
    hang.on = False
    run = await wf.run(params={"n": N}, display="text")
    assert run.id == stopped and run.status == "completed"
    assert len(run.results["ask"]) == N
    out = capsys.readouterr().out
    assert f"resuming run {stopped} of {wf.name!r}, left unfinished by {dead} (" in out
    assert paid_by_run(fake_providers) == {stopped: Counter({f"item {i}": 1 for i in range(N)})}
    status, stopper, lease = await _row(db_url, stopped)
    assert (status, stopper, lease) == ("completed", None, None)  # stopped_by cleared

    again = await wf.run(params={"n": N}, display=False)  # finished: a new run now
    assert again.id != stopped


async def test_an_interrupted_run_is_not_resumed_in_the_process_that_stopped_it(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Interrupt, then run the cell again in the same kernel: a new run (as today); and
    once that process is gone (restarted later), the newer run of the kind wins: the
    interrupted one stays as it is."""
    caplog.set_level(logging.INFO, logger="baton_nb")
    hang = Hang()
    wf = _workflow(db_url, f"here-{unique}", hang)
    stopped = await _interrupted(wf, hang)
    hang.on = False
    second = await wf.run(params={"n": N}, display=False)
    assert second.id != stopped and second.status == "completed"
    assert "resuming run" not in caplog.text

    await _set_stopped_by(db_url, stopped, dead_owner())  # that kernel restarted since
    third = await wf.run(params={"n": N}, display=False)
    assert third.id not in (stopped, second.id) and "resuming run" not in caplog.text
    assert (await _row(db_url, stopped))[0] == "cancelled"
    paid = paid_by_run(fake_providers)
    for run_id in (stopped, second.id, third.id):
        assert paid[run_id] == Counter({f"item {i}": 1 for i in range(N)})


@pytest.mark.parametrize("how", ["run.cancel", "budget", "stopper-on-another-host"])
async def test_a_run_stopped_otherwise_is_never_resumed(
    fake_providers: FakeProviderServer, db_url: str, unique: str, how: str
) -> None:
    hang = Hang()
    wf = _workflow(db_url, f"never-{how}-{unique}", hang)
    if how == "run.cancel":
        hang.cancel_at = 2
        first = await wf.run(params={"n": N}, concurrency=CONCURRENCY, display=False)
    elif how == "budget":
        first = await wf.run(params={"n": N}, budget="0", display=False)
    else:
        stopped = await _interrupted(wf, hang)
        await _set_stopped_by(db_url, stopped, "elsewhere:4242:cafebabe")  # alive or not: unknown
        first = await bn.Run.load(stopped, db=db_url)
    assert first.status == "cancelled"
    status, stopper, _ = await _row(db_url, first.id)
    assert status == "cancelled"
    assert (stopper is None) is (how != "stopper-on-another-host")
    hang.on = False
    run = await wf.run(params={"n": N}, display=False)
    assert run.id != first.id and run.status == "completed"
    assert (await _row(db_url, first.id))[0] == "cancelled"  # left as it was


async def test_a_stopped_run_being_resumed_elsewhere_raises_run_locked(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Two kernels re-run the cell after a restart: the one that found the lease of the
    stopped run taken (by a live process) neither resumes it too nor starts a new run."""
    hang = Hang()
    wf = _workflow(db_url, f"twice-{unique}", hang)
    stopped = await _interrupted(wf, hang)
    await _set_stopped_by(db_url, stopped, dead_owner())
    alive = f"{socket.gethostname()}:{os.getppid()}:cafebabe"
    async with await Store.open(db_url) as store, store.engine.begin() as conn:
        await conn.execute(sa.update(RUNS).where(RUNS.c.id == stopped).values(lease_owner=alive))
    with pytest.raises(bn.RunLocked, match=f"would have resumed run {stopped}") as info:
        await wf.run(params={"n": N}, display=False)
    assert info.value.owner == alive
    async with await Store.open(db_url) as store:
        assert [r.id for r in await store.list_runs(workflow=wf.name)] == [stopped]


async def test_the_stopped_by_column_is_added_to_a_database_of_schema_15(tmp_path: Path) -> None:
    """Migration 16 on a database made before it: the column added, old runs without it."""
    import sqlite3

    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"

    async def make() -> None:
        async with await Store.open(url):
            pass

    await make()
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE workflow_runs DROP COLUMN stopped_by")
    con.execute("DELETE FROM baton_schema_version WHERE version = 16")
    con.commit()
    con.close()
    await make()
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(workflow_runs)")]
    versions = {v for (v,) in con.execute("SELECT version FROM baton_schema_version")}
    con.close()
    assert "stopped_by" in columns and 16 in versions


async def test_a_resume_that_fails_before_executing_gives_the_lease_back(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A resume by run id of the stopped run with an edited workflow (one step more) fails
    (other steps) after taking the lease: the lease is given back, and the original cell,
    run again in this same live process, resumes the run (it was held by this process
    before, so never picked: a new run every time until this process exits)."""
    hang = Hang()
    wf = _workflow(db_url, f"edited-{unique}", hang)
    stopped = await _interrupted(wf, hang)
    await _set_stopped_by(db_url, stopped, dead_owner())
    edited = _workflow(db_url, wf.name, hang)

    @edited.step(deps=["ask"])
    async def extra(ctx: bn.Context) -> int:
        return 0

    with pytest.raises(bn.ConfigurationError, match="other steps than this workflow has"):
        await edited.run(run_id=stopped, display=False)
    status, _, lease = await _row(db_url, stopped)
    assert (status, lease) == ("cancelled", None)  # given back, the row as it was
    hang.on = False
    run = await wf.run(params={"n": N}, display=False)
    assert run.id == stopped and run.status == "completed"
    assert (await _row(db_url, stopped))[2] is None


async def test_a_stopped_run_whose_resumer_on_another_host_let_its_lease_expire_is_resumed(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resumer on another host took the stopped run's lease and vanished before it wrote
    anything: once its lease expired, the run is resumed as a ``running`` one would be
    (that holder can never be known dead from here); while it holds it, ``RunLocked``."""
    hang = Hang()
    wf = _workflow(db_url, f"lapsed-{unique}", hang)
    stopped = await _interrupted(wf, hang)
    dead = dead_owner()
    await _set_stopped_by(db_url, stopped, dead)
    elsewhere = "otherhost:4242:cafebabe"
    for expires, locked in ((timedelta(minutes=10), True), (-timedelta(hours=1), False)):
        async with await Store.open(db_url) as store, store.engine.begin() as conn:
            lease = {"lease_owner": elsewhere, "lease_expires_at": utcnow() + expires}
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == stopped).values(**lease))
        if locked:
            with pytest.raises(bn.RunLocked, match=f"would have resumed run {stopped}") as info:
                await wf.run(params={"n": N}, display=False)
            assert info.value.owner == elsewhere
    hang.on = False
    caplog.set_level(logging.INFO, logger="baton_nb")
    run = await wf.run(params={"n": N}, display=False)
    assert run.id == stopped and run.status == "completed"
    assert f"left unfinished by {dead} (" in caplog.text  # who stopped it, not the resumer
    assert paid_by_run(fake_providers) == {stopped: Counter({f"item {i}": 1 for i in range(N)})}


async def test_a_new_run_whose_start_fails_is_cancelled_not_left_running(
    db_url: str, unique: str
) -> None:
    """A start that fails after the run's row is stored (``on_start``: the display; an
    interrupt there) ends the run as an interrupt does: ``cancelled``, stopped by this
    execution, its lease given back. It was left ``running`` with no owner: listed as
    alive for ever, and resumed by the same live process as if its owner were gone."""
    from baton_nb.runtime import execute_run

    wf = bn.Workflow(f"failed-start-{unique}", db=db_url)

    @wf.step()
    async def a(ctx: bn.Context) -> int:
        return 1

    def boom(run: bn.Run) -> None:
        raise RuntimeError("the display failed")

    with pytest.raises(RuntimeError, match="display failed"):
        await execute_run(
            wf.graph(),
            params={},
            run_id=None,
            db=db_url,
            concurrency=4,
            models=None,
            on_start=boom,
            resume_unfinished=True,
        )
    [listed] = await bn.runs(db_url, workflow=wf.name)
    assert listed.status == "cancelled" and not listed.abandoned
    status, stopped_by, lease = await _row(db_url, listed.id)
    assert (status, lease) == ("cancelled", None) and stopped_by is not None
    again = await wf.run(display=False)  # this process is alive: a new run, as after ^C
    assert again.id != listed.id and again.status == "completed"
