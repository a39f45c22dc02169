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
speed-up over one worker, claims/s (claims of the task queue that returned tasks, and the
tasks per claim), Postgres round trips per step (every process together: this one
and each worker, counted by benchmarks/_roundtrips.py, which the workers are started
through), CPU per step (user + system, from /proc: of this process for the run in
process, of the workers together for a submitted run; Postgres's not included, its
backends come and go with the pools), the CPU this process spent meanwhile waiting for
and watching the submitted run (``run.wait()`` follows its changes), and each worker's
peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _roundtrips  # benchmarks/_roundtrips.py
import anyio
import asyncpg
from _fake_server import KEY, FakeServerProcess  # benchmarks/_fake_server.py

BENCHMARKS = Path(__file__).resolve().parent
COUNTS = tempfile.mkdtemp(prefix="baton-bench-roundtrips-")  # one file per process
atexit.register(shutil.rmtree, COUNTS, ignore_errors=True)

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
        # Started through benchmarks/_roundtrips.py: their round trips counted too.
        command = [sys.executable, str(BENCHMARKS / "_roundtrips.py"), COUNTS, "baton_nb.cli"]
        command += ["worker", ref, "--db", url]
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


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` (/proc, clock ticks)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


@dataclass
class Row:
    name: str
    wall: float
    steps: int
    round_trips: int
    claims: int
    claimed: int
    cpu: float  # seconds: the run's own process (in process) or the workers together
    watch_cpu: float  # seconds: this process while it waited for the workers' run
    rss: str

    @property
    def rate(self) -> float:
        return self.steps / self.wall


async def _timed(name: str, steps: int, coro: Any, pids: list[int]) -> tuple[Row, Any]:
    trips, claims, claimed = _roundtrips.read(COUNTS)
    cpu, mine = _cpu_seconds(pids), time.process_time()
    start = time.perf_counter()
    run = await coro
    wall = time.perf_counter() - start
    cpu, mine = _cpu_seconds(pids) - cpu, time.process_time() - mine
    after = _roundtrips.read(COUNTS)
    assert run.status == "completed", run.status
    done = (after[0] - trips, after[1] - claims, after[2] - claimed)
    if not pids:  # in process: the run is this process's work
        return Row(name, wall, steps, *done, mine, 0.0, "-"), run
    return Row(name, wall, steps, *done, cpu, mine, "-"), run


async def bench(
    url: str, wf: Any, ref: str, params: dict[str, Any], steps: int, counts: list[int],
    concurrency: int, env: dict[str, str],
) -> list[Row]:  # fmt: skip
    row, _ = await _timed(
        "in process", steps, wf.run(params, db=url, concurrency=concurrency, display=False), []
    )
    rows = [row]
    for n in counts:
        workers = Workers(url, ref, n, concurrency, env)
        try:
            await workers.ready()
            submitted = wf.submit(params, db=url, concurrency=concurrency * n)

            async def go(submitted: Any = submitted) -> bn.Run:
                return await (await submitted).wait()

            pids = [p.pid for p in workers.procs]
            row, _ = await _timed(f"{n} worker{'s' if n > 1 else ''}", steps, go(), pids)
        finally:
            rss = workers.stop()
        row.rss = "/".join(f"{r:.0f}" for r in rss)
        rows.append(row)
    return rows


def _print(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(
        f"{'':<12} {'wall s':>8} {'steps/s':>9} {'x 1 worker':>10} {'claims/s':>9} "
        f"{'tasks/claim':>11} {'trips/step':>10} {'CPU us/step':>11} {'watch us/step':>13}"
        "  peak RSS MB"
    )
    one = next((r.rate for r in rows if r.name == "1 worker"), None)
    for r in rows:
        ratio = f"{r.rate / one:.2f}" if one else "-"
        claims = f"{r.claims / r.wall:.0f}" if r.claims else "-"
        per = f"{r.claimed / r.claims:.1f}" if r.claims else "-"
        print(
            f"{r.name:<12} {r.wall:>8.2f} {r.rate:>9.0f} {ratio:>10} {claims:>9} {per:>11} "
            f"{r.round_trips / r.steps:>10.3f} {r.cpu / r.steps * 1e6:>11.0f} "
            f"{r.watch_cpu / r.steps * 1e6 if r.watch_cpu else float('nan'):>13.0f}  {r.rss}"
        )


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
    _roundtrips.install(COUNTS)  # this process's round trips (in process: all of them)
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
