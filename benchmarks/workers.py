"""Workers through Postgres (DESIGN §10): the same runs in process and on 1, 2, 4 worker
processes.

    python benchmarks/workers.py [--postgres URL] [--noop 10000] [--llm 20000]
                                 [--latency 0.2] [--workers 1,2,4] [--concurrency 200]
                                 [--tree DIR]

``--tree`` runs another checkout's code (its ``baton_nb`` first on ``sys.path``, its
workers started in it): an A/B of two trees by the same script, in turns.

Two workloads (tests/workers_app.py): a map of N no-op children (``noop_map``) and a map
of N children each doing one ``ctx.complete`` against the fake provider at 200 ms
latency (``llm_map``; the server in its own process, benchmarks/_fake_server.py). Each
runs in process (``await wf.run()`` on Postgres, the run's concurrency the same as one
worker's) and then submitted to 1, 2 and 4 ``baton-nb worker`` processes started
beforehand (warm). Printed: wall seconds from submit to the run's end, steps/s, the
speed-up over one worker, Postgres transactions per step (``pg_stat_database``, every
process together) and each worker's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from _fake_server import KEY, FakeServerProcess  # benchmarks/_fake_server.py

ROOT = Path(__file__).resolve().parents[1]
if "--tree" in sys.argv:  # before baton_nb is imported: that checkout's code throughout
    ROOT = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
sys.path.insert(0, str(ROOT))

import baton_nb as bn  # noqa: E402
from baton_nb.store import open_worker_store  # noqa: E402
from tests import workers_app as app  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def _fresh_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    con = await asyncpg.connect(server + "/postgres")
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def _commits(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    con = await asyncpg.connect(url)
    try:
        await con.execute("SELECT pg_stat_clear_snapshot()")
        value = await con.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await con.close()
    return int(value or 0)


def _peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Workers:
    def __init__(self, url: str, ref: str, n: int, concurrency: int, env: dict[str, str]):
        self.url = url
        command = [sys.executable, "-m", "baton_nb.cli", "worker", ref, "--db", url]
        command += ["--concurrency", str(concurrency), "--quiet", "--grace", "5"]
        self.procs = [
            subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}) for _ in range(n)
        ]

    async def ready(self) -> None:
        pids = {p.pid for p in self.procs}
        async with await open_worker_store(self.url) as store:
            with anyio.fail_after(60):
                while not pids <= {w.pid for w in await store.workers()}:
                    await anyio.sleep(0.1)

    def stop(self) -> list[float]:
        rss = [_peak_rss_mb(p.pid) for p in self.procs]
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        return rss


async def _timed(url: str, coro: Any) -> tuple[float, int, Any]:
    before = await _commits(url)
    start = time.perf_counter()
    run = await coro
    wall = time.perf_counter() - start
    await anyio.sleep(0.6)  # pg_stat_database is updated at most every 500 ms
    return wall, await _commits(url) - before, run


async def bench(
    url: str, wf: Any, ref: str, params: dict[str, Any], steps: int, counts: list[int],
    concurrency: int, env: dict[str, str],
) -> list[tuple[str, float, float, float, str]]:  # fmt: skip
    rows = []
    wall, xacts, run = await _timed(
        url, wf.run(params, db=url, concurrency=concurrency, display=False)
    )
    assert run.status == "completed", run.status
    rows.append(("in process", wall, steps / wall, xacts / steps, "-"))
    for n in counts:
        workers = Workers(url, ref, n, concurrency, env)
        try:
            await workers.ready()
            submitted = wf.submit(params, db=url, concurrency=concurrency * n)

            async def go(submitted: Any = submitted) -> bn.Run:
                return await (await submitted).wait()

            wall, xacts, run = await _timed(url, go())
        finally:
            rss = workers.stop()
        assert run.status == "completed", run.status
        peak = "/".join(f"{r:.0f}" for r in rss)
        rows.append((f"{n} worker{'s' if n > 1 else ''}", wall, steps / wall, xacts / steps, peak))
    return rows


def _print(title: str, rows: list[tuple[str, float, float, float, str]]) -> None:
    print(f"\n{title}")
    print(f"{'':<12} {'wall s':>8} {'steps/s':>9} {'x 1 worker':>10} {'xact/step':>9}  peak RSS MB")
    one = next((r[2] for r in rows if r[0] == "1 worker"), None)
    for name, wall, rate, xacts, rss in rows:
        ratio = f"{rate / one:.2f}" if one else "-"
        print(f"{name:<12} {wall:>8.2f} {rate:>9.0f} {ratio:>10} {xacts:>9.2f}  {rss}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=f"{SERVER}/baton_bench_workers")
    parser.add_argument("--noop", type=int, default=10_000)
    parser.add_argument("--llm", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose code runs")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x]
    url = args.postgres
    await _fresh_database(url)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"code {ROOT}; Postgres {url}; {os.cpu_count()} CPUs; load average {load}")
    print(f"worker --concurrency {args.concurrency} (in process: the same)")
    if args.noop:
        rows = await bench(
            url, app.noop_map, "tests.workers_app:noop_map", {"n": args.noop}, args.noop + 2,
            counts, args.concurrency, {},
        )  # fmt: skip
        _print(f"no-op map, {args.noop:,} children", rows)
    if args.llm:
        server = FakeServerProcess(args.latency)
        try:
            env = {"OPENAI_BASE_URL": f"{server.base_url}/v1", "OPENAI_API_KEY": KEY}
            os.environ.update(env)
            bn.configure(providers={"openai": {"base_url": env["OPENAI_BASE_URL"], "api_key": KEY}})
            rows = await bench(
                url, app.llm_map, "tests.workers_app:llm_map", {"n": args.llm}, args.llm + 2,
                counts, args.concurrency, env,
            )  # fmt: skip
        finally:
            server.close()
        _print(f"LLM map, {args.llm:,} calls at {args.latency * 1000:.0f} ms", rows)


if __name__ == "__main__":
    anyio.run(main)
