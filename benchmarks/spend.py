"""What a budget costs per call: the worst-case reservation and its settlement in the store.

    python benchmarks/spend.py [--calls 400] [--concurrency 200] [--postgres URL]

For each database (a temp SQLite file, and Postgres if ``--postgres`` is given): ``calls``
reservations and settlements made ``concurrency`` at a time against one budget, as the
runtime makes them around each call (``SpendStore.reserve`` then ``settle``); prints the
wall time per call and checks that nothing passed the cap. No provider: only the store.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from baton_nb.store import RUN_SCOPE, Store


async def measure(url: str, calls: int, concurrency: int) -> tuple[float, int]:
    store = await Store.open(url)
    run_id = uuid.uuid4().hex
    worst, cost = Decimal("0.01"), Decimal("0.008")
    cap = worst * calls  # room for every call: only the overhead is measured
    await store.open_budgets(run_id, {RUN_SCOPE: cap}, {})
    gate = asyncio.Semaphore(concurrency)
    refused = 0

    async def one() -> None:
        nonlocal refused
        async with gate:
            if await store.reserve(run_id, [RUN_SCOPE], worst) is not None:
                refused += 1
                return
            await store.settle(run_id, [RUN_SCOPE], worst, cost)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    elapsed = time.perf_counter() - started
    [row] = await store.get_budgets(run_id)
    assert row.spent <= cap and row.reserved == 0, row
    await store.close()
    return elapsed / calls, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'spend.db'}"}
        if args.postgres:
            urls["postgres"] = args.postgres
        for name, url in urls.items():
            per_call, refused = asyncio.run(measure(url, args.calls, args.concurrency))
            print(
                f"{name}: {per_call * 1000:.2f} ms per call (reserve + settle), "
                f"{args.calls} calls {args.concurrency} at a time, {refused} refused"
            )


if __name__ == "__main__":
    main()
