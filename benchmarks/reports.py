"""Reports and run listings over a big history: 10,000 runs, 1,000,000 LLM-call rows.

    python benchmarks/reports.py                 # SQLite in a temp file
    python benchmarks/reports.py --postgres      # also Postgres (a scratch database)
    python benchmarks/reports.py --runs 1000 --calls 100   # smaller

Seeds the tables with bulk inserts (executemany / COPY in big batches), then times
``bn.report`` and ``bn.runs`` beside a floor: the same GROUP BY written by hand and run on
the raw driver (sqlite3 / asyncpg), summing cost as a float. Prints seconds and the
ratio baton_nb / floor (1.0 = as fast as the hand-written query; higher = slower).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import baton_nb as bn
from baton_nb.store import Store

STEPS = ("fetch", "answer[openai/gpt-4o-mini]", "answer[anthropic/claude-haiku-4-5]", "merge")
MODELS = {
    "fetch": None,
    "answer[openai/gpt-4o-mini]": "openai/gpt-4o-mini",
    "answer[anthropic/claude-haiku-4-5]": "anthropic/claude-haiku-4-5",
    "merge": "openai/gpt-4o-mini",
}
CALL_STEPS = [s for s in STEPS if MODELS[s]]
WORKFLOWS = 10
BATCH = 50_000
PG_URL = "postgresql://postgres@127.0.0.1:5432/baton_bench_reports"


# ── synthetic history ─────────────────────────────────────────────────────────


def _ts(when: datetime, sqlite: bool) -> Any:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else when


def run_rows(n: int, start: datetime, sqlite: bool) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        created = start + timedelta(seconds=30 * i)
        status = "failed" if i % 50 == 0 else "completed"
        rows.append(
            (
                f"run{i:06d}",
                f"wf{i % WORKFLOWS}",
                "{}",
                status,
                _ts(created, sqlite),
                _ts(created, sqlite),
                _ts(created + timedelta(seconds=20), sqlite),
                "[]",
                1,
            )
        )
    return rows


def node_rows(n: int, start: datetime, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        when = _ts(start + timedelta(seconds=30 * i), sqlite)
        for step in STEPS:
            kind = "child" if "[" in step else "step"
            parent = step.split("[")[0] if kind == "child" else None
            yield (
                f"run{i:06d}",
                step,
                parent,
                kind,
                MODELS[step],
                "completed",
                1,
                when,
                *NODE_FIXED,
            )
        yield (f"run{i:06d}", "answer", None, "group", None, "completed", 0, when, *NODE_FIXED)


def stat_rows(n: int, calls: int, start: datetime, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(7)
    for i in range(n):
        when = start + timedelta(seconds=30 * i)
        for c in range(calls):
            step = CALL_STEPS[c % len(CALL_STEPS)]
            model = MODELS[step]
            assert model is not None
            inp, out = rnd.randint(50, 4000), rnd.randint(10, 800)
            cost = Decimal(inp * 15 + out * 60) / Decimal(100_000_000)
            replayed = c % 97 == 0
            yield (
                f"run{i:06d}",
                step,
                model,
                model.split("/")[0],
                1,
                c,
                inp,
                0,
                0,
                out,
                0,
                format(cost, "f") if sqlite else cost,
                rnd.uniform(100, 900),
                replayed,
                False,
                _ts(when, sqlite),
            )


RUN_COLS = (
    "id, workflow, params, status, created_at, started_at, finished_at, failed_steps, executions"
)
NODE_COLS = (
    "run_id, step, parent, kind, model, state, attempt, updated_at, worker, deps, "
    "remaining_deps, ignore_cancelled, ignore_discarded, max_attempts, has_result"
)
NODE_FIXED = ("bench.step", "[]", 0, False, False, 3, True)
STAT_COLS = (
    "run_id, step, model, provider, attempt, call_index, input_tokens, cached_input_tokens, "
    "cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, replayed, "
    "estimated, created_at"
)


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def seed_sqlite(path: str, runs: int, calls: int, start: datetime) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.executemany(
            f"INSERT INTO workflow_runs ({RUN_COLS}) VALUES ({', '.join('?' * 9)})",
            run_rows(runs, start, True),
        )
        for batch in _batches(node_rows(runs, start, True)):
            con.executemany(
                f"INSERT INTO workflow_nodes ({NODE_COLS}) VALUES ({', '.join('?' * 15)})", batch
            )
        for batch in _batches(stat_rows(runs, calls, start, True)):
            con.executemany(
                f"INSERT INTO workflow_step_stats ({STAT_COLS}) VALUES ({', '.join('?' * 16)})",
                batch,
            )
    con.execute("ANALYZE")
    con.close()


async def seed_postgres(url: str, runs: int, calls: int, start: datetime) -> None:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        await con.copy_records_to_table(
            "workflow_runs", records=run_rows(runs, start, False), columns=RUN_COLS.split(", ")
        )
        for batch in _batches(node_rows(runs, start, False)):
            await con.copy_records_to_table(
                "workflow_nodes", records=batch, columns=NODE_COLS.split(", ")
            )
        for batch in _batches(stat_rows(runs, calls, start, False)):
            await con.copy_records_to_table(
                "workflow_step_stats", records=batch, columns=STAT_COLS.split(", ")
            )
        await con.execute("ANALYZE")
    finally:
        await con.close()


# ── floors: the same aggregation by hand on the raw driver ───────────────────

FLOOR_REPORT = """
SELECT s.run_id, r.workflow, s.step, s.model, MAX(s.provider),
  SUM(CASE WHEN s.replayed THEN 0 ELSE 1 END),
  SUM(CASE WHEN s.replayed THEN 0 ELSE s.input_tokens END),
  SUM(CASE WHEN s.replayed THEN 0 ELSE s.output_tokens END),
  SUM(CASE WHEN s.replayed THEN 0 ELSE CAST(s.cost_usd AS REAL) END),
  SUM(CASE WHEN s.replayed THEN 0 ELSE s.latency_ms END),
  SUM(CASE WHEN s.replayed THEN 1 ELSE 0 END)
FROM workflow_step_stats s JOIN workflow_runs r ON r.id = s.run_id
{where}
GROUP BY s.run_id, r.workflow, s.step, s.model
"""
FLOOR_RUNS = """
SELECT r.id, r.workflow, r.status, r.created_at, r.finished_at,
  (SELECT COUNT(*) FROM workflow_nodes n WHERE n.run_id = r.id AND n.kind <> 'group'),
  (SELECT SUM(CAST(cost_usd AS REAL)) FROM workflow_step_stats s
   WHERE s.run_id = r.id AND NOT s.replayed)
FROM workflow_runs r ORDER BY r.created_at DESC LIMIT 50
"""
FLOOR_RUNS_ALL = """
SELECT r.id, r.workflow, r.status, r.created_at, r.finished_at, n.steps, s.calls, s.tokens,
  s.cost
FROM workflow_runs r
LEFT JOIN (SELECT run_id, COUNT(*) AS steps FROM workflow_nodes WHERE kind <> 'group'
           GROUP BY run_id) n ON n.run_id = r.id
LEFT JOIN (SELECT run_id, SUM(CASE WHEN replayed THEN 0 ELSE 1 END) AS calls,
             SUM(CASE WHEN replayed THEN 0 ELSE input_tokens + output_tokens END) AS tokens,
             SUM(CASE WHEN replayed THEN 0 ELSE CAST(cost_usd AS REAL) END) AS cost
           FROM workflow_step_stats GROUP BY run_id) s ON s.run_id = r.id
ORDER BY r.created_at DESC
"""


def sqlite_floor(path: str, sql: str, *params: Any) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        def query() -> int:
            con = sqlite3.connect(path)
            try:
                return len(con.execute(sql.replace("$1", "?"), params).fetchall())
            finally:
                con.close()

        return await asyncio.to_thread(query)

    return run


def pg_floor(url: str, sql: str, *params: Any) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        import asyncpg

        con = await asyncpg.connect(url)
        try:
            return len(await con.fetch(re.sub(r"CAST\((\S+) AS REAL\)", r"\1", sql), *params))
        finally:
            await con.close()

    return run


# ── timing ────────────────────────────────────────────────────────────────────


async def best_of(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _size(result: Any) -> int:
    if isinstance(result, int):
        return result
    return len(result.rows) if hasattr(result, "rows") else len(result)


async def measure(
    label: str,
    db: str,
    floor: Callable[[str, str], Callable[[], Awaitable[int]]],
    since: datetime,
    repeat: int,
    runs: int,
) -> None:
    picked = [f"run{i:06d}" for i in range(0, runs, max(runs // 10, 1))]
    cases: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[int]]]] = [
        (
            "report, all runs",
            lambda: bn.report(db),
            floor(FLOOR_REPORT.format(where=""), ""),
        ),
        (
            "report, one workflow",
            lambda: bn.report(db, workflow="wf3"),
            floor(FLOOR_REPORT.format(where="WHERE r.workflow = 'wf3'"), ""),
        ),
        (
            "report, last 10% (since)",
            lambda: bn.report(db, since=since),
            floor(FLOOR_REPORT.format(where=f"WHERE r.created_at >= '{_lit(since, label)}'"), ""),
        ),
        (
            "report, 10 run ids",
            lambda: bn.report(db, run_ids=picked),
            floor(
                FLOOR_REPORT.format(
                    where="WHERE r.id IN (" + ", ".join(f"'{i}'" for i in picked) + ")"
                ),
                "",
            ),
        ),
        (
            "runs, newest 50",
            lambda: bn.runs(db, limit=50),
            floor(FLOOR_RUNS, ""),
        ),
        (
            "runs, all",
            lambda: bn.runs(db),
            floor(FLOOR_RUNS_ALL, ""),
        ),
    ]
    print(f"\n{label}")
    print(f"  {'query':<28} {'baton_nb':>10} {'floor':>10} {'ratio':>7} {'rows':>7}")
    for name, ours, base in cases:
        t_ours, result = await best_of(ours, repeat)
        t_floor, _ = await best_of(base, repeat)
        print(
            f"  {name:<28} {t_ours:>9.3f}s {t_floor:>9.3f}s {t_ours / t_floor:>6.2f}x "
            f"{_size(result):>7}"
        )


def _lit(when: datetime, label: str) -> str:
    if label.startswith("SQLite"):
        return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return when.isoformat()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=100, help="LLM-call rows per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", nargs="?", const=PG_URL, default=None, metavar="URL")
    args = parser.parse_args()
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    since = start + timedelta(seconds=30 * int(args.runs * 0.9))
    total = args.runs * args.calls
    print(f"history: {args.runs:,} runs, {total:,} stats rows, {args.runs * 5:,} nodes")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reports.db")
        db = f"sqlite:///{path}"
        await (await Store.open(db)).close()
        t0 = time.perf_counter()
        seed_sqlite(path, args.runs, args.calls, start)
        print(f"SQLite seeded in {time.perf_counter() - t0:.1f}s")
        await measure(
            "SQLite (floor: same GROUP BY on sqlite3, float sums)",
            db,
            lambda sql, _: sqlite_floor(path, sql),
            since,
            args.repeat,
            args.runs,
        )

    if args.postgres:
        await _postgres(args, start, since)


async def _postgres(args: argparse.Namespace, start: datetime, since: datetime) -> None:
    import asyncpg

    url = args.postgres
    admin_url, name = url.rsplit("/", 1)
    admin = await asyncpg.connect(admin_url + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        await (await Store.open(url)).close()
        t0 = time.perf_counter()
        await seed_postgres(url, args.runs, args.calls, start)
        print(f"\nPostgres seeded in {time.perf_counter() - t0:.1f}s")
        await measure(
            "Postgres (floor: same GROUP BY on asyncpg)",
            url,
            lambda sql, _: pg_floor(url, sql),
            since,
            args.repeat,
            args.runs,
        )
    finally:
        admin = await asyncpg.connect(admin_url + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
