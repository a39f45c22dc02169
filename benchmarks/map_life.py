"""A big map's whole life, on SQLite and Postgres: does any cost grow faster than its items?

    python benchmarks/map_life.py [--sizes 10000,100000] [--postgres URL | --no-postgres]
                                  [--repeat 1]

A map over N items (no-op children; the last item fails on the first run), then:

- run: the whole ``await wf.run()`` (seconds), and items/s;
- expand: from the map step's start to its first child's start (stored timestamps);
- end: from the last child's finish to the run's finish (the group's verdict over N
  children, the downstream step, the run's last commit);
- load: ``bn.Run.load`` of the finished run;
- resume: ``wf.run(run_id=...)`` of that failed run (N - 1 children completed, one to run
  again: the stored children read back, none stored twice).

Only public API: the same file measures another checkout of baton_nb when that checkout
comes first on ``sys.path`` (``PYTHONPATH=/path/to/checkout``), for an A/B in one session.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import anyio

import baton_nb as bn


async def life(db: str, items: int) -> dict[str, float]:
    failing = {"on": True}
    wf = bn.Workflow(f"map-life-{items}-{uuid.uuid4().hex[:6]}", db=db)

    @wf.step()
    async def source(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="source", max_attempts=1)
    async def each(ctx: bn.Context) -> None:
        if failing["on"] and ctx.item == items - 1:
            raise RuntimeError("the last item fails once")

    start = time.perf_counter()
    run = await wf.run(display=False, concurrency=64)
    ran = time.perf_counter() - start
    assert run.status == "failed", run.status
    children = [s for s in run.steps.values() if s.parent == "each"]
    assert len(children) == items
    group_started = run.steps["each"].started_at
    first = min(s.started_at for s in children if s.started_at)
    last = max(s.finished_at for s in children if s.finished_at)
    assert group_started is not None and run.finished_at is not None
    start = time.perf_counter()
    loaded = await bn.Run.load(run.id, db=db)
    load = time.perf_counter() - start
    assert len(loaded.steps) == items + 2
    failing["on"] = False
    start = time.perf_counter()
    resumed = await wf.run(run_id=run.id, display=False, concurrency=64)
    resume = time.perf_counter() - start
    assert resumed.status == "completed", resumed.failed_steps
    return {
        "run": ran,
        "expand": (first - group_started).total_seconds(),
        "end": (run.finished_at - last).total_seconds(),
        "load": load,
        "resume": resume,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="baton-map-life-"))
    dbs = [("sqlite", f"sqlite:///{tmp / 'map.db'}")]
    dbs += [] if args.no_postgres else [("postgres", args.postgres)]
    print(f"baton_nb from {Path(bn.__file__).parent}")
    columns = ("run", "expand", "end", "load", "resume")
    print(f"{'items':>8} {'db':<8} " + " ".join(f"{c:>7}" for c in columns) + "  (seconds)")
    for items in (int(s) for s in args.sizes.split(",") if s):
        for label, db in dbs:
            for _ in range(args.repeat):
                found = await life(db, items)
                print(f"{items:>8,} {label:<8} " + " ".join(f"{found[c]:>7.2f}" for c in columns))


if __name__ == "__main__":
    anyio.run(main)
