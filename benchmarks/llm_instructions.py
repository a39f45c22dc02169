"""The CPU a call costs through the runtime, with the network replaced (issue 16).

    python benchmarks/llm_instructions.py [--calls 2000,6000] [--in-flight 1000]
                                          [--latency 0.02] [--repeat 3]
    python benchmarks/llm_instructions.py --callgrind [--calls 2000,6000] [--widget] ...

``benchmarks/llm_runtime.py``'s workflow (prompts, a map child per prompt doing
``ctx.complete``, a join; on SQLite, ``await wf.run(concurrency=in_flight)``) run in this
process with the direct path's HTTP exchange, ``H1Pools.post`` (``baton_nb/llm/_h1.py``),
replaced by a sleep of ``--latency`` returning an answer of the fake provider captured
once at the start (status, reason, raw headers, body): everything above the socket is
real, the answer's parse, usage, price and store write included. No server process and
no socket, so the figures do not move with another process's scheduling.

Default mode: each size ``--repeat`` times, printing ``time.process_time()`` of the run
(``await wf.run``) per call, and the median. Process time still moves ±10 % with the load
of a shared machine: compare trees in turns (base, branch, branch, base).

``--widget``: each run also with the DAG widget displayed in ``benchmarks/widget.py``'s
in-process kernel (``display=None``), the two interleaved; under callgrind the widget's
redraw intervals are ``--slowdown`` times longer (a run is ~37 times slower there: the
throttle's one-second cap would redraw every second, ~140 times a run instead of ~9).
Each timed run includes the collection of its garbage after it (the widget's included),
as ``llm_runtime.py``'s pairs do. Under ``py-spy record -r 500 -f raw`` it shows where the
widget's share goes, its marks included (``widget_phases.py`` does not time them).

``--callgrind``: the script runs itself under ``valgrind --tool=callgrind
--instr-atstart=no --dump-instr=no`` (nothing counted while it starts, imports and warms
up). Around each timed run it asks ``callgrind_control`` (from a child process, while
this one keeps polling so valgrind's scheduler serves the request) to switch the
instrumentation on and zero the counters, then to dump them and switch it off: each dump
holds the timed run alone (plus a few polls of the control's wait, the same at every
size). It prints the instructions of each run per call and the **slope** between the two
sizes, ``(Ir(b) - Ir(a)) / (b - a)``: the instructions one more call costs, the fixed
cost of a run cancelled. Repeatable under load to about ±1 % (the writer's commit
batches follow the run's timing). The dumps stay in ``--out`` (default a temp dir) for
``callgrind_annotate --inclusive=yes FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _fake_server import KEY, FakeServerProcess, median  # benchmarks/_fake_server.py
from llm_runtime import MODEL, Runs, start_widget_kernel  # benchmarks/llm_runtime.py

from baton_nb.llm import LLMRequest, _h1, aclose, complete, configure, reset_configuration

Answer = tuple[int, str, tuple[tuple[bytes, bytes], ...], bytes]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", default="2000,6000", help="sizes timed, comma-separated (default 2000,6000)"
    )
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.02, help="the replaced post's sleep")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each size (process time)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    parser.add_argument("--out", default=None, help="directory of the callgrind dumps")
    parser.add_argument(
        "--widget",
        action="store_true",
        help="each size also with the widget displayed in an in-process kernel, interleaved",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=37.0,
        help="under callgrind, the widget's redraw intervals times this (default 37: how much"
        " slower a run is under valgrind here), so that it redraws as often a run as natively",
    )
    parser.add_argument("--under-valgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.calls = [int(c) for c in args.calls.split(",") if c]
    return args


async def captured_answer() -> Answer:
    """One real answer of the fake provider, as ``H1Pools.post`` returned it."""
    answers: list[Answer] = []
    real = _h1.H1Pools.post

    async def recording(self: Any, *args: Any, **kwargs: Any) -> Answer:
        answer = await real(self, *args, **kwargs)
        answers.append(answer)
        return answer

    with FakeServerProcess(0.0) as server:
        configure(providers={"openai": {"base_url": f"{server.base_url}/v1", "api_key": KEY}})
        _h1.H1Pools.post = recording  # type: ignore[method-assign]
        try:
            message = {"role": "user", "content": "Summarise document 0 in one sentence."}
            await complete(LLMRequest(MODEL, [message], temperature=0, max_tokens=64))
        finally:
            _h1.H1Pools.post = real  # type: ignore[method-assign]
            await aclose()
    assert len(answers) == 1 and answers[0][0] == 200, answers
    return answers[0]


def replace_network(answer: Answer, latency: float) -> None:
    """``H1Pools.post`` becomes a sleep returning ``answer`` (the pools are never used)."""

    async def post(self: Any, target: Any, body: bytes, timeout: Any) -> Answer:
        await asyncio.sleep(latency)
        return answer

    _h1.H1Pools.post = post  # type: ignore[method-assign]


REDRAWS = [0]  # the widget's redraws, all runs


def count_redraws() -> None:
    from baton_nb.widget import _dag

    redraw = _dag.DagWidget._redraw

    def counted(self: Any) -> None:
        REDRAWS[0] += 1
        redraw(self)

    _dag.DagWidget._redraw = counted  # type: ignore[method-assign]


def slow_redraws(factor: float) -> None:
    """The widget's throttle with its interval and longest gap ``factor`` times longer: under
    valgrind a run takes ~37 times longer and would redraw every second (the longest gap)
    ~140 times a run instead of ~9 (a redraw's own share of the time, its other bound,
    scales by itself)."""
    from baton_nb.widget import _dag
    from baton_nb.widget._throttle import Throttle

    class SlowThrottle(Throttle):
        def __init__(self, fn: Any, interval: float = 0.1, **kwargs: Any) -> None:
            super().__init__(fn, interval * factor, max_interval=factor, **kwargs)

    _dag.Throttle = SlowThrottle  # type: ignore[misc]


def control(*args: str) -> None:
    """``callgrind_control ARGS PID`` for this process, polled: a blocking wait would keep
    valgrind's scheduler, which serves the request, from running."""
    proc = subprocess.Popen(
        ["callgrind_control", *args, str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None:
        time.sleep(0.005)
    if proc.returncode:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed ({proc.returncode})")


async def timed(runs: Runs, calls: int, in_flight: int, counted: bool, mode: str) -> float:
    """Process time of one run (the counters on around it under callgrind), and the
    collection of its garbage after it (the widget's included)."""
    if counted:
        control("-i", "on")
        control("-z")
    cpu = time.process_time()
    await runs.run(calls, in_flight, display=None if mode == "widget" else False)
    gc.collect()
    cpu = time.process_time() - cpu
    if counted:
        control("-d", f"{mode}calls{calls}")
        control("-i", "off")
    return cpu


async def measure(args: argparse.Namespace) -> None:
    reset_configuration()
    answer = await captured_answer()
    configure(providers={"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": KEY}})
    replace_network(answer, args.latency)
    modes = ("", "widget") if args.widget else ("",)
    if args.widget and not start_widget_kernel():
        sys.exit("--widget needs ipykernel")
    if args.widget:
        count_redraws()
    if args.widget and args.under_valgrind:
        slow_redraws(args.slowdown)
    runs = Runs(None)
    try:
        for mode in modes:  # warm up: imports, prices, schema code, the widget's
            await runs.run(50, 50, display=None if mode == "widget" else False)
        gc.collect()
        for calls in args.calls:
            repeat = 1 if args.under_valgrind else args.repeat
            per_call: dict[str, list[float]] = {mode: [] for mode in modes}
            redraws = REDRAWS[0]
            for turn in range(repeat):
                for mode in modes if turn % 2 == 0 else modes[::-1]:
                    cpu = await timed(runs, calls, args.in_flight, args.under_valgrind, mode)
                    per_call[mode].append(1e6 * cpu / calls)
            if args.widget:
                print(f"{calls} calls: {(REDRAWS[0] - redraws) / repeat:.1f} redraws a run")
            for mode in modes:
                shown = " ".join(f"{x:.1f}" for x in per_call[mode])
                print(
                    f"{calls} calls @ {args.in_flight}{' ' + mode if mode else ''}:"
                    f" process time us/call {shown} (median {median(per_call[mode]):.1f})",
                    flush=True,
                )
    finally:
        await aclose()
        reset_configuration()
        runs.close()


def total_instructions(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def under_callgrind(args: argparse.Namespace, argv: list[str]) -> None:
    out = Path(args.out or tempfile.mkdtemp(prefix="baton-callgrind-"))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("callgrind.out.*"):
        old.unlink()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--dump-instr=no",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        sys.executable,
        __file__,
        *argv,
        "--under-valgrind",
    ]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    found: dict[tuple[str, int], int] = {}
    for dump in out.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: .*?(widget|)calls(\d+)", text, re.MULTILINE)
        if trigger:
            found[trigger.group(1), int(trigger.group(2))] = total_instructions(dump)
    for mode in ("", "widget") if args.widget else ("",):
        shown = f" {mode}" if mode else ""
        for calls in args.calls:
            per_call = found[mode, calls] / calls / 1e6
            print(f"{calls} calls @ {args.in_flight}{shown}: {per_call:.4f} M instr/call")
        if len(args.calls) >= 2:
            a, b = args.calls[0], args.calls[-1]
            slope = (found[mode, b] - found[mode, a]) / (b - a)
            print(f"slope {a} -> {b}{shown}: {slope / 1e6:.4f} M instructions a call")
        if mode == "widget":
            for calls in args.calls:
                ratio = found["widget", calls] / found["", calls]
                print(f"{calls} calls: the widget run {ratio:.3f}x the run's instructions")
    print(f"(dumps in {out})")
    if args.out is None:
        print(f"(remove {out} when done)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.callgrind and not args.under_valgrind:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            sys.exit("--callgrind needs valgrind and callgrind_control on PATH")
        under_callgrind(args, [a for a in argv if a != "--callgrind"])
        return
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
