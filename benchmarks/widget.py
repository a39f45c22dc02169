"""Cost of watching a run (DESIGN §9): the DAG widget must not slow a 1,000-node run.

    python benchmarks/widget.py [--repeat 15] [--steps 1000]

A fan-out of no-op steps + join on SQLite (a temp dir), run the way a notebook user runs
it, ``await wf.run()``, inside an IPython kernel started in this process
(``ipykernel.inprocess``). The runtime sees a kernel, so ``display=None`` takes the real
path: ``attach()`` builds the ``DagWidget`` and displays it, the widget follows the run's
events, its throttled updates are JSON-encoded and published on the kernel's IOPub
channel, and the saved snapshot replaces it when the run ends. (No frontend is
connected: published messages are dropped after encoding, where a real kernel's IO
thread hands them to zmq.) Three modes, interleaved, medians of ``--repeat`` runs each:

- ``off``: ``display=False``, the floor;
- ``widget``: ``display=None`` in the kernel, i.e. the widget;
- ``text``: ``display="text"``, the tqdm line (written to a buffer).

The widget's time is split by phase (time spent inside its code): *display* (widget
built, comm opened, first send, display message), *final* (last full send + the saved
snapshot) and, for the run itself, *event publish*: the total overhead minus those two,
i.e. the listener marking nodes dirty on every event, the throttled sends, and what they
cost the runtime around them. A heartbeat task (``asyncio.sleep(0.01)`` in a loop) runs
beside every run and records the worst event-loop lag.

Bar: event publish overhead < 5 % of the no-widget time.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel imports debugpy

import argparse
import asyncio
import atexit
import contextlib
import functools
import gc
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import baton_nb as bn

BAR = 0.05  # event publish overhead must stay below 5 % of the no-widget time
TICK = 0.01  # heartbeat period, seconds
MODES = ("off", "widget", "text")
DISPLAY: dict[str, bool | str | None] = {"off": False, "widget": None, "text": "text"}


async def noop(ctx: bn.Context) -> None:
    return None


def fanout_workflow(db: str, steps: int) -> bn.Workflow:
    wf = bn.Workflow("bench-widget", db=db)
    wf.add("root", noop)
    for i in range(steps):
        wf.add(f"s{i}", noop, deps=["root"])
    wf.add("join", noop, deps=[f"s{i}" for i in range(steps)])
    return wf


# ── a kernel in this process, and what the widget publishes ─────────────────


@dataclass
class Published:
    """IOPub traffic of one run (comm messages, displays, bytes) and widget phase times."""

    comm_msgs: int = 0
    displays: int = 0
    bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    widgets: list[Any] = field(default_factory=list)

    def reset(self) -> None:
        self.comm_msgs = self.displays = self.bytes = 0
        self.phases.clear()
        self.widgets.clear()


def start_kernel(phases: bool = True, keep_widgets: bool = True) -> Published:
    """An in-process IPython kernel: ``get_ipython().kernel`` is set and comms are real.

    ``phases``: time the widget's phases (a wrapper around its listener, called for every
    event: the harness's own cost, left out where only the run's CPU is measured).
    ``keep_widgets``: every widget constructed is kept in ``Published.widgets`` (until
    ``reset``), and with it the run it shows; without it, none is kept."""
    from ipykernel.inprocess.manager import InProcessKernelManager
    from ipykernel.kernelbase import Kernel
    from ipywidgets import Widget

    manager: Any = InProcessKernelManager()
    manager.start_kernel()
    kernel: Any = manager.kernel  # an InProcessKernel; its IOPub internals are used below
    assert kernel is not None
    # What IPKernelApp does with Kernel.instance(): comms only publish when it is set.
    for cls in type(kernel).mro():
        if isinstance(cls, type) and issubclass(cls, Kernel):
            cls._instance = kernel
    assert Kernel.initialized() and Kernel.instance() is manager.kernel
    # The in-process kernel loops IOPub back to in-process clients, decoding every message
    # on its IO thread; a real kernel only hands the bytes to zmq there. No client listens
    # here: drop the messages once sent instead of decoding them.
    socket = kernel._underlying_iopub_socket
    socket.unobserve(kernel._io_dispatch, names=["message_sent"])

    def drain(_change: Any) -> None:
        while not socket.queue.empty():
            socket.queue.get_nowait()

    socket.observe(drain, names=["message_sent"])
    atexit.register(_stop_io_thread, kernel.iopub_thread)

    published = Published()
    serialize = kernel.session.serialize

    def counting_serialize(msg: dict[str, Any], ident: Any = None) -> list[bytes]:
        parts: list[bytes] = serialize(msg, ident)
        kind = msg["header"]["msg_type"]
        if kind in ("comm_open", "comm_msg"):
            published.comm_msgs += 1
        elif kind in ("display_data", "update_display_data"):
            published.displays += 1
        published.bytes += sum(len(part) for part in parts)
        return parts

    kernel.session.serialize = counting_serialize
    if keep_widgets:
        Widget.on_widget_constructed(published.widgets.append)
    if phases:
        _time_phases(published.phases)
    return published


def _stop_io_thread(thread: Any) -> None:
    """Stop the kernel's IOPub thread at exit by stopping its loop only: ipykernel 7's
    ``IOPubThread.stop`` cancels the thread's periodic task without letting its loop run
    again, and "Task was destroyed but it is pending!" is printed as the process ends."""
    if thread.thread.is_alive():
        thread.io_loop.add_callback(thread.io_loop.stop)
        thread.thread.join(timeout=5)


def timed_into(
    phases: dict[str, float],
    fn: Callable[..., Any],
    phase: str,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[..., Any]:
    """``fn``, adding the ``clock`` time each call of it takes to ``phases[phase]``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + clock() - start

    return wrapper


def _time_phases(phases: dict[str, float]) -> None:
    """Add up the time spent in the widget's display, redraw and final phases."""
    import baton_nb.widget as widget_pkg
    from baton_nb.widget import Attached, DagWidget

    timed = functools.partial(timed_into, phases)

    def timed_listener(fn: Callable[..., Any]) -> Callable[..., Any]:
        final = timed(fn, "final")  # on WorkflowFinished the listener calls finish()

        @functools.wraps(fn)
        def wrapper(self: Any, event: Any) -> Any:
            if isinstance(event, bn.WorkflowFinished):
                return final(self, event)
            start = time.perf_counter()
            try:
                return fn(self, event)
            finally:
                phases["listener"] = phases.get("listener", 0.0) + time.perf_counter() - start

        return wrapper

    # attach() is imported by the runtime when a run starts: patching the package is seen.
    widget_pkg.attach = timed(widget_pkg.attach, "display")
    DagWidget._on_event = timed_listener(DagWidget._on_event)  # type: ignore[method-assign]
    DagWidget._redraw = timed(DagWidget._redraw, "redraws")  # type: ignore[method-assign]
    Attached.close = timed(Attached.close, "final")  # type: ignore[method-assign]


# ── one timed run ────────────────────────────────────────────────────────────


@dataclass
class Sample:
    seconds: float
    max_lag: float
    redraws: int = 0
    comm_msgs: int = 0
    kbytes: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


async def heartbeat(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - start - TICK)


async def timed_run(wf: bn.Workflow, mode: str, published: Published, steps: int) -> Sample:
    published.reset()
    gc.collect()  # every run starts from the same heap: a full collection is not left pending
    stop, lags = asyncio.Event(), [0.0]
    beat = asyncio.create_task(heartbeat(stop, lags))
    await asyncio.sleep(0)  # the heartbeat is ticking before the run starts
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink):  # the text line goes to a buffer, not the terminal
        start = time.perf_counter()
        run = await wf.run(display=DISPLAY[mode], concurrency=64)
        seconds = time.perf_counter() - start
    stop.set()
    await beat
    assert run.status == "completed", run.failed_steps
    sample = Sample(seconds, max(lags), phases=dict(published.phases))
    if mode == "widget":
        widgets = [w for w in published.widgets if isinstance(w, bn.DagWidget)]
        assert len(widgets) == 1, f"expected the run to display one DagWidget, got {widgets}"
        widget = widgets[0]
        assert widget.run is run and len(widget.state()) == steps + 2
        assert all(node["s"] == "completed" for node in widget.state().values())
        assert published.comm_msgs >= 2 and published.displays >= 2, published
        sample.redraws, sample.comm_msgs = widget.redraws, published.comm_msgs
        sample.kbytes = published.bytes / 1000
    elif mode == "text":
        assert f"{steps + 2}/{steps + 2} completed" in sink.getvalue()
    return sample


# ── report ───────────────────────────────────────────────────────────────────


def median(values: Any) -> float:
    return float(statistics.median(list(values)))


def summarize(samples: dict[str, list[Sample]], steps: int, repeat: int) -> None:
    total = steps + 2
    off = median(s.seconds for s in samples["off"])
    print(
        f"fan-out {steps} no-op steps + root + join ({total} nodes), SQLite, concurrency 64, "
        f"in an in-process IPython kernel; {repeat} interleaved runs per mode, medians\n"
    )
    print(
        f"{'mode':<24} {'time':>7} {'steps/s':>8} {'vs floor':>8} {'max lag':>8} "
        f"{'redraws':>7} {'msgs':>5} {'sent':>8}"
    )
    for mode, label in (
        ("off", "display=False (floor)"),
        ("widget", "widget (display=None)"),
        ("text", 'display="text" (tqdm)'),
    ):
        runs = samples[mode]
        seconds = median(s.seconds for s in runs)
        ratio = "" if mode == "off" else f"{(seconds - off) / off:+.1%}"
        lag = median(s.max_lag for s in runs)
        extra = (
            f"{median(s.redraws for s in runs):>7.0f} {median(s.comm_msgs for s in runs):>5.0f} "
            f"{median(s.kbytes for s in runs):>6.0f}kB"
            if mode == "widget"
            else ""
        )
        print(
            f"{label:<24} {seconds * 1000:>5.0f}ms {total / seconds:>6.0f}/s {ratio:>8} "
            f"{lag * 1000:>6.0f}ms {extra}"
        )

    widget = samples["widget"]
    overhead = median(s.seconds for s in widget) - off

    def phase(*names: str) -> float:
        return median(sum(s.phases.get(n, 0.0) for n in names) for s in widget)

    display, final = phase("display"), phase("final")
    listener, sends, events = phase("listener"), phase("redraws"), phase("listener", "redraws")
    print("\nwidget time by phase, inside its code (ms, and % of the no-widget time):")
    for label, value in (
        ("display: build, open comm, first send, display", display),
        ("event publish: listener on every event", listener),
        ("event publish: throttled sends", sends),
        ("final: last full send + saved snapshot", final),
        ("outside the widget's code (GC, runtime, noise)", overhead - display - events - final),
        ("end to end (median widget run - median floor run)", overhead),
    ):
        print(f"  {label:<52} {value * 1000:>6.1f} ms {value / off:>6.1%}")
    verdict = "PASS" if events / off < BAR else "FAIL"
    print(
        f"\nevent publish overhead {events / off:.2%} of the no-widget time; bar < {BAR:.0%}: "
        f"{verdict}  (end to end, with display and saved snapshot: {overhead / off:+.1%})"
    )
    lag_off = median(s.max_lag for s in samples["off"])
    lag_widget = median(s.max_lag for s in widget)
    print(
        f"worst heartbeat lag (median over runs): {lag_widget * 1000:.0f} ms with the widget, "
        f"{lag_off * 1000:.0f} ms without"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per mode (interleaved)")
    parser.add_argument("--steps", type=int, default=1000, help="fan-out width")
    args = parser.parse_args()
    published = start_kernel()
    from baton_nb.widget import in_kernel

    if not in_kernel():
        raise SystemExit("the in-process kernel is not visible: cannot take the kernel path")
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-widget-"))
    wf = fanout_workflow(f"sqlite:///{tmp / 'bench.db'}", args.steps)
    for mode in MODES * 2:  # warm up: imports, schema, caches, the widget's first display
        await timed_run(wf, mode, published, args.steps)
    samples: dict[str, list[Sample]] = {mode: [] for mode in MODES}
    for i in range(args.repeat):
        order = MODES if i % 2 == 0 else MODES[::-1]  # no mode always runs first
        for mode in order:
            samples[mode].append(await timed_run(wf, mode, published, args.steps))
    summarize(samples, args.steps, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
