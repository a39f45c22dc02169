"""``wf.run(..., workers=True)`` run again while a run of the same kind is still pending
or running on the workers (a kernel restarted while the cell waited, and the cell run
again): it follows that run instead of submitting a second one that pays every call
again, and says so in one line (F12). ``resume=False`` submits a new run; a run that
ended, another params, models or code, or a run whose cancel was requested is not
followed; ``wf.submit`` always submits.

The workflow is this module's (``follow_map``), served by reference only by the worker
started here: no other test's worker takes its runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

import anyio
import pytest

import baton_nb as bn
from tests.conftest import POSTGRES_URL
from tests.integration.test_workers import WorkerProcs, _until, _wait, pg, workers

pytestmark = pytest.mark.anyio
__all__ = ["pg", "workers"]  # the fixtures, imported

follow_map = bn.Workflow("workers-follow-map")


@follow_map.step()
async def items(ctx: bn.Context) -> list[int]:
    return list(range(int(ctx.params["n"])))


@follow_map.step(map_over="items")
async def work(ctx: bn.Context) -> int:
    folder = os.environ.get("MARKS")
    if folder:  # how often each item ran, across processes (O_APPEND)
        fd = os.open(os.path.join(folder, "work"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{ctx.step}\n".encode())
        finally:
            os.close(fd)
    await anyio.sleep(float(os.environ.get("STEP_DELAY", "0")))
    return int(ctx.item) + 1


@follow_map.step()
async def total(ctx: bn.Context, work: list[int]) -> int:
    return sum(work)


async def _found(params: dict[str, object], models: dict[str, str] | None = None) -> str | None:
    from baton_nb.runtime import follow_submitted

    following = await follow_submitted(
        follow_map, params=params, db=POSTGRES_URL, models=models or {}
    )
    return following.run.id if following is not None else None


async def test_a_pending_submitted_run_of_the_same_kind_is_found(
    workers: WorkerProcs, unique: str
) -> None:
    """No worker serves the workflow: the submitted run stays pending, as after a kernel
    restart while ``wf.run(workers=True)`` waited for it. The same params and models find
    it (the newest of two); other params or models do not; once its cancel is requested,
    or once it ended, it is not followed."""
    from baton_nb.runtime import follow_submitted

    params = {"n": 3, "tag": unique}
    assert await _found(params) is None
    older = await follow_map.submit(params, db=POSTGRES_URL)
    newer = await follow_map.submit(params, db=POSTGRES_URL)  # wf.submit always submits
    assert newer.id != older.id
    following = await follow_submitted(follow_map, params=params, db=POSTGRES_URL, models={})
    assert following is not None and following.run.id == newer.id
    assert following.run.status == "pending" and following.run.db == POSTGRES_URL
    assert (following.done, following.total) == (0, 2)
    line = following.message("wf")
    assert line == (
        f"following run {newer.id} of 'workers-follow-map', submitted earlier with the same "
        "params, models and code and still waiting for the workers (0 of 2 steps done); for "
        "a new run instead: await wf.run(..., workers=True, resume=False)"
    )
    assert await _found({"n": 4, "tag": unique}) is None  # other params
    assert await _found(params, {"work": "mock/other"}) is None  # another model map
    await newer.request_cancel()  # cancel requested: ending, not followed
    assert await _found(params) == older.id
    # A worker ends both: an ended run is not followed.
    workers.start(f"{__name__}:follow_map")
    assert (await _wait(newer, workers, 60)).done, workers.logs()
    assert (await _wait(older, workers, 60)).status == "completed", workers.logs()
    assert await _found(params) is None


async def test_run_with_workers_again_follows_the_run_instead_of_paying_twice(
    workers: WorkerProcs, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The tester's F12 with a real worker: the first ``wf.run(workers=True)`` is stopped
    (its cell gone, as a kernel restart does) while the run goes on on the worker; running
    it again follows that run to its end: one run, each item run once, and one line saying
    which run it follows. ``resume=False`` submits a new run."""
    params = {"n": 4, "tag": unique}
    workers.start(f"{__name__}:follow_map", STEP_DELAY="0.5")
    with anyio.move_on_after(60):  # the first cell, stopped once the run is under way
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: follow_map.run(params, db=POSTGRES_URL, workers=True, display=False)
            )
            await _until(lambda: len(workers.marked("work")) >= 1)
            tg.cancel_scope.cancel()
    first = follow_map.last_run
    assert first is not None and not first.done
    with caplog.at_level(logging.INFO, logger="baton_nb"):
        done = await follow_map.run(params, db=POSTGRES_URL, workers=True, display=False)
    assert done.id == first.id and done.status == "completed", workers.logs()
    assert done.results["total"] == 1 + 2 + 3 + 4
    assert sorted(workers.marked("work").values()) == [1, 1, 1, 1]  # each item paid once
    said = [r.getMessage() for r in caplog.records if "following run" in r.getMessage()]
    assert len(said) == 1 and re.fullmatch(
        rf"following run {first.id} of 'workers-follow-map', submitted earlier with the same "
        r"params, models and code and still (running on|waiting for) the workers \(\d of 6 "
        r"steps done\); for a new run instead: await wf.run\(\.\.\., workers=True, "
        r"resume=False\)",
        said[0],
    ), said

    # Ended: not followed, a new run. resume=False: a new run beside one still running.
    again = await follow_map.run(params, db=POSTGRES_URL, workers=True, display=False)
    assert again.id != first.id and again.status == "completed"
    running = await follow_map.submit(params, db=POSTGRES_URL)
    other = await follow_map.run(params, db=POSTGRES_URL, workers=True, display=False, resume=False)
    assert other.id not in (first.id, again.id, running.id) and other.status == "completed"
    assert (await _wait(running, workers, 60)).status == "completed"
    assert sorted(workers.marked("work").values()) == [4, 4, 4, 4]


async def test_an_interrupted_wait_detaches_with_the_message_alone(
    workers: WorkerProcs, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``await run.wait()`` of a submitted run interrupted (its task cancelled, as a kernel
    interrupt does): in IPython the cell ends with the detach message of
    ``wf.run(workers=True)`` as its whole traceback, not frames through the watcher and
    SQLAlchemy (F18); outside IPython the message is printed. The run goes on."""
    from IPython.core.interactiveshell import InteractiveShell

    run = await follow_map.submit({"n": 2, "tag": unique}, db=POSTGRES_URL)
    lines = [
        f"detached from run {run.id}: it goes on on the workers. Follow it again and wait "
        "for its end (run.cancel() cancels it) with:",
        f'run = await bn.SubmittedRun.attach("{run.id}", db="{POSTGRES_URL}")',
        "await run.wait()",
    ]
    message = "\n".join(lines)

    async def interrupted() -> BaseException:
        task = asyncio.get_running_loop().create_task(run.wait())
        await anyio.sleep(0.5)  # waiting for the run's changes (no worker serves it yet)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
        return caught.value

    shell = InteractiveShell.instance()
    try:
        stopped = await interrupted()
    finally:
        InteractiveShell.clear_instance()
        del shell
    assert stopped._render_traceback_() == lines  # type: ignore[attr-defined]
    assert message not in capsys.readouterr().out  # said once: as the traceback
    stopped = await interrupted()
    assert not hasattr(stopped, "_render_traceback_")
    assert message in capsys.readouterr().out
    workers.start(f"{__name__}:follow_map")  # it went on: the next worker ends it
    attached = await bn.SubmittedRun.attach(run.id, db=POSTGRES_URL)
    assert (await _wait(attached, workers, 60)).status == "completed", workers.logs()
