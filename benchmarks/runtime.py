"""Durable overhead of the runtime (DESIGN §9): no-op steps, every state change stored.

    python benchmarks/runtime.py [--postgres URL] [--repeat 3]

Prints steps/s for a 1,000-step fan-out + join and a 300-step chain, on SQLite and
Postgres, beside a hand-written asyncio + aiosqlite floor doing the same durable writes
(run row + node rows in one transaction; each step's completion and its dependents'
counters committed before the dependents start), as ratios. Targets: fan-out >= 5,000
steps/s on SQLite and >= 0.5x the floor; chain >= 1,000 steps/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiosqlite

import baton_nb as bn

FANOUT, CHAIN = 1000, 300


async def noop(ctx: bn.Context) -> None:
    return None


def fanout_workflow(db: str) -> bn.Workflow:
    wf = bn.Workflow("bench-fanout", db=db)
    wf.add("root", noop)
    for i in range(FANOUT):
        wf.add(f"s{i}", noop, deps=["root"])
    wf.add("join", noop, deps=[f"s{i}" for i in range(FANOUT)])
    return wf


def chain_workflow(db: str) -> bn.Workflow:
    wf = bn.Workflow("bench-chain", db=db)
    for i in range(CHAIN):
        wf.add(f"c{i}", noop, deps=[f"c{i - 1}"] if i else [])
    return wf


async def time_baton(make: Any, db: str, steps: int) -> float:
    wf = make(db)
    start = time.perf_counter()
    run = await wf.run(display=False, concurrency=64)
    elapsed = time.perf_counter() - start
    assert run.status == "completed", run.failed_steps
    return steps / elapsed


# ── the floor: plain asyncio + aiosqlite, same durable writes, no framework ──

FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, status TEXT, params TEXT);
CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, run_id TEXT, step TEXT, deps TEXT,
  remaining INTEGER, state TEXT, attempt INTEGER, result TEXT, updated_at REAL);
"""


async def floor(path: str, deps: dict[str, list[str]]) -> float:
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(FLOOR_SCHEMA)
        start = time.perf_counter()
        run_id = uuid.uuid4().hex
        ids = {name: i for i, name in enumerate(deps, start=1)}
        offset = (await (await db.execute("SELECT COALESCE(MAX(id), 0) FROM nodes")).fetchone())[0]
        await db.execute("INSERT INTO runs VALUES (?, 'running', '{}')", (run_id,))
        await db.executemany(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, 'pending', 0, NULL, ?)",
            [
                (offset + ids[n], run_id, n, json.dumps(d), len(d), time.time())
                for n, d in deps.items()
            ],
        )
        await db.commit()
        dependents: dict[str, list[str]] = {n: [] for n in deps}
        for name, ds in deps.items():
            for d in ds:
                dependents[d].append(name)
        remaining = {n: len(d) for n, d in deps.items()}
        lock = asyncio.Lock()
        done = asyncio.Event()
        finished = 0

        tasks: set[asyncio.Task[None]] = set()

        def spawn(name: str) -> None:
            task = asyncio.create_task(run_step(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def run_step(name: str) -> None:
            nonlocal finished
            result = json.dumps(None)
            ready = []
            # One writer; each completion is committed before its dependents start.
            async with lock:
                await db.execute(
                    "UPDATE nodes SET state='completed', attempt=1, result=?, updated_at=?"
                    " WHERE id=?",
                    (result, time.time(), offset + ids[name]),
                )
                for child in dependents[name]:
                    remaining[child] -= 1
                    await db.execute(
                        "UPDATE nodes SET remaining=remaining-1 WHERE id=?", (offset + ids[child],)
                    )
                    if remaining[child] == 0:
                        ready.append(child)
                await db.commit()
            finished += 1
            for child in ready:
                spawn(child)
            if finished == len(deps):
                done.set()

        for name, ds in deps.items():
            if not ds:
                spawn(name)
        await done.wait()
        await db.execute("UPDATE runs SET status='completed' WHERE id=?", (run_id,))
        await db.commit()
        return len(deps) / (time.perf_counter() - start)


def fanout_deps() -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {"root": []}
    deps.update({f"s{i}": ["root"] for i in range(FANOUT)})
    deps["join"] = [f"s{i}" for i in range(FANOUT)]
    return deps


def chain_deps() -> dict[str, list[str]]:
    return {f"c{i}": [f"c{i - 1}"] if i else [] for i in range(CHAIN)}


def best(values: list[float]) -> float:
    return max(values)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    sqlite = f"sqlite:///{tmp / 'bench.db'}"
    await time_baton(chain_workflow, sqlite, CHAIN)  # warm up imports, schema, tiktoken-free
    rows = []
    for label, make, deps, steps, target in (
        (f"fan-out {FANOUT}+2", fanout_workflow, fanout_deps(), FANOUT + 2, 5000),
        (f"chain {CHAIN}", chain_workflow, chain_deps(), CHAIN, 1000),
    ):
        ours, floors = [], []
        for _ in range(args.repeat):  # paired: each of ours beside a floor run, same moment
            ours.append(await time_baton(make, sqlite, steps))
            floors.append(await floor(str(tmp / "floor.db"), deps))
        rows.append((label, "sqlite", best(ours), statistics.median(ours), best(floors), target))
        if not args.no_postgres:
            pg = [await time_baton(make, args.postgres, steps) for _ in range(args.repeat)]
            rows.append((label, "postgres", best(pg), statistics.median(pg), best(floors), None))
    print(
        f"{'workload':<18} {'db':<9} {'baton best':>11} {'median':>9} {'floor':>9} "
        f"{'ratio':>6} {'target':>8}  peers"
    )
    for label, db, ours_best, ours_median, floor_best, target in rows:
        ratio = ours_best / floor_best
        verdict = "" if target is None else ("ok" if ours_best >= target else "MISSED")
        print(
            f"{label:<18} {db:<9} {ours_best:>9.0f}/s {ours_median:>7.0f}/s {floor_best:>7.0f}/s "
            f"{ratio:>5.2f}x {target or '':>8} {verdict}  {peers()}"
        )


def peers() -> str:
    import importlib.util

    found = [p for p in ("langgraph", "dbos") if importlib.util.find_spec(p)]
    return (
        ", ".join(found) + " installed (not compared)" if found else "LangGraph/DBOS not installed"
    )


if __name__ == "__main__":
    asyncio.run(main())
