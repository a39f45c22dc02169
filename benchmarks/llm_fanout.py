"""LLM fan-out through ``baton_nb.llm.complete`` against a local fake provider (DESIGN §9).

(a) 200 calls, 200 ms server latency, 50 in flight: ideal 200/50 x 0.2 s = 0.8 s.
    Target: within 1.10x the ideal. Printed beside floors making the same requests with
    the same concurrency: raw asyncio streams (HTTP written by hand: the server check,
    what the setup allows), asyncio + httpx (one ``AsyncClient`` keeping 50 connections,
    a semaphore: the floor of the ratios) and httpx with one client per slot (what httpx
    itself costs per call). Medians of ``--repeat`` interleaved runs.
(b) 5,000 calls at 10 ms latency, 200 in flight, results kept (as a run keeps them):
    peak RSS of this process. Target: < 300 MB.

The fake provider (tests/fakes/provider_server.py, an asyncio server) runs in its own
process (benchmarks/_fake_server.py), so it takes no CPU or GIL from the client measured.

Run: ``python benchmarks/llm_fanout.py`` (from any directory; ``--help`` for the options:
``--calls``, ``--latency``, ``--in-flight``, ``--memory-calls``, ``--repeat``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import anyio
from _fake_server import (  # benchmarks/_fake_server.py
    KEY,
    FakeServerProcess,
    HttpxFloor,
    HttpxPerSlotFloor,
    ideal_seconds,
    interleaved,
    median,
    raw_floor,
    rss_mb,
)

from baton_nb.llm import Completion, LLMRequest, aclose, complete, configure, reset_configuration

MODEL = "openai/gpt-4o-mini"
CALLS, LATENCY, IN_FLIGHT, REPEAT = 200, 0.2, 50, 5
BIG_CALLS, BIG_LATENCY, BIG_IN_FLIGHT = 5000, 0.01, 200


def _messages(i: int) -> tuple[dict[str, Any], ...]:
    return ({"role": "user", "content": f"Summarise document {i} in one sentence."},)


async def complete_fanout(
    n: int, in_flight: int, keep: list[Completion] | None = None
) -> float:
    """``n`` calls through ``baton_nb.llm.complete``, ``in_flight`` at once: wall seconds."""
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
        description="LLM fan-out through baton_nb.llm.complete against a local fake provider "
        "in its own process: wall time against the ideal, a raw-asyncio floor and an asyncio + "
        "httpx floor, then peak memory of a large fan-out whose results are kept.",
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
        "--repeat",
        type=_positive_int,
        default=REPEAT,
        metavar="N",
        help=f"timed runs of each, interleaved; medians reported (default {REPEAT})",
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
    with FakeServerProcess(args.latency) as server:
        reset_configuration()
        configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
        floor = HttpxFloor(server.base_url, args.in_flight)
        per_slot = HttpxPerSlotFloor(server.base_url, args.in_flight)
        try:
            # warm up: connections, tokenizer, prices (baton) and connections (httpx)
            await complete_fanout(args.in_flight, args.in_flight)
            await floor.run(args.in_flight)
            await per_slot.run(args.in_flight)
            server.reset_stats(args.latency)
            times = await interleaved(
                args.repeat,
                {
                    "raw": lambda: raw_floor(server.base_url, args.calls, args.in_flight),
                    "httpx": lambda: floor.run(args.calls),
                    "per_slot": lambda: per_slot.run(args.calls),
                    "baton": lambda: complete_fanout(args.calls, args.in_flight),
                },
            )
            stats = server.stats()
            server.reset_stats(BIG_LATENCY)
            rss_before = rss_mb()
            kept: list[Completion] = []
            big = await complete_fanout(args.memory_calls, BIG_IN_FLIGHT, kept)
            rss_after = rss_mb()
            big_stats = server.stats()
            assert len(kept) == args.memory_calls, len(kept)
        finally:
            await floor.aclose()
            await per_slot.aclose()
            await aclose()
            reset_configuration()
    report(
        args, times, stats["max_in_flight"], big, big_stats["max_in_flight"], rss_before, rss_after
    )


def report(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    server_max_in_flight: int,
    big: float,
    big_max_in_flight: int,
    rss_before: float,
    rss_after: float,
) -> None:
    ideal = ideal_seconds(args.calls, args.in_flight, args.latency)
    raw, floor, baton = (median(times[k]) for k in ("raw", "httpx", "baton"))
    print(
        f"LLM fan-out (baton_nb.llm.complete): {args.calls} calls x "
        f"{args.latency * 1000:.0f} ms latency, {args.in_flight} in flight; "
        f"fake provider in its own process; medians of {args.repeat} interleaved runs"
    )
    print(f"{'':34}{'wall s':>8}{'x ideal':>9}{'x floor':>9}   runs")
    rows = [
        ("ideal", ideal, None),
        ("raw asyncio streams (server check)", raw, times["raw"]),
        ("floor: asyncio + httpx", floor, times["httpx"]),
        ("httpx, one client per slot", median(times["per_slot"]), times["per_slot"]),
        ("baton_nb.llm.complete", baton, times["baton"]),
    ]
    for label, value, runs in rows:
        x_ideal = f"{value / ideal:>9.2f}" if ideal > 0 else f"{'':>9}"
        spread = " ".join(f"{t:.3f}" for t in runs) if runs else ""
        print(f"{label:34}{value:>8.3f}{x_ideal}{value / floor:>9.2f}   {spread}")
    print(f"server: max {server_max_in_flight} requests in flight (expected {args.in_flight})")
    if ideal > 0:
        fair = raw <= 1.05 * ideal and server_max_in_flight == args.in_flight
        print(
            f"setup check, raw floor <= 1.05x ideal and {args.in_flight} in flight at the "
            f"server: {'PASS' if fair else 'FAIL'}"
        )
        ok = baton <= 1.10 * ideal
        print(f"target, baton_nb <= 1.10x ideal: {'PASS' if ok else 'FAIL'} ({baton / ideal:.2f}x)")
    print()
    mem_ok = rss_after < 300
    print(
        f"{args.memory_calls} calls ({BIG_LATENCY * 1000:.0f} ms latency, {BIG_IN_FLIGHT} in "
        f"flight, server saw max {big_max_in_flight}, results kept): {big:.2f} s, "
        f"{args.memory_calls / big:,.0f} calls/s"
    )
    print(
        f"peak RSS of this process {rss_after:.0f} MB (before the run: {rss_before:.0f} MB); "
        f"target < 300 MB: {'PASS' if mem_ok else 'FAIL'}"
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
