"""LLM fan-out through ``baton_nb.llm.complete`` against a local fake provider.

(a) 200 calls, 200 ms server latency, 50 in flight: ideal 200/50 x 0.2 s = 0.8 s.
    Printed beside a floor: plain asyncio + httpx making the same requests.
    Target: within 1.10x the ideal.
(b) 5,000 calls at short latency, results kept (as a run keeps them):
    peak RSS of the whole process (fake server included). Target: < 300 MB.

Run: ``python benchmarks/llm_fanout.py`` (from any directory; ``--help`` for the options:
``--calls``, ``--latency``, ``--in-flight``, ``--memory-calls``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

# The fake provider lives in the repository's tests/ package: make the repository root
# importable whatever the current directory (baton_nb itself may be installed or not).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from baton_nb.llm import (  # noqa: E402
    Completion,
    LLMRequest,
    aclose,
    complete,
    configure,
    reset_configuration,
)
from tests.fakes.provider_server import FakeProviderServer  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
MODEL = "openai/gpt-4o-mini"
CALLS, LATENCY, IN_FLIGHT = 200, 0.2, 50
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LLM fan-out through baton_nb.llm.complete against a local fake provider: "
        "wall time against the ideal and a plain asyncio + httpx floor, then peak memory of a "
        "large fan-out whose results are kept.",
    )
    parser.add_argument(
        "--calls",
        type=_positive_int,
        default=CALLS,
        metavar="N",
        help=f"calls timed (default {CALLS})",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=LATENCY,
        metavar="SECONDS",
        help=f"fake server latency per call (default {LATENCY})",
    )
    parser.add_argument(
        "--in-flight",
        type=_positive_int,
        default=IN_FLIGHT,
        metavar="N",
        help=f"calls in flight at once (default {IN_FLIGHT})",
    )
    parser.add_argument(
        "--memory-calls",
        type=_positive_int,
        default=BIG_CALLS,
        metavar="N",
        help=f"calls of the memory run, {BIG_LATENCY * 1000:.0f} ms latency, "
        f"{BIG_IN_FLIGHT} in flight (default {BIG_CALLS})",
    )
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    server = FakeProviderServer(latency=args.latency).start()
    server.record = False
    reset_configuration()
    configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
    try:
        await _baton(args.in_flight, args.in_flight)  # warm up: connections, tokenizer, prices
        baton = await _best_of(5, lambda: _baton(args.calls, args.in_flight))
        floor = await _best_of(5, lambda: _floor(server.base_url, args.calls, args.in_flight))
        server.latency = BIG_LATENCY
        rss_before = _rss_mb()
        kept: list[Completion] = []
        big = await _baton(args.memory_calls, BIG_IN_FLIGHT, kept)
        rss_after = _rss_mb()
        assert len(kept) == args.memory_calls and server.max_in_flight <= BIG_IN_FLIGHT
    finally:
        await aclose()
        server.stop()
        reset_configuration()
    _report(args, baton, floor, big, rss_before, rss_after)


def _report(
    args: argparse.Namespace,
    baton: float,
    floor: float,
    big: float,
    rss_before: float,
    rss_after: float,
) -> None:
    ideal = -(-args.calls // args.in_flight) * args.latency  # waves of in-flight calls
    ok = baton <= 1.10 * ideal
    print(
        f"LLM fan-out: {args.calls} calls x {args.latency * 1000:.0f} ms latency, "
        f"{args.in_flight} in flight"
    )
    print(f"{'':28}{'wall s':>9}{'x ideal':>9}{'x floor':>9}")
    if ideal > 0:
        print(f"{'ideal':28}{ideal:>9.3f}{1:>9.2f}{ideal / floor:>9.2f}")
        print(f"{'floor (asyncio + httpx)':28}{floor:>9.3f}{floor / ideal:>9.2f}{1:>9.2f}")
        print(
            f"{'baton_nb.llm.complete':28}{baton:>9.3f}{baton / ideal:>9.2f}{baton / floor:>9.2f}"
        )
        print(f"target <= 1.10x ideal: {'PASS' if ok else 'FAIL'}")
    else:  # no latency: no ideal to compare with
        print(f"{'floor (asyncio + httpx)':28}{floor:>9.3f}{'':>9}{1:>9.2f}")
        print(f"{'baton_nb.llm.complete':28}{baton:>9.3f}{'':>9}{baton / floor:>9.2f}")
    print()
    mem_ok = rss_after < 300
    print(
        f"{args.memory_calls} calls ({BIG_LATENCY * 1000:.0f} ms latency, {BIG_IN_FLIGHT} in "
        f"flight, results kept): {big:.2f} s, {args.memory_calls / big:,.0f} calls/s"
    )
    print(
        f"peak RSS {rss_after:.0f} MB (before: {rss_before:.0f} MB); "
        f"target < 300 MB: {'PASS' if mem_ok else 'FAIL'}"
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
