"""LLM fan-out through the durable runtime (DESIGN §9), against the local fake provider.

    python benchmarks/llm_runtime.py [--calls 200] [--latency 0.2] [--in-flight 50]

(a) 200 calls at 200 ms with 50 in flight, each a map child doing ``ctx.complete`` (its
response and stats committed before the step sees it): wall time beside the ideal
(calls / in_flight * latency = 0.8 s) and beside a plain asyncio + httpx floor.
Target: <= 1.10x ideal. (b) 5,000 calls: peak RSS of this process. Target: < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

import baton_nb as bn
from baton_nb.llm import configure, reset_configuration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fakes.provider_server import RemoteFakeProvider


class FakeServerProcess:
    """The fake provider in its own process, so it does not share our GIL."""

    def __init__(self, latency: float) -> None:
        import subprocess

        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.provider_server", "--latency", str(latency)],
            cwd=root, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        self.control = RemoteFakeProvider(self.base_url)

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def workflow(db: str, calls: int) -> bn.Workflow:
    wf = bn.Workflow("bench-llm", db=db)

    @wf.step()
    async def prompts(ctx: bn.Context) -> list[str]:
        return [f"question {i}" for i in range(calls)]

    @wf.step(map_over="prompts")
    async def answer(ctx: bn.Context) -> int:
        completion = await ctx.complete(model="openai/gpt-4o-mini", prompt=ctx.item)
        return completion.usage.output_tokens

    @wf.step()
    async def total(ctx: bn.Context, answer: list[int]) -> int:
        return sum(answer)

    return wf


async def baton(db: str, calls: int, in_flight: int) -> float:
    start = time.perf_counter()
    run = await workflow(db, calls).run(concurrency=in_flight, display=False)
    elapsed = time.perf_counter() - start
    assert run.status == "completed", run.failed_steps
    assert len(run.calls) == calls
    return elapsed


async def floor(base_url: str, calls: int, in_flight: int) -> float:
    limiter = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=in_flight)) as client:

        async def one(i: int) -> None:
            async with limiter:
                response = await client.post(
                    f"{base_url}/v1/chat/completions",
                    headers={"Authorization": "Bearer x"},
                    json={
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": str(i)}],
                    },
                )
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - start


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--memory-calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="baton-llm-bench-"))
    with FakeServerProcess(args.latency) as server:
        server.control.configure(record=False)
        configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": "x"}})
        try:
            ideal = math.ceil(args.calls / args.in_flight) * args.latency
            await baton(f"sqlite:///{tmp / 'warm.db'}", 10, 10)  # imports, tiktoken, schema
            ours = [
                await baton(f"sqlite:///{tmp / f'a{i}.db'}", args.calls, args.in_flight)
                for i in range(args.repeat)
            ]
            floors = [
                await floor(server.base_url, args.calls, args.in_flight) for _ in range(args.repeat)
            ]
            server.control.configure(latency=0.005)
            before = rss_mb()
            big = await baton(f"sqlite:///{tmp / 'big.db'}", args.memory_calls, args.in_flight)
            peak = rss_mb()
        finally:
            reset_configuration()
    best, best_floor = min(ours), min(floors)
    print(f"{args.calls} calls x {args.latency * 1000:.0f} ms, {args.in_flight} in flight "
          "(durable: each response stored before the step sees it)")
    print(f"  ideal            {ideal:6.3f} s")
    print(f"  plain httpx      {best_floor:6.3f} s   {best_floor / ideal:5.2f}x ideal")
    verdict = "ok" if best <= 1.10 * ideal else "MISSED"
    print(f"  baton_nb         {best:6.3f} s   {best / ideal:5.2f}x ideal   "
          f"{best / best_floor:5.2f}x floor   target <= 1.10x ideal: {verdict}")
    verdict = "ok" if peak < 300 else "MISSED"
    print(f"{args.memory_calls} calls in {big:.2f} s: peak RSS {peak:.0f} MB "
          f"(before {before:.0f} MB)   target < 300 MB: {verdict}")
    print("peers: LangGraph/DBOS not installed" if not _peers() else f"peers: {_peers()}")


def _peers() -> str:
    import importlib.util

    return ", ".join(p for p in ("langgraph", "dbos") if importlib.util.find_spec(p))


if __name__ == "__main__":
    asyncio.run(main())
