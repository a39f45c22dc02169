"""Names without a length cap, stored the same on SQLite and Postgres.

Step names, model names, map keys (known only mid-run) and params of any length run,
replay, load, report and resume on both databases; workflow names and run ids (keys of
the run indexes) are capped at 500 characters, refused before anything is written.
Migration 3 turns an existing Postgres database's VARCHAR(n) columns into TEXT and its
step and model indexes into md5 indexes that still serve their lookups.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.store import Store
from baton_nb.store._migrations import MIGRATIONS
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio

PG_SERVER = POSTGRES_URL.rsplit("/", 1)[0]
V2_SCHEMA = Path(__file__).parent.parent / "data" / "postgres_schema_v2.sql"
# Incompressible text with 1- to 4-byte UTF-8 characters: a btree entry holds at most
# 2704 bytes on Postgres even after compression, so these exceed it several times over.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éßλж€中😀"


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


async def test_long_names_run_replay_load_report_and_resume(db_url: str) -> None:
    rng = random.Random(7)
    step = "s" + text(rng, 5000)
    model = "mock/" + text(rng, 4000)
    keys = [text(rng, 6000), text(rng, 6000)]
    workflow_name = "w" + text(rng, 499)
    run_id = uuid.uuid4().hex + text(rng, 468)  # 500 characters, new on every test run
    params = {"note": text(rng, 50_000)}
    fail = {"on": True}
    wf = bn.Workflow(workflow_name, db=db_url, debug=True)

    @wf.step(step)
    async def items(ctx: bn.Context) -> list[str]:
        return keys

    @wf.step(map_over=step, map_key=lambda item: item, max_attempts=1)
    async def each(ctx: bn.Context) -> str:
        reply = await ctx.complete(
            model=model,
            messages=[{"role": "user", "content": ctx.item[:50]}],
            price_as="gpt-4o-mini",
        )
        ctx.log("called")
        if fail["on"] and ctx.item == keys[1]:
            raise RuntimeError("fail after the call, so that a resume replays it")
        return reply.text[:5]

    @wf.step(models=[model], deps=[])
    async def fan(ctx: bn.Context) -> str:
        assert ctx.model == model
        return "ok"

    first = await wf.run(params=params, run_id=run_id, display=False)
    assert first.status == "failed", first.failed_steps
    assert first.id == run_id
    children = [f"each[{k}]" for k in keys]
    states = {n[:12]: (s.state, (s.error or "")[:80]) for n, s in first.steps.items()}
    assert children[1] in first.failed_steps, states
    assert children[1] in {c.step for c in first.calls}, states

    fail["on"] = False
    resumed = await wf.run(run_id=run_id, display=False)
    assert resumed.status == "completed", {n: s.error for n, s in resumed.steps.items()}
    replayed = [c for c in resumed.calls if c.replayed]
    assert {c.step for c in replayed} == {children[1]}  # found by its (run, step) lookup
    assert resumed.results[f"fan[{model}]"] == "ok"

    loaded = await bn.Run.load(run_id, db=db_url)
    assert loaded.params == params and loaded.workflow == workflow_name
    assert set(loaded.steps) == {step, "each", *children, "fan", f"fan[{model}]"}
    assert [e["message"] for e in loaded.context(children[1]) if e["kind"] == "log"] == [
        "called",
        "called",
    ]
    report = await bn.report(run_ids=[run_id], db=db_url)
    assert {r.step for r in report.rows} == set(children)
    assert {r.model for r in report.rows} == {model}


async def test_workflow_name_and_run_id_over_500_characters_are_refused_first(
    db_url: str,
) -> None:
    with pytest.raises(bn.ConfigurationError, match=r"Workflow name is 501 characters long"):
        bn.Workflow("w" * 501, db=db_url)
    wf = bn.Workflow(f"capped-{uuid.uuid4().hex[:8]}", db=db_url)

    @wf.step()
    async def a(ctx: bn.Context) -> int:
        return 1

    with pytest.raises(bn.ConfigurationError, match=r"run_id is 501 characters long"):
        await wf.run(run_id="r" * 501, display=False)
    assert await bn.runs(db=db_url, workflow=wf.name) == []  # nothing was written
    run = await wf.run(run_id=uuid.uuid4().hex * 15 + "r" * 20, display=False)  # 500
    assert run.status == "completed"


# ── migrations 3-4 on a database made by the previous schema ────────────────────


async def _admin(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_SERVER + "/postgres")
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.fixture
def v2_database() -> Iterator[str]:
    """A scratch Postgres database holding the schema version 2 tables and one old run."""
    import asyncpg

    name = f"baton_v2_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"Postgres is not running at {PG_SERVER}: {exc}")

    async def load() -> None:
        con = await asyncpg.connect(f"{PG_SERVER}/{name}")
        try:
            await con.execute(V2_SCHEMA.read_text(encoding="utf-8"))
            await con.execute(
                "INSERT INTO baton_schema_version VALUES (1, now()), (2, now());"
                "INSERT INTO workflow_runs (id, workflow, params, status, created_at, "
                "failed_steps, executions) VALUES ('old', 'legacy', '{}', 'completed', now(), "
                "'[]', 1);"
                "INSERT INTO workflow_nodes (run_id, step, kind, worker, deps, remaining_deps, "
                "ignore_cancelled, ignore_discarded, max_attempts, state, attempt, result, "
                "has_result, updated_at) VALUES ('old', 'a', 'step', 'm.a', '[]', 0, false, "
                "false, 1, 'completed', 1, '1', true, now())"
            )
        finally:
            await con.close()

    asyncio.run(load())
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migration_3_unbounds_names_and_keeps_indexes_working(v2_database: str) -> None:
    store = await Store.open(v2_database)  # migrates
    try:
        async with store.connect() as conn:
            capped = await conn.execute(
                sa.text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND character_maximum_length "
                    "IS NOT NULL"
                )
            )
            assert capped.all() == []
            indexes = dict(
                (
                    await conn.execute(
                        sa.text(
                            "SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE schemaname = current_schema()"
                        )
                    )
                ).all()
            )
            versions = await conn.execute(sa.text("SELECT version FROM baton_schema_version"))
            assert sorted(v for (v,) in versions) == [v for v, _ in MIGRATIONS]
    finally:
        await store.close()
    assert "UNIQUE INDEX" in indexes["uq_workflow_nodes_run_step"]
    assert "md5(step)" in indexes["uq_workflow_nodes_run_step"]
    assert "md5(step)" in indexes["uq_workflow_completions_call"]
    assert "md5(model)" in indexes["ix_stats_run_step_model"]
    assert "md5(step)" in indexes["ix_logs_run_step"]

    old = await bn.Run.load("old", db=v2_database)  # the old run is intact
    assert old.status == "completed" and old.results == {"a": 1}

    rng = random.Random(3)
    long_step = "s" + text(rng, 4000)
    wf = bn.Workflow("after-migration", db=v2_database, debug=True)

    @wf.step(long_step)
    async def call(ctx: bn.Context) -> str:
        reply = await ctx.complete(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        ctx.log("logged")
        return reply.text[:3]

    run = await wf.run(display=False)
    assert run.status == "completed"
    # Uniqueness still holds, and the one-step lookups use the md5 indexes.
    store = await Store.open(v2_database)
    try:
        async with store.connect() as conn:
            node = {"id": run.id, "step": long_step}
            with pytest.raises(sa.exc.IntegrityError):
                async with conn.begin():
                    await conn.execute(
                        sa.text(
                            "INSERT INTO workflow_nodes (run_id, step, kind, worker, deps, "
                            "remaining_deps, ignore_cancelled, ignore_discarded, max_attempts, "
                            "state, attempt, has_result, updated_at) VALUES (:id, :step, 'step', "
                            "'', '[]', 0, false, false, 1, 'pending', 0, false, now())"
                        ),
                        node,
                    )
        async with store.connect() as conn:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            for table, index in (
                ("workflow_completions", "uq_workflow_completions_call"),
                ("workflow_debug_logs", "ix_logs_run_step"),
            ):
                plan = await conn.execute(
                    sa.text(
                        f"EXPLAIN SELECT * FROM {table} WHERE md5(step) = md5(:step) "
                        "AND step = :step AND run_id = :id"
                    ),
                    node,
                )
                assert index in " ".join(row[0] for row in plan), table
        assert len(await store.get_completions(run.id, long_step)) == 1
        assert len(await store.get_debug_logs(run.id, long_step)) >= 1
    finally:
        await store.close()
