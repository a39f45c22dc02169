"""LLM fan-out through the durable runtime (DESIGN §9), against the local fake provider.

    python benchmarks/llm_runtime.py [--calls 200] [--latency 0.2] [--in-flight 50]
                                     [--repeat 5] [--memory-calls 5000]

(a) 200 calls at 200 ms with 50 in flight, each a map child doing ``ctx.complete`` (its
response and stats committed before the step sees it), ``wf.run(concurrency=50)`` on
SQLite: wall time of the whole run (schema, run row, prompts step, 200 children, join)
beside the ideal (calls / in_flight * latency = 0.8 s), floors making the same
requests with the same concurrency (raw asyncio streams: the server check; asyncio +
httpx: one ``AsyncClient``, ``Limits(max_connections=50)``, a semaphore; the same with
httpx-aiohttp's ``HttpxAiohttpClient``, what baton_nb's transport is built on) and the
same calls through ``baton_nb.llm.complete`` without the runtime, and the same run whose
children sleep the latency instead of calling (what the runtime costs on its own).
Medians of ``--repeat`` interleaved runs, each with the client's CPU per call
(``time.process_time()``; the server is another process) and the new connections the
server accepted during the run. Target: <= 1.10x ideal.
(b) 5,000 calls (5 ms latency, 50 in flight): peak RSS of this process. Target: < 300 MB.

The fake provider (tests/fakes/provider_server.py, an asyncio server) runs in its own
process (benchmarks/_fake_server.py), so it takes no CPU or GIL from the client measured.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from _fake_server import (  # benchmarks/_fake_server.py
    KEY,
    FakeServerProcess,
    HttpxAiohttpFloor,
    HttpxFloor,
    Sample,
    ideal_seconds,
    interleaved,
    median,
    raw_floor,
    rss_mb,
    sampled,
)
from llm_fanout import complete_fanout  # benchmarks/llm_fanout.py

import baton_nb as bn
from baton_nb.llm import aclose, configure, reset_configuration

MODEL = "openai/gpt-4o-mini"
BIG_LATENCY = 0.005


def workflow(db: str, calls: int, sleep: float | None = None) -> bn.Workflow:
    """Prompts, a map child per prompt doing ``ctx.complete`` (or, given ``sleep``, only
    sleeping that long: the same run shape with no HTTP), and a join."""
    wf = bn.Workflow("bench-llm" if sleep is None else "bench-llm-sleep", db=db)

    @wf.step()
    async def prompts(ctx: bn.Context) -> list[str]:
        return [f"Summarise document {i} in one sentence." for i in range(calls)]

    @wf.step(map_over="prompts")
    async def answer(ctx: bn.Context) -> int:
        if sleep is not None:
            await asyncio.sleep(sleep)
            return 7
        completion = await ctx.complete(model=MODEL, prompt=ctx.item, temperature=0, max_tokens=64)
        return completion.usage.output_tokens

    @wf.step()
    async def total(ctx: bn.Context, answer: list[int]) -> int:
        return sum(answer)

    return wf


class Runs:
    """Each timed run gets a fresh SQLite file in one temp dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="baton-llm-bench-"))
        self.count = 0

    def db(self) -> str:
        self.count += 1
        return f"sqlite:///{self.tmp / f'run{self.count}.db'}"

    async def baton(self, calls: int, in_flight: int) -> float:
        wf = workflow(self.db(), calls)
        start = time.perf_counter()
        run = await wf.run(concurrency=in_flight, display=False)
        elapsed = time.perf_counter() - start
        assert run.status == "completed", run.failed_steps
        assert len(run.calls) == calls, len(run.calls)
        return elapsed

    async def sleeping(self, calls: int, in_flight: int, latency: float) -> float:
        wf = workflow(self.db(), calls, sleep=latency)
        start = time.perf_counter()
        run = await wf.run(concurrency=in_flight, display=False)
        elapsed = time.perf_counter() - start
        assert run.status == "completed", run.failed_steps
        return elapsed

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--memory-calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    runs = Runs()
    with FakeServerProcess(args.latency) as server:
        reset_configuration()
        configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
        floor = HttpxFloor(server.base_url, args.in_flight)
        aiohttp_floor = HttpxAiohttpFloor(server.base_url, args.in_flight)
        try:
            # warm up: imports, tiktoken, prices, schema code, connections
            await runs.baton(args.in_flight, args.in_flight)
            await floor.run(args.in_flight)
            await aiohttp_floor.run(args.in_flight)
            server.reset_stats(args.latency)
            calls, in_flight = args.calls, args.in_flight
            timers = {
                "raw": lambda: raw_floor(server.base_url, calls, in_flight),
                "httpx": lambda: floor.run(calls),
                "aiohttp": lambda: aiohttp_floor.run(calls),
                "complete": lambda: complete_fanout(calls, in_flight),
                "sleep": lambda: runs.sleeping(calls, in_flight, args.latency),
                "baton": lambda: runs.baton(calls, in_flight),
            }
            times = await interleaved(
                args.repeat,
                {name: sampled(server, calls, timer) for name, timer in timers.items()},
            )
            stats = server.stats()
            server.reset_stats(BIG_LATENCY)
            before = rss_mb()
            big = await runs.baton(args.memory_calls, args.in_flight)
            peak = rss_mb()
            big_stats = server.stats()
        finally:
            await floor.aclose()
            await aiohttp_floor.aclose()
            await aclose()
            reset_configuration()
            runs.close()
    report(args, times, stats["max_in_flight"], big, big_stats["max_in_flight"], before, peak)


def report(
    args: argparse.Namespace,
    times: dict[str, list[Sample]],
    server_max_in_flight: int,
    big: float,
    big_max_in_flight: int,
    before: float,
    peak: float,
) -> None:
    ideal = ideal_seconds(args.calls, args.in_flight, args.latency)
    walls = {name: median([s.wall for s in runs]) for name, runs in times.items()}
    floor = walls["httpx"]
    print(
        f"LLM fan-out through the runtime: {args.calls} map children doing ctx.complete, "
        f"{args.latency * 1000:.0f} ms latency, {args.in_flight} in flight, SQLite (each "
        f"response stored before the step sees it); fake provider in its own process; "
        f"medians of {args.repeat} interleaved runs"
    )
    print(
        f"{'':36}{'wall s':>8}{'x ideal':>9}{'x floor':>9}{'CPU ms/call':>12}"
        f"{'new conns':>11}   runs"
    )
    print(f"{'ideal':36}{ideal:>8.3f}")
    rows = [
        ("raw asyncio streams (server check)", "raw"),
        ("floor: asyncio + httpx", "httpx"),
        ("httpx-aiohttp alone", "aiohttp"),
        ("baton_nb.llm.complete, no runtime", "complete"),
        ("run, children sleep (no HTTP)", "sleep"),
        ("baton_nb run (map + ctx.complete)", "baton"),
    ]
    for label, name in rows:
        runs = times[name]
        value = walls[name]
        spread = " ".join(f"{s.wall:.3f}" for s in runs)
        cpu = median([s.cpu_ms_per_call for s in runs])
        conns = "/".join(str(s.connections) for s in runs)
        x_ideal = f"{value / ideal:>9.2f}" if ideal > 0 else f"{'':>9}"
        print(
            f"{label:36}{value:>8.3f}{x_ideal}{value / floor:>9.2f}{cpu:>12.3f}{conns:>11}"
            f"   {spread}"
        )
    print(f"server: max {server_max_in_flight} requests in flight (expected {args.in_flight})")
    raw, baton = walls["raw"], walls["baton"]
    if ideal > 0:
        fair = raw <= 1.05 * ideal and server_max_in_flight == args.in_flight
        print(
            f"setup check, raw floor <= 1.05x ideal and {args.in_flight} in flight at the "
            f"server: {'PASS' if fair else 'FAIL'}"
        )
        verdict = "PASS" if baton <= 1.10 * ideal else "FAIL"
        print(f"target, baton_nb run <= 1.10x ideal: {verdict} ({baton / ideal:.2f}x)")
    print()
    verdict = "PASS" if peak < 300 else "FAIL"
    print(
        f"{args.memory_calls} calls ({BIG_LATENCY * 1000:.0f} ms latency, {args.in_flight} "
        f"in flight, server saw max {big_max_in_flight}) in {big:.2f} s: peak RSS of this "
        f"process {peak:.0f} MB (before the run: {before:.0f} MB); target < 300 MB: {verdict}"
    )
    installed = _peers()
    print(
        f"peers: {installed} installed, not timed on LLM calls (benchmarks/runtime.py times "
        "them on no-op steps)"
        if installed
        else "peers: LangGraph/DBOS not installed"
    )


def _peers() -> str:
    import importlib.util

    return ", ".join(p for p in ("langgraph", "dbos") if importlib.util.find_spec(p))


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
