"""The runs of an event loop share one engine per Postgres database (``_shared_engines``):
no new connection after the first run, every connection closed as the loop ends, a
connection the server closed between runs replaced; SQLite keeps an engine per store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

import baton_nb as bn
from baton_nb.store import Store, _shared_engines
from tests.conftest import PG_SERVER, _admin, _postgres_up, _start_postgres


async def _noop(ctx: bn.Context) -> int:
    return 1


@pytest.fixture
def scratch_pg() -> Iterator[str]:
    """A database of its own (the test ends its connections), dropped at the end."""
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    name = f"baton_test_shared_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _workflow(db: str) -> bn.Workflow:
    wf = bn.Workflow("shared-engine", db=db)
    wf.add("a", _noop)
    wf.add("b", _noop, deps=["a"])
    return wf


def test_runs_of_a_loop_share_one_engine_closed_as_the_loop_ends(
    scratch_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    connect = asyncpg.connect

    async def counting(*args: Any, **kwargs: Any) -> Any:
        conn = await connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(asyncpg, "connect", counting)
    after_first: list[int] = []

    async def main() -> None:
        wf = _workflow(scratch_pg)
        for i in range(3):
            run = await wf.run(display=False, resume=False)
            assert run.status == "completed"
            assert run.results["b"] == 1
            if i == 0:
                after_first.append(len(opened))

    asyncio.run(main())
    assert after_first[0] >= 1
    assert len(opened) == after_first[0]  # the second and third runs connected nothing
    assert all(conn.is_closed() for conn in opened)  # disposed of as asyncio.run ended


def test_a_loop_closed_without_shutting_its_generators_down_closes_the_engine(
    scratch_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop of the caller's own (run_until_complete, then close(), no
    shutdown_asyncgens): the shared engine's connections are closed as it closes."""
    opened: list[Any] = []
    connect = asyncpg.connect

    async def counting(*args: Any, **kwargs: Any) -> Any:
        conn = await connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(asyncpg, "connect", counting)
    loop = asyncio.new_event_loop()
    try:
        wf = _workflow(scratch_pg)
        for _ in range(2):
            run = loop.run_until_complete(wf.run(display=False, resume=False))
            assert run.status == "completed"
        assert opened
        assert not any(conn.is_closed() for conn in opened)  # kept between runs
    finally:
        loop.close()
    assert all(conn.is_closed() for conn in opened)


@pytest.mark.anyio
async def test_a_pooled_connection_the_server_closed_is_replaced(scratch_pg: str) -> None:
    wf = _workflow(scratch_pg)
    assert (await wf.run(display=False, resume=False)).status == "completed"
    admin = await asyncpg.connect(scratch_pg)
    try:  # the server ends every other connection to the database (a restart, an admin)
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert ended >= 1
    await anyio.sleep(0.2)  # the clients see their connections end
    run = await wf.run(display=False, resume=False)
    assert run.status == "completed"
    assert run.results["b"] == 1


def test_a_dead_pooled_connection_unseen_by_the_driver_is_replaced_at_open(
    scratch_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection the server ended with the driver not knowing yet (a NAT dropping an
    idle kernel's connection; a kill not yet read): the run's first statement fails as a
    disconnect, and the store opens again once on a new shared engine."""
    # The checkout's check (the driver saw the connection close) finds nothing.
    monkeypatch.setattr(_shared_engines, "_alive", lambda *args: None)

    async def main() -> list[str]:
        wf = _workflow(scratch_pg)
        statuses = [(await wf.run(display=False, resume=False)).status]
        admin = await asyncpg.connect(scratch_pg)
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert ended >= 1
        await anyio.sleep(0.2)
        for _ in range(2):
            run = await wf.run(display=False, resume=False)
            statuses.append(run.status)
            assert run.results["b"] == 1
        return statuses

    assert asyncio.run(main()) == ["completed"] * 3


@pytest.mark.anyio
async def test_many_runs_at_once_on_one_shared_engine(scratch_pg: str) -> None:
    """Sixteen runs at once, each holding its writer's connection and taking another for
    its map's children and its end: one run has the shared engine, the others engines of
    their own (on one pool of 15 they waited on each other until its timeout)."""
    wf = bn.Workflow("shared-engine-many", db=scratch_pg)
    started = {"runs": 0, "wait": False}
    everyone = anyio.Event()

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        started["runs"] += 1
        if started["runs"] == 16:
            everyone.set()
        if started["wait"]:  # every run holds its writer's connection before any goes on
            await everyone.wait()
        return [1, 2, 3]

    @wf.step(map_over="items")
    async def double(ctx: bn.Context) -> int:
        await anyio.sleep(0.3)  # every run holds its connections at the same time
        return 2 * int(ctx.item)

    assert (await wf.run(display=False)).status == "completed"  # the schema made first
    started.update(runs=0, wait=True)
    runs: list[bn.Run] = []

    async def one() -> None:
        runs.append(await wf.run(display=False, resume=False))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(one)
    assert [r.status for r in runs] == ["completed"] * 16
    assert all(r.results["double"] == [2, 4, 6] for r in runs)


@pytest.mark.anyio
async def test_one_store_at_a_time_has_the_shared_engine(scratch_pg: str) -> None:
    first = await Store.open(scratch_pg, shared=True)
    second = await Store.open(scratch_pg, shared=True)
    try:
        assert not first.owns_engine  # type: ignore[attr-defined]
        assert second.owns_engine  # type: ignore[attr-defined]  # first has the shared one
    finally:
        await second.close()
        await first.close()
    third = await Store.open(scratch_pg, shared=True)  # released: the shared one again
    try:
        assert not third.owns_engine  # type: ignore[attr-defined]
        assert third.engine is first.engine  # type: ignore[attr-defined]
    finally:
        await third.close()


@pytest.mark.anyio
async def test_a_sqlite_store_keeps_an_engine_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'own.db'}"
    first, second = await Store.open(url, shared=True), await Store.open(url, shared=True)
    try:
        assert first.owns_engine and second.owns_engine  # type: ignore[attr-defined]
        assert first.engine is not second.engine  # type: ignore[attr-defined]
    finally:
        await first.close()
        await second.close()
