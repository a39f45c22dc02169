"""LLM fan-out through ``baton_nb.llm.complete`` against a local fake provider.

(a) 200 calls, 200 ms server latency, 50 in flight: ideal 200/50 x 0.2 s = 0.8 s.
    Printed beside a floor: plain asyncio + httpx making the same requests.
    Target: within 1.10x the ideal.
(b) 5,000 calls at short latency, results kept (as a run keeps them):
    peak RSS of the whole process (fake server included). Target: < 300 MB.

Run: ``python benchmarks/llm_fanout.py`` from the repository root.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baton_nb.llm import (
    Completion,
    LLMRequest,
    aclose,
    complete,
    configure,
    reset_configuration,
)
from tests.fakes.provider_server import FakeProviderServer

KEY = "sk-bench-0123456789abcdef"
MODEL = "openai/gpt-4o-mini"
CALLS, LATENCY, IN_FLIGHT = 200, 0.2, 50
IDEAL = CALLS / IN_FLIGHT * LATENCY
BIG_CALLS, BIG_LATENCY, BIG_IN_FLIGHT = 5000, 0.01, 200


def _messages(i: int) -> tuple[dict[str, Any], ...]:
    return ({"role": "user", "content": f"Summarise document {i} in one sentence."},)


async def _baton(n: int, in_flight: int, keep: list[Completion] | None = None) -> float:
    limiter = anyio.CapacityLimiter(in_flight)

    async def one(i: int) -> None:
        async with limiter:
            c = await complete(LLMRequest(MODEL, _messages(i), temperature=0, max_tokens=64))
        if keep is not None:
            keep.append(c)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return time.perf_counter() - start


async def _floor(base_url: str, n: int, in_flight: int) -> float:
    """The same requests with nothing but asyncio and httpx."""
    semaphore = asyncio.Semaphore(in_flight)
    url = f"{base_url}/v1/chat/completions"
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=in_flight)) as client:

        async def one(i: int) -> None:
            body = {
                "model": "gpt-4o-mini",
                "messages": list(_messages(i)),
                "temperature": 0,
                "max_completion_tokens": 64,
            }
            async with semaphore:
                response = await client.post(url, json=body, headers=headers)
                response.raise_for_status()
                response.json()

        await one(-1)  # connect once, like the warmed-up baton client
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


async def _best_of(runs: int, fn: Callable[[], Awaitable[float]]) -> float:
    return min([await fn() for _ in range(runs)])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def main() -> None:
    server = FakeProviderServer(latency=LATENCY).start()
    server.record = False
    reset_configuration()
    configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
    try:
        await _baton(IN_FLIGHT, IN_FLIGHT)  # warm up: connections, tokenizer, price tables
        baton = await _best_of(5, lambda: _baton(CALLS, IN_FLIGHT))
        floor = await _best_of(5, lambda: _floor(server.base_url, CALLS, IN_FLIGHT))
        server.latency = BIG_LATENCY
        rss_before = _rss_mb()
        kept: list[Completion] = []
        big = await _baton(BIG_CALLS, BIG_IN_FLIGHT, kept)
        rss_after = _rss_mb()
        assert len(kept) == BIG_CALLS and server.max_in_flight <= BIG_IN_FLIGHT
    finally:
        await aclose()
        server.stop()
        reset_configuration()
    _report(baton, floor, big, rss_before, rss_after)


def _report(baton: float, floor: float, big: float, rss_before: float, rss_after: float) -> None:
    ok = baton <= 1.10 * IDEAL
    print(f"LLM fan-out: {CALLS} calls x {LATENCY * 1000:.0f} ms latency, {IN_FLIGHT} in flight")
    print(f"{'':28}{'wall s':>9}{'x ideal':>9}{'x floor':>9}")
    print(f"{'ideal':28}{IDEAL:>9.3f}{1:>9.2f}{IDEAL / floor:>9.2f}")
    print(f"{'floor (asyncio + httpx)':28}{floor:>9.3f}{floor / IDEAL:>9.2f}{1:>9.2f}")
    print(f"{'baton_nb.llm.complete':28}{baton:>9.3f}{baton / IDEAL:>9.2f}{baton / floor:>9.2f}")
    print(f"target <= 1.10x ideal: {'PASS' if ok else 'FAIL'}")
    print()
    mem_ok = rss_after < 300
    print(
        f"{BIG_CALLS} calls ({BIG_LATENCY * 1000:.0f} ms latency, {BIG_IN_FLIGHT} in flight, "
        f"results kept): {big:.2f} s, {BIG_CALLS / big:,.0f} calls/s"
    )
    print(
        f"peak RSS {rss_after:.0f} MB (before: {rss_before:.0f} MB); "
        f"target < 300 MB: {'PASS' if mem_ok else 'FAIL'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
