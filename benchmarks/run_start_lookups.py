"""The lookups a run's start makes before it writes, at 10,001 stored runs of one workflow
(branch fix4): ``newest_of_kind`` (every ``wf.run()`` without ``run_id=``) and the
``run_id=`` typo guard (``resolve_run`` for a new id).

    PYTHONPATH=$TREE python benchmarks/run_start_lookups.py --db URL [--seed]

``--seed`` first stores 10,001 finished runs of workflow ``wf`` (made ids, ~1 kB params,
one resume key; ANALYZE on Postgres, as autovacuum would) in the database ``URL``, which
should be empty; without it the runs seeded before are used, so that two checkouts can be
timed in turns on the same rows. Prints one JSON line: the median ms of each lookup (101
calls of ``newest_of_kind``, 51 of the guard), one store opened for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from baton_nb.runtime._identity import resolve_run
from baton_nb.store import Store, utcnow
from baton_nb.store._sql_rows import RUNS

RUNS_SEEDED = 10_001
PARAMS = json.dumps({"topic": "x" * 1000})
KEY = "k" * 32


async def seed(url: str) -> None:
    async with await Store.open(url) as store:
        start = utcnow() - timedelta(days=1)
        rows = [
            {
                "id": uuid.uuid4().hex,
                "workflow": "wf",
                "params": PARAMS,
                "status": "completed",
                "created_at": start + timedelta(seconds=i),
                "resume_key": KEY,
                "failed_steps": "[]",
                "executions": 1,
            }
            for i in range(RUNS_SEEDED)
        ]
        async with store.engine.begin() as conn:  # type: ignore[attr-defined]
            for i in range(0, len(rows), 1000):
                await conn.execute(sa.insert(RUNS), rows[i : i + 1000])
            if url.startswith("postgresql"):
                await conn.exec_driver_sql("ANALYZE workflow_runs")


async def _median_ms(call: Callable[[], Awaitable[Any]], times: int) -> float:
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(spent), 2)


async def timed(url: str) -> dict[str, float]:
    other = json.dumps({"topic": "y"})
    async with await Store.open(url) as store:
        await store.newest_of_kind("wf", other, KEY)  # the pool's first connection
        return {
            "newest_of_kind, no run of the params": await _median_ms(
                lambda: store.newest_of_kind("wf", other, KEY), 101
            ),
            "newest_of_kind, the newest run of the params has the key": await _median_ms(
                lambda: store.newest_of_kind("wf", PARAMS, KEY), 101
            ),
            "run_id guard, 'nightly-2026-12-07'": await _median_ms(
                lambda: resolve_run(store, "wf", "nightly-2026-12-07"), 51
            ),
            "run_id guard, a new 32-hex id": await _median_ms(
                lambda: resolve_run(store, "wf", uuid.uuid4().hex), 51
            ),
            "run_id guard, a new 20-hex id": await _median_ms(
                lambda: resolve_run(store, "wf", uuid.uuid4().hex[:20]), 51
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--seed", action="store_true")
    args = parser.parse_args()
    if args.seed:
        asyncio.run(seed(args.db))
    print(json.dumps({"db": args.db.split(":")[0], **asyncio.run(timed(args.db))}))


if __name__ == "__main__":
    main()
