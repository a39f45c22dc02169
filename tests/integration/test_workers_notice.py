"""What ``wf.run(..., workers=True)`` tells of the workers while it waits (the line of the
widget and of the text line, ``run.notice``), an interrupt of its cell, and a worker
started where its module is: REAL worker subprocesses on the local Postgres."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb._workers_front import run_on_workers
from baton_nb.store import Store, open_worker_store
from baton_nb.widget import DagWidget
from baton_nb.widget._progress import TextProgress
from tests import workers_app as app
from tests.conftest import POSTGRES_URL, _postgres_up, _start_postgres
from tests.integration._process import kill9
from tests.integration.test_workers import WorkerProcs, _until

pytestmark = pytest.mark.anyio
HOST = socket.gethostname()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcs]:
    """Worker subprocesses on the local Postgres, all killed at teardown."""
    if not _postgres_up() and not _start_postgres():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    started = WorkerProcs(POSTGRES_URL, tmp_path)
    try:
        yield started
    finally:
        started.stop()


class Shown:
    """Takes the place of the widget: keeps the live ``bn.Run`` it would show."""

    def __init__(self) -> None:
        self.runs: list[bn.Run] = []

    def __call__(self, run: bn.Run, _display: Any) -> None:
        self.runs.append(run)

    def notice(self) -> str:
        return (self.runs[0].notice or "") if self.runs else ""


def _run(wf: bn.Workflow, db: str, shown: Shown, n: int = 3) -> Any:
    return run_on_workers(wf, {"n": n}, None, None, db, 32, None, False, shown)


async def test_no_live_worker_is_said_at_once_and_goes_when_one_starts(
    workers: WorkerProcs,
) -> None:
    shown = Shown()
    async with anyio.create_task_group() as tg:
        done: list[bn.Run] = []

        async def run() -> None:
            done.append(await _run(app.noop_map, workers.db, shown))

        tg.start_soon(run)
        await _until(lambda: "no live worker" in shown.notice())
        assert shown.notice() == (
            "no live worker takes runs of 'workers-noop-map' on this database: start one with "
            f"`baton-nb worker tests.workers_app:noop_map --db {workers.db}` "
            "(docs/workers.md); the run waits in the queue"
        )
        # the widget's header and the text line carry it
        widget = DagWidget(shown.runs[0])
        assert widget.header["notice"] == shown.notice()
        widget.finish()
        text = TextProgress(shown.runs[0], stream=io.StringIO())
        assert text.postfix().endswith(shown.notice())
        text.close()
        workers.start("tests.workers_app:noop_map")
    [finished] = done
    assert finished.status == "completed" and finished.results["summed"] == 6
    assert shown.runs[0].notice is None  # the line went: nothing was wrong in the end


async def test_a_lost_coordinator_is_said_then_by_whom_the_run_was_taken_over(
    workers: WorkerProcs,
) -> None:
    # The first worker holds its items (and an 8 s lease); kill -9 while it coordinates.
    first = workers.start("tests.workers_app:noop_map", args=("--lease-ttl", "8"), STEP_DELAY="600")
    shown = Shown()
    async with anyio.create_task_group() as tg:
        done: list[bn.Run] = []

        async def run() -> None:
            done.append(await _run(app.noop_map, workers.db, shown))

        tg.start_soon(run)
        await _until(lambda: len(workers.marked("noop")) >= 3)
        async with await Store.open(workers.db) as store:
            row = await store.get_run(shown.runs[0].id)
        assert row is not None and row.lease_owner is not None
        assert row.lease_owner.startswith(f"{HOST}:{first.pid}:")
        await _until(lambda: shown.notice() == "")  # a live coordinator: nothing to say
        kill9(first)
        lost = f"worker {HOST}:{first.pid} stopped answering"
        await _until(lambda: shown.notice().startswith(lost))
        text = shown.notice()
        assert "another takes the run over when its lease ends (≤ " in text
        assert "; but no live worker takes runs of 'workers-noop-map'" in text  # no other
        second = workers.start("tests.workers_app:noop_map")
        taken = f"{lost}; the run was taken over by {HOST}:{second.pid}"
        seen: list[str] = []
        try:
            await _until(lambda: seen.append(shown.notice()) or shown.notice() == taken, 90)
        except TimeoutError:
            pytest.fail(f"{sorted(set(seen))}\n{taken}\n{workers.logs()[-3000:]}")
    [finished] = done
    assert finished.status == "completed" and finished.results["summed"] == 6
    assert shown.runs[0].notice == taken  # it stays said once the run ended


async def test_an_interrupt_detaches_with_the_message_alone(
    workers: WorkerProcs, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cell's task cancelled (a kernel interrupt): in IPython the cell ends with the
    detach message as its whole traceback; the run stays queued for the workers."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shown = Shown()
        task = asyncio.get_running_loop().create_task(_run(app.noop_map, workers.db, shown))
        await _until(lambda: bool(shown.runs))
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    finally:
        InteractiveShell.clear_instance()
        del shell
    run_id = shown.runs[0].id
    lines = caught.value._render_traceback_()  # type: ignore[attr-defined]
    assert lines == [
        f"detached from run {run_id}: it goes on on the workers. Follow it again and wait "
        "for its end (run.cancel() cancels it) with:",
        f'run = await bn.SubmittedRun.attach("{run_id}", db="{workers.db}")',
        "await run.wait()",
    ]
    assert lines[0] not in capsys.readouterr().out  # said once: as the traceback
    # Outside IPython (a script) the message is printed, the exception as it is.
    other = Shown()
    task = asyncio.get_running_loop().create_task(_run(app.noop_map, workers.db, other))
    await _until(lambda: bool(other.runs))
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert not hasattr(caught.value, "_render_traceback_")
    assert f"detached from run {other.runs[0].id}: it goes on" in capsys.readouterr().out
    workers.start("tests.workers_app:noop_map")  # the queued runs are the next worker's
    for queued in (run_id, other.runs[0].id):
        attached = await bn.SubmittedRun.attach(queued, db=workers.db)
        with anyio.fail_after(120):
            finished = await attached.wait()
        assert finished.status == "completed"


async def test_worker_imports_a_module_of_its_working_directory(
    workers: WorkerProcs, tmp_path: Path
) -> None:
    """``baton-nb worker pipeline:wf`` (the console script, no PYTHONPATH) in the folder
    holding ``pipeline.py``: served, as with ``python -m``."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notice_pipeline.py").write_text(
        textwrap.dedent(
            """
            import baton_nb as bn

            wf = bn.Workflow("notice-cwd-pipeline")

            @wf.step()
            async def one(ctx: bn.Context) -> int:
                return 1
            """
        )
    )
    script = Path(sys.executable).with_name("baton-nb")
    env = {k: v for k, v in workers.env.items() if k != "PYTHONPATH"}
    log = tmp_path / "cwd-worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(script), "worker", "notice_pipeline:wf", "--db", workers.db],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    workers.procs.append(proc)
    async with await open_worker_store(workers.db) as queue:
        with anyio.fail_after(60):
            while not any(
                w.pid == proc.pid and w.workflows == ["notice-cwd-pipeline"]
                for w in await queue.workers()
            ):
                assert proc.poll() is None, log.read_text()
                await anyio.sleep(0.1)
