"""Durable overhead of the runtime (DESIGN §9): no-op steps, every state change stored.

    python benchmarks/runtime.py [--postgres URL | --no-postgres] [--repeat 5]
                                 [--peer-repeat N] [--no-peers] [--peer-defaults]
                                 [--map-sizes 10000,100000 | --map-sizes ""]

Prints steps/s for a 1,000-step fan-out + join and a 300-step chain, on SQLite and
Postgres, beside a hand-written asyncio + aiosqlite floor doing the same durable writes
(run row + node rows in one transaction; each step's completion and its dependents'
counters committed before the dependents start), as ratios. Targets: fan-out >= 5,000
steps/s on SQLite and >= 0.5x the floor; chain >= 1,000 steps/s.

Where installed (``pip install 'baton-nb[bench]'``), the same workloads also run on
LangGraph (StateGraph + AsyncSqliteSaver) and DBOS (SQLite system database), durably on
SQLite in the same temp dir, interleaved with baton_nb's runs; the table gives each
peer's steps/s and baton_nb / peer. They store different things per run (see
benchmarks/_peers.py); the output prints what each stored, read back from its database.

Scaling: a map step over 10,000 and 100,000 items (no-op children), on SQLite and
Postgres: the whole run's seconds and items/s, and the map expansion's seconds (from the
map step's start to its first child's start, read from the stored timestamps: the
children's names, the first chunk of their node rows inserted, its in-memory nodes built
and queued; the later chunks are stored while the first children run).
Each cost grows linearly with the items: 10x the items should take about 10x the time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosqlite
from _peers import NAMES, PEERS, missing  # benchmarks/_peers.py

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


# ── scaling: one map step over many items ──


async def time_map(db: str, items: int) -> tuple[float, float]:
    """(run seconds, expansion seconds) of a run mapping ``items`` no-op children."""
    wf = bn.Workflow(f"bench-map-{items}", db=db)

    @wf.step()
    async def source(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="source")
    async def each(ctx: bn.Context) -> None:
        return None

    start = time.perf_counter()
    run = await wf.run(display=False, concurrency=64)
    elapsed = time.perf_counter() - start
    assert run.status == "completed", run.failed_steps
    group_started = run.steps["each"].started_at
    first_child = min(
        s.started_at for s in run.steps.values() if s.parent == "each" and s.started_at
    )
    assert group_started is not None
    return elapsed, (first_child - group_started).total_seconds()


async def map_rows(sizes: list[int], dbs: list[tuple[str, str]]) -> None:
    print(f"\n{'map items':<12} {'db':<8} {'run s':>8} {'items/s':>9} {'expand s':>9}")
    for items in sizes:
        for label, db in dbs:
            elapsed, expand = await time_map(db, items)
            print(
                f"{items:<12,} {label:<8} {elapsed:>8.2f} {items / elapsed:>9,.0f} {expand:>9.2f}"
            )


# ── peers (benchmarks/_peers.py): LangGraph and DBOS, where installed ──


async def open_peers(tmp: Path, shipped: bool) -> tuple[list[Any], dict[str, str]]:
    """The installed peers, opened and warmed up; a note for each one not compared."""
    opened, notes = [], {}
    for name in NAMES:
        if missing(name):
            notes[name] = "not installed (pip install 'baton-nb[bench]')"
            continue
        peer = PEERS[name](FANOUT, CHAIN, shipped=shipped)
        try:
            await peer.open(tmp)
            await peer.run("chain")  # warm up imports, schema, thread pools
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            notes[name] = f"not compared: {type(exc).__name__}: {exc}"
            await close_quietly(peer)
        else:
            opened.append(peer)
    return opened, notes


async def close_quietly(peer: Any) -> None:
    with contextlib.suppress(Exception):
        await peer.close()


def baton_persisted(path: Path, workflow: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows, results = db.execute(
            "SELECT COUNT(*), SUM(result IS NOT NULL) FROM workflow_nodes WHERE run_id = (SELECT id"
            " FROM workflow_runs WHERE workflow=? ORDER BY created_at DESC LIMIT 1)",
            (workflow,),
        ).fetchone()
    return f"1 run row + {rows} step rows ({results} with a stored result, JSON null)"


PEER_NOTES = {
    "langgraph": 'StateGraph of no-op nodes, AsyncSqliteSaver, durability="sync": one'
    " checkpoint per superstep (the fan-out is 3 supersteps) + each task's channel writes,"
    " one transaction per task; no per-node state or result rows (a node returning None"
    " stores only its edge-trigger writes).",
    "dbos": "async workflow of async @DBOS.step (fan-out: asyncio.gather), SQLite system"
    " database: one operation_outputs row per step, one transaction each, through a thread"
    " pool.",
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peer-repeat", type=int, help="runs per peer (default: --repeat)")
    parser.add_argument("--no-peers", action="store_true", help="skip LangGraph/DBOS")
    parser.add_argument(
        "--map-sizes",
        default="10000,100000",
        help="items of the map scaling rows, comma-separated ('' to skip)",
    )
    parser.add_argument(
        "--peer-defaults",
        action="store_true",
        help="peers on their own SQLite settings, not baton_nb's WAL + synchronous=NORMAL",
    )
    args = parser.parse_args()
    peer_repeat = args.repeat if args.peer_repeat is None else args.peer_repeat
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    sqlite = f"sqlite:///{tmp / 'bench.db'}"
    await time_baton(chain_workflow, sqlite, CHAIN)  # warm up imports, schema, tiktoken-free
    peers, notes = ([], {}) if args.no_peers else await open_peers(tmp, args.peer_defaults)
    stored: dict[str, list[str]] = {name: [] for name in ("baton_nb", *NAMES)}
    rows = []
    for key, label, make, deps, steps, target in (
        ("fanout", f"fan-out {FANOUT}+2", fanout_workflow, fanout_deps(), FANOUT + 2, 5000),
        ("chain", f"chain {CHAIN}", chain_workflow, chain_deps(), CHAIN, 1000),
    ):
        ours, floors = [], []
        theirs: dict[str, list[float]] = {name: [] for name in NAMES}
        for i in range(max(args.repeat, peer_repeat)):
            # paired: each of ours beside a floor run and the peers' runs, same moment
            if i < args.repeat:
                ours.append(await time_baton(make, sqlite, steps))
                floors.append(await floor(str(tmp / "floor.db"), deps))
            for peer in list(peers) if i < peer_repeat else []:
                try:
                    theirs[peer.name].append(await peer.run(key))
                except Exception as exc:  # reported in the notes, the others go on
                    notes[peer.name] = f"not compared: {type(exc).__name__}: {exc}"
                    peers.remove(peer)
                    await close_quietly(peer)
        what = label.split()[0]
        stored["baton_nb"].append(f"{what} {baton_persisted(tmp / 'bench.db', make(sqlite).name)}")
        for peer in peers:
            stored[peer.name].append(f"{what} {await peer.persisted(key)}")
        peer_best = {name: max(v) for name, v in theirs.items() if v and name not in notes}
        rows.append(
            (label, "sqlite", best(ours), statistics.median(ours), best(floors), target, peer_best)
        )
        if not args.no_postgres:
            pg = [await time_baton(make, args.postgres, steps) for _ in range(args.repeat)]
            rows.append(
                (label, "postgres", best(pg), statistics.median(pg), best(floors), None, None)
            )
    for peer in peers:
        await close_quietly(peer)
    compared = list(peers)

    peer_head = "".join(f" {name:>10} {'x':>5}" for name in NAMES)
    print(
        f"{'workload':<15} {'db':<8} {'baton best':>10} {'median':>8} {'floor':>8} "
        f"{'x':>5} {'target':>6}       {peer_head}"
    )
    for label, db, ours_best, ours_median, floor_best, target, peer_best in rows:
        # Judged on the median: a target met only by the luckiest run is not met.
        verdict = "" if target is None else ("ok" if ours_median >= target else "MISSED")
        cells = ""
        for name in NAMES:
            if peer_best is None:
                cells += f" {'(sqlite)':>10} {'':>5}"
            elif name in peer_best:
                cells += f" {peer_best[name]:>8.0f}/s {ours_best / peer_best[name]:>4.2f}x"
            else:
                cells += f" {'-':>10} {'':>5}"
        print(
            f"{label:<15} {db:<8} {ours_best:>8.0f}/s {ours_median:>6.0f}/s {floor_best:>6.0f}/s "
            f"{ours_best / floor_best:>4.2f}x {target or '':>6} {verdict:<6}{cells}"
        )
    settings = (
        "each on its own SQLite settings"
        if args.peer_defaults
        else "on baton_nb's SQLite settings (WAL, synchronous=NORMAL)"
    )
    print(
        f"\nsteps/s, best of {args.repeat} (baton_nb, floor) and of {peer_repeat} (peers), runs"
        " interleaved; x = baton_nb best / floor best or / peer best (> 1: baton_nb faster);"
        " target judged on baton_nb's median."
        f"\nPeers run on SQLite only, durably, in the same temp dir, {settings}."
        "\nStored per run (read back from each database after its last run):"
        f"\n  baton_nb: {'; '.join(stored['baton_nb'])}. State, attempt, result, timestamps"
        " and dependents' counters per step; group-committed, a dependent starts after its"
        " dependencies' completion committed."
    )
    for name in NAMES:
        if name in notes:
            print(f"  {name}: {notes[name]}")
        elif stored[name]:  # compared (--no-peers compares none)
            print(f"  {name} {version(name)}: {'; '.join(stored[name])}. {PEER_NOTES[name]}")
    sizes = [f"baton_nb {mb(tmp / 'bench.db')} for {1 + 2 * args.repeat} runs"]
    sizes += [f"{p.name} {mb(p.path)} for {1 + 2 * peer_repeat} runs" for p in compared]
    print(f"SQLite files at the end (incl. one warm-up chain): {', '.join(sizes)}.")
    sizes_wanted = [int(n) for n in args.map_sizes.split(",") if n.strip()]
    if sizes_wanted:
        dbs = [("sqlite", f"sqlite:///{tmp / 'map.db'}")]
        dbs += [] if args.no_postgres else [("postgres", args.postgres)]
        await map_rows(sizes_wanted, dbs)
    shutil.rmtree(tmp, ignore_errors=True)


def mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


if __name__ == "__main__":
    asyncio.run(main())
