"""The coordinator's side of workers (DESIGN §10): attempts handed to the task queue.

A run submitted to workers is driven by one of them, its coordinator: the run's lease
holder, running the usual ``Driver`` and ``Scheduler`` (readiness, cascade, groups,
retries, slots, the run's end), with one difference: an attempt is not run in this
process but queued (``workflow_tasks``), claimed by any worker, and its outcome comes back
through the queue (``RemoteAttempts``). Every decision is taken in one place, as in
process; the steps' work is spread over all the workers.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from .. import _jsonutil
from .._errors import ConfigurationError
from ..store import NewTask, SqlWorkers
from ._attempt import run_attempt
from ._decisions import PARKED, Completed, Discarded, Failed, Outcome, Snoozed
from ._node import Node

__all__ = ["POLL", "RemoteAttempts", "decode_outcome", "encode_outcome"]

logger = logging.getLogger("baton_nb.workers")
POLL = 0.5  # seconds: the safety net when a NOTIFY is missed


_COMPLETED = '{"kind":"completed","result":'


def encode_outcome(outcome: Outcome) -> str:
    """An attempt's outcome as JSON text (a completed value as its stored JSON)."""
    if isinstance(outcome, Completed):
        return _COMPLETED + outcome.encoded + "}"
    if isinstance(outcome, Failed):
        return _jsonutil.dumps(
            {"kind": "failed", "error": outcome.error, "retry_after": outcome.retry_after}
        )
    if isinstance(outcome, Discarded):
        return _jsonutil.dumps({"kind": "discarded", "reason": outcome.reason})
    if isinstance(outcome, Snoozed):
        return _jsonutil.dumps({"kind": "snoozed", "seconds": outcome.seconds})
    return '{"kind":"parked"}'


def decode_outcome(text: str) -> Outcome:
    if text.startswith(_COMPLETED):  # the stored JSON is the text between: kept as is
        encoded = text[len(_COMPLETED) : -1]
        return Completed(_jsonutil.loads(encoded), encoded)
    data = _jsonutil.loads(text)
    kind = data["kind"]
    if kind == "completed":
        value = data["result"]
        return Completed(value, _jsonutil.dumps(value))
    if kind == "failed":
        return Failed(data["error"], float(data.get("retry_after") or 0.0))
    if kind == "discarded":
        return Discarded(data["reason"])
    if kind == "snoozed":
        return Snoozed(float(data["seconds"]))
    if kind == "parked":
        return PARKED
    raise ConfigurationError(f"unknown task outcome {kind!r}")


class _Waiter:
    __slots__ = ("done", "dropped", "id", "outcome", "task", "worker")

    def __init__(self, task: NewTask | None) -> None:
        self.task = task
        self.id: int | None = None
        self.done = anyio.Event()
        self.outcome: str | None = None
        self.worker = ""
        self.dropped = False


class RemoteAttempts:
    """``await attempts(node, ctx)``: the attempt queued for the workers, its outcome."""

    def __init__(
        self,
        workers: SqlWorkers,
        run_id: str,
        workflow: str,
        *,
        by_value: bool,
        replay: bool,
        adopt: dict[str, tuple[int, str, str | None, str | None]] | None = None,
    ) -> None:
        self.workers = workers
        self.run_id = run_id
        self.workflow = workflow
        self.by_value = by_value
        self.replay = replay
        # Tasks a previous coordinator queued, by step: (id, state, outcome, worker).
        self._adopt = dict(adopt or {})
        self._adopt_ids = {found[0]: step for step, found in self._adopt.items()}
        self._queue: list[_Waiter] = []
        self._by_id: dict[int, _Waiter] = {}
        self._drop: list[int] = []
        self._wake = anyio.Event()
        self.handing_over = False  # this worker stops: leave queued tasks to the next one
        self.ran_by: dict[str, str] = {}  # step -> the worker whose outcome was taken

    def wake(self) -> None:
        self._wake.set()

    async def __call__(self, node: Node, ctx: Any) -> Outcome:
        if node.spec.batch:  # provider batches are followed by the coordinator itself
            return await run_attempt(node, ctx, ctx.results)
        waiter = self._adopted(node) or self._queued(node, getattr(ctx, "model", None))
        try:
            await waiter.done.wait()
        except BaseException:
            if not self.handing_over:
                waiter.dropped = True
                if waiter.id is not None:
                    self._drop.append(waiter.id)
                    self._wake.set()
            raise
        finally:
            if waiter.id is not None:
                self._by_id.pop(waiter.id, None)
        assert waiter.outcome is not None
        self.ran_by[node.name] = waiter.worker
        return decode_outcome(waiter.outcome)

    def _adopted(self, node: Node) -> _Waiter | None:
        found = self._adopt.pop(node.name, None)
        if found is None:
            return None
        task_id, state, outcome, worker = found
        waiter = _Waiter(None)
        waiter.id = task_id
        if state == "done" and outcome is not None:
            waiter.outcome, waiter.worker = outcome, worker or ""
            waiter.done.set()
            self._drop.append(task_id)  # taken: off the queue
        else:
            self._by_id[task_id] = waiter
        return waiter

    def _queued(self, node: Node, model: str | None) -> _Waiter:
        item = None if node.item is None else _jsonutil.dumps(node.item)
        task = NewTask(
            run_id=self.run_id,
            workflow=self.workflow,
            step=node.name,
            spec=node.spec.name,
            attempt=node.attempt,
            item=item,
            model=model,
            replay=self.replay or node.attempt > 1,
            by_value=self.by_value,
        )
        waiter = _Waiter(task)
        self._queue.append(waiter)
        self._wake.set()
        return waiter

    async def serve(self) -> None:
        """Queue what waits, take the outcomes, drop what is no longer wanted; until
        cancelled. One round trip per batch, woken by NOTIFY or new attempts."""
        while True:
            with anyio.move_on_after(POLL):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        queue, self._queue = self._queue, []
        queue = [w for w in queue if not w.dropped]
        if queue:
            tasks = [w.task for w in queue if w.task is not None]
            ids = await self.workers.enqueue(tasks)
            for waiter in queue:
                assert waiter.task is not None
                task_id = waiter.id = ids[waiter.task.run_id, waiter.task.step]
                if waiter.dropped:
                    self._drop.append(task_id)
                else:
                    self._by_id[task_id] = waiter
        if self._by_id or self._adopt:
            for done in await self.workers.take_done(self.run_id):
                found = self._by_id.pop(done.id, None)
                if found is not None:
                    found.outcome, found.worker = done.outcome, done.worker
                    found.done.set()
                elif done.id in self._adopt_ids:  # not asked for yet: kept for its node
                    step = self._adopt_ids[done.id]
                    if step in self._adopt:
                        self._adopt[step] = (done.id, "done", done.outcome, done.worker)
        if self._drop:
            drop, self._drop = self._drop, []
            await self.workers.drop_tasks(drop)
