"""A run's step tasks on asyncio: plain asyncio tasks, each in its own anyio cancel scope.

Why not the run's anyio task group (``TaskGroup.start_soon``): per task it makes a handle,
an event, a cancel scope and a wrapper coroutine, two of them through a lookup of the
running async library; about three times a plain task's CPU, and at 1,000 steps in flight
the largest cost the runtime adds to a step (docs/performance.md, "Fourth round").

What the task group gave is kept: each task starts in a copy of the run's context; each
runs in an anyio cancel scope that ``cancel`` cancels the anyio way, so a shielded section
(a paid answer being stored) finishes before the step sees the cancellation; a task that
raises has its error kept (``error``), every task cancelled and ``on_failure`` called (the
driver then ends the run with that error); ``wait`` returns once every task has returned.
Under another async library (trio) the driver keeps its task group.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskGroup

__all__ = ["RunTasks", "StepTasks"]


class StepTasks:
    """The tasks of one run's steps (and callbacks), on the running asyncio loop."""

    def __init__(self, context: contextvars.Context, on_failure: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._context = context
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[None]] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self._idle: asyncio.Event | None = None
        # asyncio's cancel scope class: ``anyio.CancelScope()`` looks the running async
        # library up on every call (sniffio), 3 µs of a task's start; the class itself is
        # what that lookup returns on this loop, made directly in 0.6 µs.
        self._scope_class = type(anyio.CancelScope())
        self.cancelled = False
        self.error: BaseException | None = None

    @classmethod
    def here(cls, context: contextvars.Context, on_failure: Callable[[], None]) -> StepTasks | None:
        """Step tasks for the running loop if it is asyncio's, else None."""
        if sniffio.current_async_library() != "asyncio":
            return None
        return cls(context, on_failure)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], name: str, *args: Any) -> None:
        """Start ``fn(*args)`` in a copy of the run's context (``create_task`` copies the
        context it is called in)."""
        task = self._context.run(self._loop.create_task, self._scoped(fn, args), name=name)
        if not task.done():  # (an eager task factory may have run it to its end already)
            self._tasks.add(task)

    async def _scoped(self, fn: Callable[..., Coroutine[Any, Any, None]], args: Any) -> None:
        # The task's end is handled here, not by a done callback: one callback less to
        # register and to schedule on the loop per step.
        try:
            with self._scope_class() as scope:
                if self.cancelled:
                    scope.cancel()
                self._scopes.add(scope)
                try:
                    await fn(*args)
                finally:
                    self._scopes.discard(scope)
        except asyncio.CancelledError:
            # Cancelled natively: only if the loop is closing or its code cancelled itself
            # (its scope's cancellation ends it normally: the scope absorbs it).
            raise
        except BaseException as exc:
            self._failed(exc)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: on their way out of the loop
        finally:
            tasks = self._tasks
            tasks.discard(asyncio.current_task())
            if not tasks and self._idle is not None:
                self._idle.set()

    def _failed(self, error: BaseException) -> None:
        """A task raised: its error is kept (the first one), every task cancelled."""
        if self.error is None:
            self.error = error
            self.cancel()
            self._on_failure()

    def cancel(self) -> None:
        """Cancel every task (and those started from now on, at their first checkpoint)."""
        self.cancelled = True
        for scope in list(self._scopes):
            scope.cancel()

    async def wait(self) -> None:
        """Until every task has returned."""
        while self._tasks:
            self._idle = asyncio.Event()
            await self._idle.wait()


class RunTasks:
    """Where a run's steps, groups and callbacks run: ``StepTasks`` on asyncio, else the
    run's task group (which also holds the writer and the heartbeat)."""

    def __init__(self, group: TaskGroup, context: contextvars.Context) -> None:
        self.group = group
        self._context = context
        self.steps = StepTasks.here(context, group.cancel_scope.cancel)

    @classmethod
    @asynccontextmanager
    async def open(cls, context: contextvars.Context) -> AsyncIterator[RunTasks]:
        """The run's task group with its step tasks, ended as the task group ends its own:
        an outer cancel or a helper's failure (the writer's) cancels the step tasks at once,
        not only once the task group has returned; on the way out every step task is
        stopped and waited for, and a step task's error, even one raised while stopping
        (a cancelled step failing in a shielded section), is raised unless another error
        is already on its way out."""
        tasks: RunTasks | None = None
        try:
            async with anyio.create_task_group() as group:
                tasks = cls(group, context)
                try:
                    yield tasks
                except BaseException:
                    tasks.cancel()
                    raise
        finally:
            if tasks is not None:
                await tasks.stop()
        assert tasks is not None  # the task group opened: nothing is on its way out
        tasks.raise_failure()

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], name: str, *args: Any) -> None:
        """Start ``fn(*args)`` in a copy of the run's context, unless the run is being
        cancelled (what has not started then stays pending)."""
        if self.group.cancel_scope.cancel_called:
            return
        if self.steps is not None:
            self.steps.spawn(fn, name, *args)
        else:
            self._context.run(partial(self.group.start_soon, fn, *args, name=name))

    def cancel(self) -> None:
        """Cancel the task group (its writer and heartbeat) and the steps' tasks."""
        self.group.cancel_scope.cancel()
        if self.steps is not None:
            self.steps.cancel()

    async def stop(self) -> None:
        """Once the task group has returned: cancel the steps' tasks still running and wait
        for them (as the task group does for its own), shielded."""
        if self.steps is not None:
            with anyio.CancelScope(shield=True):
                self.steps.cancel()
                await self.steps.wait()

    def raise_failure(self) -> None:
        """A step's task that raised (the driver's code, not a step's error: those are
        outcomes) ends the run with its error."""
        if self.steps is not None and self.steps.error is not None:
            raise self.steps.error
