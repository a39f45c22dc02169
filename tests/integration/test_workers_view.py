"""What the views of a run on workers show while it goes (docs/workers.md, Quick start):
``wf.run(workers=True)``'s widget and text line, a displayed ``bn.SubmittedRun`` (submitted
or attached) and ``bn.watch``'s ``live.run`` follow the run as stored: its status (pending,
running, then its end), its start, the map's children as the workers store them. REAL
worker subprocesses on the local Postgres (``baton-nb worker tests.workers_app:noop_map``).
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb._workers_front import run_on_workers
from baton_nb.widget import DagWidget
from baton_nb.widget._progress import TextProgress
from tests import workers_app as app
from tests.integration.test_workers import WorkerProcs, _until, pg, workers

pytestmark = pytest.mark.anyio
__all__ = ["pg", "workers"]  # the fixtures, imported
N = 30  # the map's items; each takes 0.3 s, on 2 workers of 3 slots: ~1.5 s of the run
SLOW = {"STEP_DELAY": "0.3"}
ARGS = ("--concurrency", "3")


def _children_completed(widget: DagWidget) -> int:
    """The map's children the view shows completed (its state as sent)."""
    state = widget.state()
    return sum(1 for name, node in state.items() if name.startswith("double[") and
               node.get("s") == "completed")  # fmt: skip


class Seen:
    """What a view showed at each look, while the run went."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, Any, int, str]] = []

    def look(self, widget: DagWidget, run: bn.Run) -> None:
        header = widget.header
        self.samples.append(
            (str(header.get("status")), header.get("t0"), _children_completed(widget), run.status)
        )

    def mid_run(self, started: datetime | None) -> list[tuple[str, Any, int, str]]:
        """Looks where the view said running since the run's start (``started``: its
        elapsed time), with some of the map's children completed, not all, and the run it
        shows running too."""
        assert started is not None
        t0 = round(started.timestamp(), 3)
        return [
            s for s in self.samples
            if s[0] == "running" and s[1] == t0 and 0 < s[2] < N and s[3] == "running"
        ]  # fmt: skip


class Views:
    """``show_progress`` of ``wf.run(workers=True)``: the widget and the text line (whole
    lines: not a terminal) of the Run it is given, both kept."""

    def __init__(self) -> None:
        self.widget: DagWidget | None = None
        self.run: bn.Run | None = None
        self.stream = io.StringIO()
        self.text: TextProgress | None = None

    def __call__(self, run: bn.Run, _display: Any) -> Views:
        self.run = run
        self.widget = DagWidget(run)
        self.text = TextProgress(run, stream=self.stream)
        return self

    def close(self) -> None:
        assert self.widget is not None and self.text is not None
        self.text.close()
        self.widget.finish()


async def test_workers_true_widget_and_text_line_follow_the_map_as_the_workers_store_it(
    workers: WorkerProcs,
) -> None:
    """The widget read ``RUNNING 1/2 · summarise: pending · items not known yet`` (and
    ``live.run.status`` ``pending``) until it jumped to the end; the text line wrote
    ``1/2 completed`` then the last line only."""
    views, seen = Views(), Seen()
    for _ in range(2):
        workers.start("tests.workers_app:noop_map", args=ARGS, **SLOW)
    async with anyio.create_task_group() as tg:
        done: list[bn.Run] = []

        async def run() -> None:
            done.append(
                await run_on_workers(
                    app.noop_map, {"n": N}, None, None, workers.db, 32, None, False, views
                )
            )

        tg.start_soon(run)
        with anyio.fail_after(120):
            while not done:
                if views.widget is not None and views.run is not None:
                    seen.look(views.widget, views.run)
                await anyio.sleep(0.02)
    [finished] = done
    assert finished.status == "completed", workers.logs()
    assert seen.mid_run(finished.started_at), sorted(set(seen.samples))
    assert views.widget is not None and views.run is not None
    assert views.run.status == "completed" and views.widget.header["status"] == "completed"
    assert _children_completed(views.widget) == N
    counts = [
        tuple(map(int, m)) for m in re.findall(r"(\d+)/(\d+) completed", views.stream.getvalue())
    ]
    assert counts[-1] == (N + 2, N + 2), views.stream.getvalue()  # (the map's children + 2)
    assert any(0 < got < N + 2 and total == N + 2 for got, total in counts[:-1]), counts


async def test_a_submitted_run_shown_follows_the_run_as_stored(workers: WorkerProcs) -> None:
    """``run = await wf.submit(...)``; ``run`` as a cell's result: the widget stayed ``PENDING
    0/2``, ``items not known yet``, after the run completed; ``run.status`` ``pending``."""
    run = await app.noop_map.submit({"n": N}, db=workers.db)
    widget = DagWidget(run)  # what ``run`` shows in a notebook (``Run._ipython_display_``)
    await _until(lambda: widget.run is not None)
    assert widget.header["status"] == "pending" and widget.header["cancellable"]
    seen = Seen()
    for _ in range(2):
        workers.start("tests.workers_app:noop_map", args=ARGS, **SLOW)
    with anyio.fail_after(120):
        while widget.run is None or not widget.run.done:
            seen.look(widget, run)
            await anyio.sleep(0.02)
    await widget.wait()
    assert seen.mid_run(run.started_at), sorted(set(seen.samples))  # ``run.status`` too
    assert widget.header["status"] == "completed" and widget.header["t1"] is not None
    assert _children_completed(widget) == N
    assert run.status == "completed" and run.counts().completed == N + 2
    assert run.results["summed"] == sum(2 * i for i in range(N))


async def test_an_attached_run_waited_for_is_the_finished_run(workers: WorkerProcs) -> None:
    """``run = await bn.SubmittedRun.attach(run_id); await run.wait(); run``: the run showed
    frozen at the attach (``RUNNING 21/152``), its clock ticking; ``run.status`` stayed as
    read at the attach."""
    first = await app.noop_map.submit({"n": N}, db=workers.db)
    workers.start("tests.workers_app:noop_map", args=ARGS, **SLOW)
    await _until(lambda: len(workers.marked("noop")) >= 3)
    run = await bn.SubmittedRun.attach(first.id, db=workers.db)
    assert run.status == "running" and run.counts().completed < N + 2
    with anyio.fail_after(120):
        done = await run.wait()
    assert done.status == "completed", workers.logs()
    assert run.status == "completed" and run.done and run.finished_at is not None
    assert run.counts().completed == N + 2 and run.results == done.results
    widget = DagWidget(run)  # what ``run`` shows now: the finished run
    assert widget.header["status"] == "completed" and _children_completed(widget) == N
