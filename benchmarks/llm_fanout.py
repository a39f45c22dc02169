"""LLM fan-out through ``baton_nb.llm.complete`` against a local fake provider (DESIGN §9).

Three scales, 200 ms server latency: 200 calls with 50 in flight (ideal 0.8 s; target
<= 1.10x), 5,000 with 200 in flight (ideal 5 s) and 20,000 with 1,000 in flight (ideal
4 s). At each scale, in one interleaved run (medians of ``--repeat``), the same requests
with the same concurrency through:

- raw asyncio streams, HTTP/1.1 written by hand (the server check: what the setup
  allows; it opens its connections before the clock starts);
- stock httpx, one pooled ``AsyncClient`` (``Limits(max_connections=in_flight)``),
  stopped at 3x the ideal (httpcore's pool bookkeeping grows with its connections);
- stock httpx, one ``AsyncClient`` per slot (httpx at its cheapest);
- httpx-aiohttp alone (``HttpxAiohttpClient``, ``Limits(max_connections=in_flight)``);
- baton_nb's shared client alone (the shipped transport: the floor's calls, no
  ``complete`` around them);
- ``baton_nb.llm.complete`` over the shared client.

Each row prints wall time as ratios to the ideal, to the raw floor and to httpx-aiohttp
alone, the client's CPU per call (``time.process_time()`` over the run / calls: the
server is another process) and the new connections the server accepted during each run.
Each run starts warm (one untimed wave of ``in_flight`` calls just before its clock), so
a connection opened during the run is one the client closed and reopened.

First, before the timed rows: 20,000 calls at 1,000 in flight through ``complete`` with
every result kept (as a run keeps them), peak RSS of this process. Target: < 300 MB.

The fake provider (tests/fakes/provider_server.py, an asyncio server) runs in its own
process (benchmarks/_fake_server.py), so it takes no CPU or GIL from the client measured.

Run: ``python benchmarks/llm_fanout.py`` (from any directory; ``--help`` for the options:
``--scales``, ``--latency``, ``--repeat``, ``--memory-calls``, ``--memory-in-flight``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
from _fake_server import (  # benchmarks/_fake_server.py
    KEY,
    FakeServerProcess,
    HttpxAiohttpFloor,
    HttpxFloor,
    HttpxPerSlotFloor,
    Sample,
    SharedClientFloor,
    ideal_seconds,
    interleaved,
    median,
    raw_floor,
    rss_mb,
    sampled,
)

from baton_nb.llm import Completion, LLMRequest, aclose, complete, configure, reset_configuration

MODEL = "openai/gpt-4o-mini"
SCALES = ((200, 50), (5000, 200), (20000, 1000))
LATENCY, REPEAT = 0.2, 3
MEMORY_CALLS, MEMORY_IN_FLIGHT = 20000, 1000
HTTPX_DEADLINE = 3.0  # x the ideal: stock httpx's pooled client is stopped there

ROWS = {
    "raw": "raw asyncio streams (floor)",
    "httpx": "stock httpx, one pooled client",
    "per_slot": "stock httpx, one client per slot",
    "aiohttp": "httpx-aiohttp alone",
    "shared": "baton_nb's shared client alone",
    "baton": "baton_nb.llm.complete",
}


def _messages(i: int) -> tuple[dict[str, Any], ...]:
    return ({"role": "user", "content": f"Summarise document {i} in one sentence."},)


async def complete_fanout(n: int, in_flight: int, keep: list[Completion] | None = None) -> float:
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


def _scales(text: str) -> list[tuple[int, int]]:
    """``200@50,5000@200``: calls @ in flight."""
    try:
        pairs = [tuple(int(n) for n in part.split("@")) for part in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected CALLS@IN_FLIGHT[,...], got {text!r}")
    return [(p[0], p[1]) for p in pairs]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LLM fan-out through baton_nb.llm.complete against a local fake provider "
        "in its own process, beside raw asyncio, stock httpx and httpx-aiohttp: wall time, "
        "client CPU per call and new connections, at several scales; then peak memory.",
    )
    parser.add_argument(
        "--scales",
        type=_scales,
        default=list(SCALES),
        metavar="CALLS@IN_FLIGHT,...",
        help="scales timed (default " + ",".join(f"{c}@{k}" for c, k in SCALES) + ")",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=LATENCY,
        metavar="SECONDS",
        help=f"fake server latency per call (default {LATENCY})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=REPEAT,
        metavar="N",
        help=f"timed runs of each row, interleaved; medians reported (default {REPEAT})",
    )
    parser.add_argument(
        "--memory-calls",
        type=_positive_int,
        default=MEMORY_CALLS,
        metavar="N",
        help=f"calls of the memory run, results kept (default {MEMORY_CALLS})",
    )
    parser.add_argument(
        "--memory-in-flight",
        type=_positive_int,
        default=MEMORY_IN_FLIGHT,
        metavar="N",
        help=f"calls in flight in the memory run (default {MEMORY_IN_FLIGHT})",
    )
    return parser.parse_args(argv)


async def client_rows(
    server: FakeServerProcess, calls: int, in_flight: int, latency: float, repeat: int
) -> dict[str, list[Sample]]:
    """The floors and ``complete`` at one scale, warmed, timed in turns."""
    deadline = HTTPX_DEADLINE * max(ideal_seconds(calls, in_flight, latency), 1.0)
    floors: dict[str, Any] = {
        "httpx": HttpxFloor(server.base_url, in_flight, deadline),
        "per_slot": HttpxPerSlotFloor(server.base_url, in_flight),
        "aiohttp": HttpxAiohttpFloor(server.base_url, in_flight),
        "shared": SharedClientFloor(server.base_url, in_flight),
    }
    try:
        # warm up once: tokenizer and prices (baton_nb); each run then warms its connections
        await complete_fanout(in_flight, in_flight)
        timers: dict[str, Callable[[], Awaitable[float]]] = {
            "raw": lambda: raw_floor(server.base_url, calls, in_flight),
            **{name: partial(floor.run, calls) for name, floor in floors.items()},
            "baton": lambda: complete_fanout(calls, in_flight),
        }
        warm: dict[str, Callable[[], Awaitable[float]] | None] = {
            "raw": None,  # opens its connections before its clock starts
            **{name: partial(floor.run, in_flight) for name, floor in floors.items()},
            "baton": lambda: complete_fanout(in_flight, in_flight),
        }
        return await interleaved(
            repeat,
            {name: sampled(server, calls, timer, warm[name]) for name, timer in timers.items()},
        )
    finally:
        for floor in floors.values():
            await floor.aclose()


async def main(args: argparse.Namespace) -> None:
    with FakeServerProcess(args.latency) as server:
        reset_configuration()
        configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
        try:
            await complete_fanout(args.memory_in_flight, args.memory_in_flight)  # warm up
            rss_before = rss_mb()
            kept: list[Completion] = []
            big = await complete_fanout(args.memory_calls, args.memory_in_flight, kept)
            rss_after = rss_mb()
            assert len(kept) == args.memory_calls, len(kept)
            del kept
            report_memory(args, big, rss_before, rss_after)
            for calls, in_flight in args.scales:
                server.reset_stats(args.latency)
                samples = await client_rows(server, calls, in_flight, args.latency, args.repeat)
                report_scale(calls, in_flight, args, samples, server.stats()["max_in_flight"])
        finally:
            await aclose()
            reset_configuration()
    print(
        "Figures from one run on this machine; on a shared (loaded) machine compare rows "
        "with each other (interleaved), not with figures from another run."
    )


def report_memory(
    args: argparse.Namespace, wall: float, rss_before: float, rss_after: float
) -> None:
    verdict = "PASS" if rss_after < 300 else "FAIL"
    print(
        f"{args.memory_calls:,} calls through baton_nb.llm.complete, {args.memory_in_flight:,} "
        f"in flight, {args.latency * 1000:.0f} ms latency, results kept: {wall:.2f} s; peak "
        f"RSS of this process {rss_after:.0f} MB (before: {rss_before:.0f} MB); target "
        f"< 300 MB: {verdict}"
    )
    print()


def _wall(value: float) -> str:
    return f"{value:>8.3f}" if value != float("inf") else f"{'stopped':>8}"


def _ratio(value: float, to: float) -> str:
    if to <= 0 or value == float("inf") or to == float("inf"):
        return f"{'-':>8}"
    return f"{value / to:>8.2f}"


def report_scale(
    calls: int,
    in_flight: int,
    args: argparse.Namespace,
    samples: dict[str, list[Sample]],
    server_max_in_flight: int,
) -> None:
    ideal = ideal_seconds(calls, in_flight, args.latency)
    walls = {name: median([s.wall for s in runs]) for name, runs in samples.items()}
    print(
        f"{calls:,} calls @ {in_flight:,} in flight, {args.latency * 1000:.0f} ms latency "
        f"(ideal {ideal:.2f} s); fake provider in its own process; medians of {args.repeat} "
        f"interleaved runs"
    )
    print(
        f"{'':34}{'wall s':>8}{'x ideal':>8}{'x raw':>8}{'x aiohttp':>10}"
        f"{'CPU ms/call':>12}{'new conns':>11}   wall of each run"
    )
    print(f"{'ideal':34}{ideal:>8.3f}")
    for name, label in ROWS.items():
        runs = samples[name]
        wall = walls[name]
        finished = [s.cpu_ms_per_call for s in runs if s.wall != float("inf")]
        cpu = f"{median(finished):>12.3f}" if finished else f"{'-':>12}"  # of finished runs
        conns = "/".join(str(s.connections) for s in runs)
        spread = " ".join(_wall(s.wall).strip() for s in runs)
        print(
            f"{label:34}{_wall(wall)}{_ratio(wall, ideal)}{_ratio(wall, walls['raw'])}"
            f"{_ratio(wall, walls['aiohttp']):>10}{cpu}{conns:>11}   {spread}"
        )
    print(
        f"server: max {server_max_in_flight} requests in flight (expected {in_flight}); "
        f"'stopped': past {HTTPX_DEADLINE:g}x the ideal or a call failed; raw opens its "
        f"{in_flight} connections before its clock starts"
    )
    if ideal > 0:
        raw = walls["raw"]
        fair = raw <= 1.05 * ideal and server_max_in_flight == in_flight
        print(f"setup check, raw floor <= 1.05x ideal: {'PASS' if fair else 'FAIL'}")
        baton = walls["baton"]
        if (calls, in_flight) == (200, 50):
            ok = baton <= 1.10 * ideal
            print(f"target, complete <= 1.10x ideal: {'PASS' if ok else 'FAIL'}")
    print()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
