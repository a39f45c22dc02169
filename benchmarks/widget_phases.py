"""Where the DAG widget's CPU goes on an LLM fan-out (issue 16): its own code, by phase.

    PYTHONPATH=$PWD python benchmarks/widget_phases.py [--calls 20000] [--in-flight 1000]
                                                       [--runs 3]

``benchmarks/llm_runtime.py``'s workflow (a map child per prompt doing ``ctx.complete``,
SQLite) against its fake provider in its own process, run with the widget displayed in
the in-process kernel of ``benchmarks/widget.py`` (``display=None``). The thread CPU
(``time.thread_time()``) spent inside the widget's functions is summed per phase: the
redraws (and within them the node rows, the header, the sends), the end of the run (the
end-of-run check, the saved snapshot and its parts) and the display. The marks the
runtime calls inline (``DagWidget._mark``, ~60,000 at 20,000 calls) are not timed: a
timer around each would cost more than they do. Printed beside the run's process CPU:
the widget's share, steadier than the ``widget`` pairs of ``llm_runtime.py`` on a noisy
machine (they difference two whole runs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import llm_runtime as bench
from widget import timed_into  # benchmarks/widget.py

from baton_nb.widget import _dag, _snapshot, _state

PHASES: dict[str, float] = {}
OWN = ("redraws", "end of run", "display")  # the phases that are the widget's whole cost


def _timed(owner: Any, name: str, label: str) -> None:
    setattr(owner, name, timed_into(PHASES, getattr(owner, name), label, time.thread_time))


def _instrument() -> None:
    import baton_nb.widget as widget_pkg

    _timed(_dag.DagWidget, "_redraw", "redraws")
    _timed(_dag.DagWidget, "_changed", "  node rows")
    _timed(_dag.DagWidget, "_header", "  header")
    _timed(_dag.DagWidget, "send_state", "  sends")
    _timed(_dag.DagWidget, "finish", "end of run")
    _timed(_state, "moved", "  end-of-run check")
    _timed(_dag, "snapshot_bundle", "  saved snapshot")
    _timed(_snapshot, "static_html", "    static view")
    _timed(_snapshot, "_details", "    details")
    _timed(_snapshot, "_saved", "    columns")
    _timed(widget_pkg, "attach", "display")


async def main(args: argparse.Namespace) -> None:
    if not bench.start_widget_kernel():
        raise SystemExit("needs ipykernel (pip install -e '.[bench]')")
    _instrument()
    runs = bench.Runs(None)
    try:
        with bench.FakeServerProcess(args.latency) as server:
            bench.reset_configuration()
            bench.configure(
                providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": bench.KEY}}
            )
            await runs.run(50, 50)  # warm up: imports, prices, connections
            for i in range(args.runs):
                await bench.complete_fanout(args.in_flight, args.in_flight)
                gc.collect()
                PHASES.clear()
                cpu = time.process_time()
                await runs.run(args.calls, args.in_flight, display=None)
                cpu = time.process_time() - cpu
                own = sum(PHASES.get(phase, 0.0) for phase in OWN)
                print(
                    f"run {i + 1}: {args.calls:,} calls @ {args.in_flight:,}, run CPU "
                    f"{cpu * 1000:.0f} ms; the widget's own {own * 1000:.0f} ms = "
                    f"{own / cpu * 100:.1f} %"
                )
                for label, seconds in PHASES.items():
                    print(f"   {label:22s} {seconds * 1000:7.1f} ms")
    finally:
        runs.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
