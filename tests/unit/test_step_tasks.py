"""The run's step tasks on asyncio (``runtime/_steptasks.py``) keep what the run's anyio
task group gave them: a copy of the run's context each, anyio cancellation (a shielded
section finishes first), a failing task's error kept with the others cancelled, and a
``wait`` that returns once all have returned."""

from __future__ import annotations

import contextvars

import anyio
import pytest

from baton_nb.runtime._steptasks import RunTasks, StepTasks

pytestmark = pytest.mark.anyio

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_each_task_starts_from_a_copy_of_the_run_context() -> None:
    VAR.set("run")
    tasks = StepTasks(contextvars.copy_context(), on_failure=lambda: None)
    VAR.set("caller")
    seen: list[str] = []

    async def step(name: str) -> None:
        seen.append(VAR.get())
        VAR.set(name)  # stays in this task
        await anyio.sleep(0)
        seen.append(VAR.get())

    tasks.spawn(step, "a", "a")
    tasks.spawn(step, "b", "b")
    await tasks.wait()
    assert sorted(seen) == ["a", "b", "run", "run"]
    assert VAR.get() == "caller"


async def test_cancel_lets_a_shielded_section_finish() -> None:
    tasks = StepTasks(contextvars.copy_context(), on_failure=lambda: None)
    stored: list[str] = []
    inside = anyio.Event()

    async def step() -> None:
        with anyio.CancelScope(shield=True):  # as a paid answer is stored
            inside.set()
            await anyio.sleep(0.05)
            stored.append("answer")
        await anyio.sleep(10)
        stored.append("never")

    tasks.spawn(step, "s")
    await inside.wait()
    tasks.cancel()
    with anyio.fail_after(5):
        await tasks.wait()
    assert stored == ["answer"]


async def test_a_failing_task_cancels_the_others_and_keeps_its_error() -> None:
    failures: list[int] = []
    tasks = StepTasks(contextvars.copy_context(), on_failure=lambda: failures.append(1))
    finished: list[str] = []

    async def slow() -> None:
        await anyio.sleep(10)
        finished.append("slow")

    async def broken() -> None:
        await anyio.sleep(0)
        raise RuntimeError("driver bug")

    tasks.spawn(slow, "slow")
    tasks.spawn(broken, "broken")
    with anyio.fail_after(5):
        await tasks.wait()
    assert isinstance(tasks.error, RuntimeError) and failures == [1]
    assert finished == [] and tasks.cancelled


async def test_a_task_spawned_after_cancel_is_cancelled_at_its_first_checkpoint() -> None:
    tasks = StepTasks(contextvars.copy_context(), on_failure=lambda: None)
    reached: list[str] = []

    async def step() -> None:
        reached.append("started")
        await anyio.sleep(10)
        reached.append("never")

    tasks.spawn(step, "s")
    tasks.cancel()  # before the task first ran
    with anyio.fail_after(5):
        await tasks.wait()
    assert reached == ["started"] and tasks.error is None


async def test_a_step_error_raised_while_the_run_stops_is_raised() -> None:
    """A step still running when the run settles (a quorum) is cancelled; if it then fails
    in a shielded section (a chunk being stored), the run ends with that error."""
    inside = anyio.Event()

    async def step() -> None:
        with anyio.CancelScope(shield=True):  # as a map's chunk is stored
            inside.set()
            await anyio.sleep(0.01)
            raise RuntimeError("storage failed")

    with pytest.raises(RuntimeError, match="storage failed"), anyio.fail_after(5):
        async with RunTasks.open(contextvars.copy_context()) as tasks:
            tasks.spawn(step, "s")
            await inside.wait()
            tasks.cancel()  # the run settled: the step is no longer needed


async def test_a_helper_failure_cancels_the_step_tasks_at_once() -> None:
    """The writer failing cancels the run's task group, and the steps with it: before the
    task group returns, not only once its other helpers have."""
    step_cancelled = anyio.Event()

    async def step() -> None:
        try:
            await anyio.sleep(10)
        finally:
            step_cancelled.set()

    async def writer() -> None:
        await anyio.sleep(0)
        raise RuntimeError("writer failed")

    async def heartbeat() -> None:
        with anyio.CancelScope(shield=True), anyio.fail_after(5):
            await step_cancelled.wait()  # returns only once the steps were cancelled

    with pytest.raises(BaseException) as raised, anyio.fail_after(10):
        async with RunTasks.open(contextvars.copy_context()) as tasks:
            tasks.spawn(step, "s")
            tasks.group.start_soon(heartbeat)
            tasks.group.start_soon(writer)
            await anyio.sleep_forever()
    assert "writer failed" in repr(raised.value) and "TimeoutError" not in repr(raised.value)
