"""The CPU a run costs whatever its size (issue 16): ``time.process_time()`` of whole
``await wf.run()`` calls of ``benchmarks/llm_runtime.py``'s workflow (prompts, a map child
per prompt doing ``ctx.complete`` against the fake provider, a join).

    PYTHONPATH=$TREE python benchmarks/run_fixed_cost.py [--repeat 15] [--latency 0.05]
                                                         [--stores sqlite,postgres]
                                                         [--scales 1@1,200@50] [--profile FILE]

Each run on a new SQLite file (as the benchmark does) or, on Postgres, a new run in a
database made for this script (dropped at the end); after a warm-up run of each shape in the
same process. Prints, per store and scale, the median CPU ms of a whole run (all threads of
this process: aiosqlite's too; the fake provider is another process) and its spread. The
1-call run's figure is almost all fixed cost; 200 @ 50 minus 200 x (the per-call figure) is
its fixed part too. ``--profile FILE`` writes a cProfile of the timed 1-call runs (of every
store given).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import statistics
import time
import uuid

from _fake_server import KEY, FakeServerProcess  # benchmarks/_fake_server.py
from llm_runtime import PG_SERVER, Runs, _pg_admin  # benchmarks/llm_runtime.py

from baton_nb.llm import aclose, configure, reset_configuration


def _scales(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        calls, _, in_flight = part.partition("@")
        out.append((int(calls), int(in_flight or calls)))
    return out


async def main(args: argparse.Namespace) -> None:
    pg = None
    if "postgres" in args.stores:
        name = f"baton_fixed_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        pg = f"{PG_SERVER}/{name}"
    runs = Runs(pg)
    profile = cProfile.Profile() if args.profile else None
    try:
        with FakeServerProcess(args.latency) as server:
            reset_configuration()
            configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
            try:
                for store in args.stores:
                    for calls, in_flight in args.scales:
                        for _ in range(2):  # warm-up: imports, prices, schema script, pools
                            await runs.run(calls, in_flight, store)
                        cpus = []
                        for _ in range(args.repeat):
                            gc.collect()
                            prof = profile if calls == args.profile_calls else None
                            cpu = time.process_time()
                            if prof is not None:
                                prof.enable()
                            await runs.run(calls, in_flight, store)
                            if prof is not None:
                                prof.disable()
                            cpus.append((time.process_time() - cpu) * 1000)
                        cpus.sort()
                        print(
                            f"{store:8} {calls:>4} @ {in_flight:<3} CPU ms/run: "
                            f"median {statistics.median(cpus):7.2f}  "
                            f"q1 {cpus[len(cpus) // 4]:7.2f}  q3 {cpus[3 * len(cpus) // 4]:7.2f}  "
                            f"(n={len(cpus)})",
                            flush=True,
                        )
            finally:
                await aclose()
                reset_configuration()
    finally:
        runs.close()
        if pg is not None:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{pg.rsplit("/", 1)[1]}" WITH (FORCE)')
    if profile is not None:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.05, help="server latency, seconds")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--scales", type=_scales, default=[(1, 1), (200, 50)])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--profile-calls", type=int, default=1, help="the scale profiled")
    args = parser.parse_args()
    args.stores = [s for s in args.stores.split(",") if s]
    asyncio.run(main(args))
