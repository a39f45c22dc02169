"""``bn.prune`` (seed "Data retention") on SQLite and on the real Postgres server.

Each test gets a database of its own (a temp file; a scratch database on the Postgres
server), so counts per table are exact whatever else runs at the same time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb._errors import ConfigurationError
from baton_nb.store import PRUNE_TABLES, Store

pytestmark = pytest.mark.anyio

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
MODEL = "mock/gpt-4o-mini"


async def _admin(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_SERVER + "/postgres")
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.fixture(params=["sqlite", "postgres"])
def prune_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'prune.db'}"
        return
    name = f"baton_prune_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"Postgres is not running on 127.0.0.1:5432: {exc}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def workflow(db: str, name: str, *, fail: bool = False, gate: Any = None) -> bn.Workflow:
    """Steps with LLM calls (one batched map), debug capture and a budget: rows in every
    table."""
    wf = bn.Workflow(name, db=db, debug=True, budget="100")

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        ctx.log("asking")
        if gate is not None:
            gate["started"].set()
            await gate["release"].wait()
        question = f"question of {ctx.run_id}"
        return (await ctx.complete(model=MODEL, prompt=question, max_tokens=100)).text

    @wf.step(deps=["ask"], max_attempts=1)
    async def check(ctx: bn.Context) -> str:
        text = (await ctx.complete(model=MODEL, prompt="check it", max_tokens=100)).text
        if fail:
            raise RuntimeError("check failed")
        return text

    @wf.step(deps=["ask"], backoff=lambda attempt: 0.0)
    async def retried(ctx: bn.Context) -> str:  # a failed attempt: a workflow_attempts row
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return "ok"

    @wf.step(deps=["ask"])
    async def parts(ctx: bn.Context) -> list[str]:
        return ["one", "two"]

    @wf.step(map_over="parts", batch=True)  # a provider batch: its rows are the run's too
    async def batched(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt=f"part {ctx.item}")).text

    return wf


async def rows_of(db: str, run_id: str) -> dict[str, int]:
    async with await Store.open(db) as store, store.engine.connect() as conn:
        out = {}
        for name in PRUNE_TABLES:
            table = sa.table(name, sa.column("id"), sa.column("run_id"))
            column = table.c.id if name == "workflow_runs" else table.c.run_id
            query = sa.select(sa.func.count()).select_from(table).where(column == run_id)
            out[name] = int((await conn.execute(query)).scalar_one())
        return out


async def totals(db: str) -> dict[str, int]:
    async with await Store.open(db) as store, store.engine.connect() as conn:
        return {
            name: int((await conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}"))).scalar_one())
            for name in PRUNE_TABLES
        }


async def shift(db: str, run_id: str, days: float, **values: Any) -> None:
    """Move a run's timestamps ``days`` into the past; set other columns as given."""
    table = bn.store.WorkflowRun.__table__  # type: ignore[attr-defined]
    delta = timedelta(days=days)
    async with await Store.open(db) as store, store.engine.begin() as conn:
        row = (await conn.execute(sa.select(table).where(table.c.id == run_id))).mappings().one()
        moved = {
            k: row[k] - delta
            for k in ("created_at", "started_at", "finished_at")
            if row[k] is not None
        }
        await conn.execute(sa.update(table).where(table.c.id == run_id).values(**moved, **values))


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] + b[k] for k in a}


async def test_prune_deletes_old_finished_runs_only(prune_db: str) -> None:
    db = prune_db
    old_ok = await workflow(db, "keep-tidy").run(display=False)
    old_failed = await workflow(db, "keep-tidy", fail=True).run(display=False)
    leased = await workflow(db, "keep-tidy", fail=True).run(display=False)
    recent = await workflow(db, "keep-tidy").run(display=False)
    assert (old_ok.status, old_failed.status, recent.status) == ("completed", "failed", "completed")
    await shift(db, old_ok.id, 10)
    await shift(db, old_failed.id, 30)
    # an old failed run that another process is resuming right now: a live lease
    live = datetime.now(timezone.utc) + timedelta(hours=1)
    await shift(db, leased.id, 30, lease_owner="elsewhere:1:abc", lease_expires_at=live)
    before = {r.id: await rows_of(db, r.id) for r in (old_ok, old_failed, leased, recent)}
    assert all(n > 0 for n in before[old_ok.id].values()), before[old_ok.id]
    expected = add(before[old_ok.id], before[old_failed.id])

    gate = {"started": anyio.Event(), "release": anyio.Event()}
    running: dict[str, bn.Run] = {}

    async def run_slow() -> None:
        running["run"] = await workflow(db, "slow", gate=gate).run(display=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_slow)
        await gate["started"].wait()
        slow_id = (await bn.runs(db, workflow="slow"))[0].id
        await shift(db, slow_id, 60)  # started long ago, still running
        slow_before = await rows_of(db, slow_id)

        dry = await bn.prune(db, older_than=timedelta(days=7), dry_run=True)
        assert dry.dry_run and dry.deleted == expected, (dry.deleted, expected)
        for run in (old_ok, old_failed, leased, recent):
            assert await rows_of(db, run.id) == before[run.id]  # a dry run deletes nothing

        result = await bn.prune(db, older_than="7d", batch_size=1)
        assert result.deleted == expected and result.runs == 2
        assert not result.dry_run and "deleted 2 runs" in str(result)
        slow_after = await rows_of(db, slow_id)  # still running: it may have written more
        assert slow_after["workflow_runs"] == 1
        assert all(slow_after[t] >= n for t, n in slow_before.items()), (slow_before, slow_after)
        gate["release"].set()

    assert running["run"].status == "completed"
    assert (await bn.Run.load(slow_id, db=db)).results["check"]
    for gone in (old_ok, old_failed):
        assert set((await rows_of(db, gone.id)).values()) == {0}
        with pytest.raises(bn.RunNotFound):
            await bn.Run.load(gone.id, db=db)
    assert await rows_of(db, leased.id) == before[leased.id]
    assert await rows_of(db, recent.id) == before[recent.id]
    kept = [await rows_of(db, i) for i in (leased.id, recent.id, slow_id)]
    assert await totals(db) == add(add(kept[0], kept[1]), kept[2])  # no orphan rows anywhere
    again = await bn.prune(db, older_than=timedelta(days=7))
    assert again.total == 0


async def test_debug_logs_get_a_shorter_max_age(prune_db: str) -> None:
    db = prune_db
    run = await workflow(db, "logs").run(display=False)
    other = await workflow(db, "logs").run(display=False)
    before = await rows_of(db, run.id)
    logs = bn.store.WorkflowDebugLog.__table__  # type: ignore[attr-defined]
    async with await Store.open(db) as store, store.engine.begin() as conn:
        when = datetime.now(timezone.utc) - timedelta(days=2)
        await conn.execute(sa.update(logs).where(logs.c.run_id == run.id).values(created_at=when))

    dry = await bn.prune(db, older_than=None, debug_log_max_age="24h", dry_run=True)
    assert dry.deleted["workflow_debug_logs"] == before["workflow_debug_logs"] > 0
    assert dry.total == before["workflow_debug_logs"]
    result = await bn.prune(db, older_than=timedelta(days=7), debug_log_max_age=timedelta(hours=24))
    assert result.deleted == {**dict.fromkeys(PRUNE_TABLES, 0), "workflow_debug_logs": dry.total}
    assert await rows_of(db, run.id) == {**before, "workflow_debug_logs": 0}
    assert (await rows_of(db, other.id))["workflow_debug_logs"] > 0
    assert (await bn.Run.load(run.id, db=db)).status == "completed"


async def test_dry_run_counts_runs_and_old_logs_once(prune_db: str) -> None:
    db = prune_db
    run = await workflow(db, "count").run(display=False)
    await shift(db, run.id, 10)
    before = await rows_of(db, run.id)
    dry = await bn.prune(db, older_than="7d", debug_log_max_age="0s", dry_run=True)
    assert dry.deleted == before  # the run's logs are old too: counted once
    assert await rows_of(db, run.id) == before
    done = await bn.prune(db, older_than="7d", debug_log_max_age="0s")
    assert done.deleted == before


async def test_prune_rejects_bad_arguments(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="nothing to prune"):
        await bn.prune(sqlite_url, older_than=None)
    with pytest.raises(ConfigurationError, match="must not be negative"):
        await bn.prune(sqlite_url, older_than=timedelta(days=-1))
    with pytest.raises(ConfigurationError, match="invalid duration"):
        await bn.prune(sqlite_url, older_than="seven days")
    with pytest.raises(ConfigurationError, match="batch_size"):
        await bn.prune(sqlite_url, batch_size=0)
    empty = await bn.prune(sqlite_url)
    assert empty.total == 0 and empty.cutoff is not None


async def test_prune_in_a_shared_database(db_url: str, unique: str) -> None:
    """On the shared test database (other tests' runs around): only runs from an era no
    other test uses are old enough, and exactly those go."""
    ancient = await workflow(db_url, f"ancient-{unique}").run(display=False)
    recent = await workflow(db_url, f"ancient-{unique}").run(display=False)
    await shift(db_url, ancient.id, 365 * 40)
    before = await rows_of(db_url, ancient.id)
    kept = await rows_of(db_url, recent.id)
    result = await bn.prune(db_url, older_than=timedelta(days=365 * 39))
    assert all(result.deleted[t] >= n for t, n in before.items()), (result.deleted, before)
    assert set((await rows_of(db_url, ancient.id)).values()) == {0}
    assert await rows_of(db_url, recent.id) == kept
