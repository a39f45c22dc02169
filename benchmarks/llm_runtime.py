"""LLM fan-out through the durable runtime (DESIGN §9, issue 16), against the local fake provider.

    python benchmarks/llm_runtime.py [--scales 200@50,5000@200,20000@1000] [--latency 0.2]
                                     [--repeat 3] [--memory-calls 20000]
                                     [--memory-in-flight 1000] [--rows ...] [--pg URL]

At each scale (calls @ in flight, 200 ms server latency), in one interleaved run (each row
``--repeat`` times in turns, medians), the same requests with the same concurrency:

- ``raw``: raw asyncio streams, HTTP/1.1 by hand (the floor: what the setup allows);
- ``httpx``: stock httpx, one ``AsyncClient`` per slot (its pooled client does not finish
  these scales: ``benchmarks/llm_fanout.py`` times it with a deadline);
- ``aiohttp``: httpx-aiohttp alone (``HttpxAiohttpClient``, what the transport builds on);
- ``bare_aiohttp``: aiohttp's ``ClientSession.post`` alone, no httpx, a slot per call in
  flight: aiohttp's own cost (the shipped transport's for streamed calls);
- ``direct``: the path plain calls take (``AiohttpTransport.post_json``: its own HTTP/1.1
  pool, httptools' parser), a slot per call in flight: the bound on a call through
  ``complete``;
- ``complete``: ``baton_nb.llm.complete`` alone, no runtime;
- ``sleep``: the run below with children that sleep the latency (no HTTP): the runtime alone;
- ``sqlite``: ``await wf.run(concurrency=in_flight)`` on SQLite: prompts, a map child per
  prompt doing ``ctx.complete`` (its answer and stats row committed before the step sees
  it), a join;
- ``postgres``: the same run on Postgres (``--pg``, a database made for the benchmark);
- ``widget``: the SQLite run with the widget displayed (``display=None``) in an IPython
  kernel started in this process (``benchmarks/widget.py``'s ``start_kernel``; messages
  encoded and dropped as a real kernel hands them to zmq). Timed in ``--widget-pairs``
  pairs, not in the rounds: each pair a SQLite run and a widget run back to back, in
  alternating order, each started on a collected heap and followed by a full collection
  of its garbage, timed apart (after a ``gc.freeze()`` of what was there before: it walks
  only what runs made); judged on the median of the pairs' CPU ratios (below);
- ``langgraph``: the peer, LangGraph's map-reduce (``Send``) doing the same fan-out, each
  task a call through httpx-aiohttp, checkpointed on SQLite (``benchmarks/_llm_peer.py``;
  without LangGraph installed the row is left out, saying why).

Each row: wall time as ratios to the ideal and to the raw floor, the client's CPU per call
(``time.process_time()`` over the run / calls: the server is another process; robust to a
loaded machine, where wall ratios are not), the new connections the server accepted.
First: peak RSS of this process over a run of ``--memory-calls`` through the runtime
(SQLite, ``--memory-in-flight``, 5 ms latency). Targets (issue 16): runtime <= 0.25 ms of
CPU a call at 20,000 @ 1,000; 200 @ 50 and 5,000 @ 200 <= 1.10x ideal; 20,000 @ 1,000
<= 1.5x; peak RSS < 300 MB; widget <= 1.05x the SQLite run's CPU at 1,000 in flight.

Why the widget is judged on pairs and CPU: the widget's cost is a few percent of the run's,
and two invocations of one tree read the ``widget`` row's ratio ±0.07 apart when it was a
median of 3 rounds against the ``sqlite`` row's median (docs/performance.md, "Seventh round:
the widget at 1,000 in flight"): the wall of a run on a shared 2-core machine moves with the
load by more than that, and a collection of the garbage earlier runs left (a full one walks
the whole heap: 0.2-0.5 s, ~5 % of a 20,000-call run) fell in whichever run came next. A
pair's two runs share the machine's state of the moment, their order alternates (a drift or
an order effect hits both sides), each run starts on a collected heap and the collection of
its own garbage after it is timed and counted to it (the widget's included: nothing it
leaves is paid outside what is measured, and no run pays for another's), and the median of
the pairs' ratios of ``time.process_time()`` (all threads of this process: the kernel's
too; the fake provider is another process) leaves out a pair that a burst of load hit. The
wall ratio is printed beside it. (The harness also kept every widget, and so its run, alive:
the heap grew with each widget run.)

The fake provider (tests/fakes/provider_server.py, an asyncio server) runs in its own
process (benchmarks/_fake_server.py), so it takes no CPU or GIL from the client measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib.util
import io
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from _fake_server import (  # benchmarks/_fake_server.py
    KEY,
    BareAiohttpFloor,
    DirectPathFloor,
    FakeServerProcess,
    HttpxAiohttpFloor,
    HttpxPerSlotFloor,
    Sample,
    ideal_seconds,
    interleaved,
    median,
    raw_floor,
    rss_mb,
    sampled,
)
from _llm_peer import LangGraphFanout, missing  # benchmarks/_llm_peer.py
from llm_fanout import _scales, complete_fanout  # benchmarks/llm_fanout.py

import baton_nb as bn
from baton_nb.llm import aclose, configure, reset_configuration

MODEL = "openai/gpt-4o-mini"
SCALES = ((200, 50), (5000, 200), (20000, 1000))
MEMORY_LATENCY = 0.005
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
ROWS = {
    "raw": "raw asyncio streams (floor)",
    "httpx": "stock httpx, one client per slot",
    "aiohttp": "httpx-aiohttp alone",
    "bare_aiohttp": "aiohttp ClientSession alone",
    "direct": "baton_nb's direct path alone",
    "complete": "baton_nb.llm.complete, no runtime",
    "sleep": "run, children sleep (no HTTP)",
    "sqlite": "run: map + ctx.complete, SQLite",
    "postgres": "run: map + ctx.complete, Postgres",
    "widget": "run, SQLite, widget in a kernel",
    "langgraph": "peer: LangGraph Send, SQLite",
}
# rows printed that are not asked for by name: the widget's pairs' runs without it
LABELS = {**ROWS, "widget": "run, SQLite, widget (pairs)", "paired": "run, SQLite (its pairs)"}


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
    """Each timed run gets a fresh database: a SQLite file in one temp dir, or a new run
    in the benchmark's Postgres database."""

    def __init__(self, pg: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="baton-llm-bench-"))
        self.count = 0
        self.pg = pg

    def db(self, kind: str = "sqlite") -> str:
        self.count += 1
        if kind == "postgres":
            assert self.pg is not None
            return self.pg
        return f"sqlite:///{self.tmp / f'run{self.count}.db'}"

    async def run(
        self,
        calls: int,
        in_flight: int,
        kind: str = "sqlite",
        sleep: float | None = None,
        display: bool | None = False,
    ) -> float:
        wf = workflow(self.db(kind), calls, sleep)
        sink = io.StringIO()
        with contextlib.redirect_stderr(sink):
            start = time.perf_counter()
            run = await wf.run(concurrency=in_flight, display=display)
            elapsed = time.perf_counter() - start
        assert run.status == "completed", run.failed_steps
        if sleep is None:
            assert len(run.calls) == calls, len(run.calls)
        return elapsed

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_SERVER + "/postgres", timeout=10)
    try:
        await con.execute(sql)
    finally:
        await con.close()


async def make_pg_database() -> str | None:
    """A fresh database on the local Postgres, or None (with a note) if there is none."""
    name = f"baton_bench_{uuid.uuid4().hex[:8]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"postgres row skipped: no Postgres at {PG_SERVER} ({type(exc).__name__})")
        return None
    return f"{PG_SERVER}/{name}"


def start_widget_kernel() -> bool:
    """benchmarks/widget.py's in-process kernel; False (with a note) if it cannot start."""
    if importlib.util.find_spec("ipykernel") is None:
        print("widget row skipped: ipykernel not installed")
        return False
    from widget import start_kernel  # benchmarks/widget.py

    from baton_nb.widget import in_kernel

    # The run's CPU only: no timing wrapper around each event. No widget kept either: each
    # kept its run alive (20,000 steps and calls), so the heap grew with every widget run and
    # each full collection after it walked all of them.
    start_kernel(phases=False, keep_widgets=False)
    if not in_kernel():
        print("widget row skipped: the in-process kernel is not visible")
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scales",
        type=_scales,
        default=list(SCALES),
        metavar="CALLS@IN_FLIGHT,...",
        help="scales timed (default " + ",".join(f"{c}@{k}" for c, k in SCALES) + ")",
    )
    parser.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each row")
    parser.add_argument("--memory-calls", type=int, default=20000, help="0: no memory run")
    parser.add_argument("--memory-in-flight", type=int, default=1000)
    parser.add_argument(
        "--rows",
        default=",".join(ROWS),
        help="rows timed, comma-separated (default all: " + ",".join(ROWS) + ")",
    )
    parser.add_argument(
        "--widget-pairs",
        type=int,
        default=5,
        help="pairs (SQLite run, widget run) timed for the widget row (default 5)",
    )
    parser.add_argument(
        "--pg", default=None, help="Postgres URL for the postgres row (default: a new database)"
    )
    args = parser.parse_args(argv)
    args.rows = [r for r in args.rows.split(",") if r]
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; known: {', '.join(ROWS)}")
    return args


async def scale_rows(
    server: FakeServerProcess, runs: Runs, calls: int, in_flight: int, args: argparse.Namespace
) -> dict[str, list[Sample]]:
    """Every row at one scale, warmed, timed in turns."""
    floors: dict[str, Any] = {}
    if "httpx" in args.rows:
        floors["httpx"] = HttpxPerSlotFloor(server.base_url, in_flight)
    if "aiohttp" in args.rows:
        floors["aiohttp"] = HttpxAiohttpFloor(server.base_url, in_flight)
    if "bare_aiohttp" in args.rows:
        floors["bare_aiohttp"] = BareAiohttpFloor(server.base_url, in_flight)
    if "direct" in args.rows:
        floors["direct"] = DirectPathFloor(server.base_url, in_flight)
    if "langgraph" in args.rows:
        floors["langgraph"] = LangGraphFanout(server.base_url, in_flight, runs.tmp)
    run = runs.run
    timers: dict[str, Callable[[], Awaitable[float]]] = {
        "raw": lambda: raw_floor(server.base_url, calls, in_flight),
        **{name: partial(floor.run, calls) for name, floor in floors.items()},
        "complete": lambda: complete_fanout(calls, in_flight),
        "sleep": lambda: run(calls, in_flight, sleep=args.latency),
        "sqlite": lambda: run(calls, in_flight),
        "postgres": lambda: run(calls, in_flight, "postgres"),
        "widget": lambda: run(calls, in_flight, display=None),
    }
    warm: dict[str, Callable[[], Awaitable[object]] | None] = {
        "raw": None,  # opens its connections before its clock starts
        **{name: partial(floor.run, in_flight) for name, floor in floors.items()},
        "complete": lambda: complete_fanout(in_flight, in_flight),
    }
    for name in ("sqlite", "postgres", "widget"):  # one wave through the shared client
        warm[name] = warm["complete"]
    chosen = {name: timers[name] for name in args.rows if name != "widget"}
    try:
        samples = await interleaved(
            args.repeat,
            {name: sampled(server, calls, timer, warm.get(name)) for name, timer in chosen.items()},
        )
    finally:
        for floor in floors.values():
            await floor.aclose()
    if "widget" in args.rows:
        samples.update(
            await widget_pairs(
                args.widget_pairs,
                collected(server, calls, timers["sqlite"], warm["sqlite"]),
                collected(server, calls, timers["widget"], warm["widget"]),
            )
        )
    return samples


def collected(
    server: FakeServerProcess,
    calls: int,
    timer: Callable[[], Awaitable[float]],
    warm: Callable[[], Awaitable[object]] | None,
) -> Callable[[], Awaitable[Sample]]:
    """``sampled(...)`` started on a collected heap (not timed: what earlier runs and the
    warm-up left), then a full collection of what the run left, its CPU kept apart in the
    sample's ``collect``: the run's own garbage, the widget's included."""
    measured = sampled(server, calls, timer)

    async def run() -> Sample:
        if warm is not None:
            await warm()
        gc.collect()
        sample = await measured()
        cpu = time.process_time()
        gc.collect()
        return dataclasses.replace(sample, collect=time.process_time() - cpu)

    return run


async def widget_pairs(
    count: int, run: Callable[[], Awaitable[Sample]], widget: Callable[[], Awaitable[Sample]]
) -> dict[str, list[Sample]]:
    """``count`` pairs of a run without and a run with the widget, back to back, the order
    alternating: ``{"paired": [runs], "widget": [widget runs]}``. What existed before is
    frozen out of the collector (``gc.freeze``): the full collection after each run walks
    what the runs made, not the whole heap (imports, prices: 0.2-0.5 s)."""
    gc.collect()
    gc.freeze()
    try:
        runs: list[Sample] = []
        widgets: list[Sample] = []
        for i in range(count):
            if i % 2 == 0:
                runs.append(await run())
                widgets.append(await widget())
            else:
                widgets.append(await widget())
                runs.append(await run())
        return {"paired": runs, "widget": widgets}
    finally:
        gc.unfreeze()


async def main(args: argparse.Namespace) -> None:
    if "postgres" in args.rows and args.pg is None:
        args.pg = await make_pg_database()
        made_pg = args.pg is not None
    else:
        made_pg = False
    if args.pg is None and "postgres" in args.rows:
        args.rows.remove("postgres")
    if "widget" in args.rows and not start_widget_kernel():
        args.rows.remove("widget")
    if "langgraph" in args.rows and (why := missing()) is not None:
        print(f"langgraph row skipped: {why}")
        args.rows.remove("langgraph")
    runs = Runs(args.pg)
    try:
        with FakeServerProcess(args.latency) as server:
            reset_configuration()
            configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
            try:
                # warm up: imports, prices, schema code, connections
                await runs.run(50, 50)
                if args.pg is not None:
                    await runs.run(50, 50, "postgres")
                if args.memory_calls:
                    server.reset_stats(MEMORY_LATENCY)
                    before = rss_mb()
                    wall = await runs.run(args.memory_calls, args.memory_in_flight)
                    report_memory(args, wall, before, rss_mb(), server.stats()["max_in_flight"])
                for calls, in_flight in args.scales:
                    server.reset_stats(args.latency)
                    samples = await scale_rows(server, runs, calls, in_flight, args)
                    report_scale(calls, in_flight, args, samples, server.stats()["max_in_flight"])
            finally:
                await aclose()
                reset_configuration()
    finally:
        runs.close()
        if made_pg:
            name = args.pg.rsplit("/", 1)[1]
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        "Figures from one run on this machine; on a shared (loaded) machine read CPU ms/call "
        "and compare rows with each other (interleaved), not wall times across runs."
    )


def report_memory(
    args: argparse.Namespace, wall: float, before: float, peak: float, max_in_flight: int
) -> None:
    verdict = "PASS" if peak < 300 else "FAIL"
    print(
        f"{args.memory_calls:,} calls through the runtime (SQLite, {args.memory_in_flight:,} in "
        f"flight, server saw max {max_in_flight}, {MEMORY_LATENCY * 1000:.0f} ms latency): "
        f"{wall:.2f} s; peak RSS of this process {peak:.0f} MB (before the run: "
        f"{before:.0f} MB); target < 300 MB: {verdict}"
    )
    print()


def report_scale(
    calls: int,
    in_flight: int,
    args: argparse.Namespace,
    samples: dict[str, list[Sample]],
    server_max_in_flight: int,
) -> None:
    ideal = ideal_seconds(calls, in_flight, args.latency)
    walls = {name: median([s.wall for s in runs]) for name, runs in samples.items()}
    cpus = {name: median([s.cpu_ms_per_call for s in runs]) for name, runs in samples.items()}
    print(
        f"{calls:,} calls @ {in_flight:,} in flight, {args.latency * 1000:.0f} ms latency "
        f"(ideal {ideal:.2f} s); fake provider in its own process; medians of {args.repeat} "
        f"interleaved runs"
    )
    print(
        f"{'':36}{'wall s':>8}{'x ideal':>8}{'x raw':>8}{'CPU ms/call':>12}{'new conns':>16}"
        f"   wall of each run"
    )
    print(f"{'ideal':36}{ideal:>8.3f}")
    raw = walls.get("raw")
    for name in samples:
        runs, wall = samples[name], walls[name]
        x_ideal = f"{wall / ideal:>8.2f}" if ideal > 0 else f"{'':>8}"
        x_raw = f"{wall / raw:>8.2f}" if raw else f"{'':>8}"
        conns = "/".join(str(s.connections) for s in runs)
        spread = " ".join(f"{s.wall:.2f}" for s in runs)
        cpu = cpus[name]
        print(f"{LABELS[name]:36}{wall:>8.3f}{x_ideal}{x_raw}{cpu:>12.3f}{conns:>11}   {spread}")
    if "langgraph" in walls and "sqlite" in walls:
        print(
            f"peer: LangGraph {walls['langgraph'] / walls['sqlite']:.2f}x the SQLite run's wall, "
            f"{cpus['langgraph'] / cpus['sqlite']:.2f}x its CPU"
        )
    print(f"server: max {server_max_in_flight} requests in flight (expected {in_flight})")
    if ideal > 0 and raw is not None:
        fair = raw <= 1.05 * ideal and server_max_in_flight == in_flight
        print(f"setup check, raw floor <= 1.05x ideal: {'PASS' if fair else 'FAIL (loaded?)'}")
    for store in ("sqlite", "postgres"):  # the same targets on each store (issue 16, item 4)
        if store not in walls or ideal <= 0:
            continue
        bound = 1.5 if in_flight >= 1000 else 1.10
        ratio = walls[store] / ideal
        print(
            f"target, run on {store} <= {bound:.2f}x ideal: "
            f"{'PASS' if ratio <= bound else 'FAIL'} ({ratio:.2f}x)"
        )
        if (calls, in_flight) == (20000, 1000):
            cpu = cpus[store]
            print(
                f"target, run on {store} <= 0.25 ms CPU a call: "
                f"{'PASS' if cpu <= 0.25 else 'FAIL'} ({cpu:.3f} ms)"
            )
    if "widget" in samples:
        report_pairs(samples["paired"], samples["widget"], in_flight)
    print()


def report_pairs(runs: list[Sample], widgets: list[Sample], in_flight: int) -> None:
    """Each pair's CPU and wall ratios, and the verdict on the median of the CPU ratios.

    A pair's CPU ratio is 1 + what the widget run took more than the run without it (each
    with the collection of its garbage) over the run's own CPU (without it, as the rows
    above read it): all the widget adds, its garbage included, and a denominator that a
    collection after the run does not dilute."""
    print(
        f"widget, {len(runs)} pairs (a SQLite run and a widget run back to back, order "
        "alternating; CPU ms a call, + the collection of its garbage after it):"
    )
    cpu_ratios, wall_ratios, extras = [], [], []
    for i, (run, widget) in enumerate(zip(runs, widgets, strict=True), 1):
        extra = (widget.cpu + widget.collect) - (run.cpu + run.collect)
        cpu, wall = 1 + extra / run.cpu, widget.wall / run.wall
        cpu_ratios.append(cpu)
        wall_ratios.append(wall)
        extras.append(extra / run.calls * 1000)
        print(
            f"  pair {i}: {run.cpu_ms_per_call:.3f} + {run.collect / run.calls * 1000:.3f} -> "
            f"{widget.cpu_ms_per_call:.3f} + {widget.collect / widget.calls * 1000:.3f} "
            f"({cpu:.3f}x), wall {run.wall:.2f} -> {widget.wall:.2f} s ({wall:.2f}x)"
        )
    cpu, wall = median(cpu_ratios), median(wall_ratios)
    verdict = "PASS" if cpu <= 1.05 else "FAIL"
    print(
        f"widget: {cpu:.3f}x the run's CPU (median of the pairs; {min(cpu_ratios):.3f}-"
        f"{max(cpu_ratios):.3f}), {median(extras):+.3f} ms a call; {wall:.2f}x its wall"
        + (f"; target <= 1.05x CPU at 1,000 in flight: {verdict}" if in_flight >= 1000 else "")
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
