"""The coordinator's side of workers (DESIGN §10): attempts handed to the task queue.

A run submitted to workers is driven by one of them, its coordinator: the run's lease
holder, running the usual ``Driver`` and ``Scheduler`` (readiness, cascade, groups,
retries, slots, the run's end). An attempt runs in this process when the worker has a
free slot (``LocalAttempts``: as in process, its outcome committed with the node's row by
the run's group commit, under the run's lease), or is queued (``workflow_tasks``), claimed
by any worker, and its outcome comes back through the queue (``RemoteAttempts``). Every
decision is taken in one place, as in process; the steps' work is spread over all the
workers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .. import _jsonutil
from .._errors import ConfigurationError
from ..store import NewTask, SqlWorkers, StepWorkerRow, utcnow
from ._attempt import run_attempt
from ._calls import Calls
from ._context import Context
from ._decisions import PARKED, Completed, Discarded, Failed, Outcome, Snoozed
from ._node import Node

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["POLL", "LocalAttempts", "LocalSlots", "RemoteAttempts", "decode_outcome",
           "encode_outcome"]  # fmt: skip

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


class LocalSlots(Protocol):
    """The worker's slots (``TaskRunner``): one count for claimed tasks and the attempts
    its coordinators run themselves, so ``--concurrency`` bounds both together."""

    async def take_local(self) -> bool:
        """A slot for an attempt run here, if one is free (and the worker not stopping)."""
        ...

    def end_local(self) -> None:
        """That attempt ended: its slot is free again."""
        ...


class LocalAttempts:
    """A coordinator running an attempt itself, as ``Driver`` does in process: the
    driver's context, calls and group commit, so its outcome, its calls and which worker
    ran it (``ran_on``) are committed with the node's row under the run's lease (a
    coordinator whose lease was lost commits nothing: the next one runs the step again,
    replaying its paid calls). No task row, no second life of the step."""

    def __init__(self, slots: LocalSlots, driver: Driver, worker: str, *, replay: bool) -> None:
        self.slots = slots
        self.driver = driver
        self.worker = worker
        # A run taken over from another coordinator: its steps' paid calls are replayed.
        self.replay = replay

    async def __call__(self, node: Node, ctx: Context) -> Outcome | None:
        """The attempt's outcome, or None (nothing run) when the worker has no free slot."""
        if not await self.slots.take_local():
            return None
        try:
            if self.replay or node.attempt > 1:
                ctx = self._replaying(node, ctx)
            outcome = await run_attempt(node, ctx, ctx.results)
        finally:
            self.slots.end_local()
        # Committed with the outcome: the driver settles it before its next await.
        row = StepWorkerRow(ctx.run_id, node.name, node.attempt, self.worker, utcnow())
        self.driver.commit.add_rows(ran_on=row)
        return outcome

    def _replaying(self, node: Node, ctx: Context) -> Context:
        """A context whose calls read what earlier attempts stored (on whichever worker
        they ran) before calling: new calls each time, as a claimed task's, since an
        earlier attempt may have run elsewhere after this process last read them."""
        driver = self.driver
        calls = Calls(
            driver.graph, driver.run.id, driver.store, driver.commit, driver.announce,
            resumed=True,
        )  # fmt: skip
        calls.spend = driver.calls.spend
        return Context(calls, node, ctx.params, ctx.results, ctx.model)


class _Waiter:
    __slots__ = ("done", "dropped", "id", "outcome", "stopped", "task", "worker")

    def __init__(self, task: NewTask | None) -> None:
        self.task = task
        self.id: int | None = None
        self.done = anyio.Event()
        self.outcome: str | None = None
        self.worker = ""
        self.dropped = False
        # Set once no worker runs the dropped task any more (``RemoteAttempts.cancelling``).
        self.stopped: anyio.Event | None = None


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
        local: LocalAttempts | None = None,
        owner: str | None = None,
        stop_wait: float = 30.0,
    ) -> None:
        self.workers = workers
        # The run's lease owner (this coordinator): the queue is changed only while it holds
        # the lease (checked in each statement; else RunLocked and nothing changed).
        self.owner = owner
        self.local = local  # attempts run here when the worker has room
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
        # The run is cancelled (``run.cancel()``, a budget): an attempt whose task a worker
        # runs returns once that worker stopped it and stored what its calls got, so the
        # run is not stored ``cancelled`` (and resumed) while its steps still run and pay
        # there; at most ``stop_wait`` seconds (or until the task's lease lapsed: a dead
        # worker runs nothing).
        self.cancelling = False
        self.stop_wait = stop_wait
        self._stopping: dict[int, _Waiter] = {}  # dropped tasks a worker may still run

    def wake(self) -> None:
        self._wake.set()

    async def __call__(self, node: Node, ctx: Any) -> Outcome:
        if node.spec.batch:  # provider batches are followed by the coordinator itself
            return await run_attempt(node, ctx, ctx.results)
        waiter = self._adopted(node)
        if waiter is None and self.local is not None:
            outcome = await self.local(node, ctx)
            if outcome is not None:
                return outcome
        waiter = waiter or self._queued(node, getattr(ctx, "model", None))
        try:
            await waiter.done.wait()
        except BaseException:
            if not self.handing_over:
                waiter.dropped = True
                if self.cancelling and not waiter.done.is_set():
                    waiter.stopped = anyio.Event()
                if waiter.id is not None:
                    self._dropping(waiter)
                    self._wake.set()
                await self._stopped(waiter)
            raise
        finally:
            if waiter.id is not None:
                self._by_id.pop(waiter.id, None)
        assert waiter.outcome is not None
        return decode_outcome(waiter.outcome)

    def _dropping(self, waiter: _Waiter) -> None:
        assert waiter.id is not None
        self._drop.append(waiter.id)
        if waiter.stopped is not None:
            self._stopping[waiter.id] = waiter

    async def _stopped(self, waiter: _Waiter) -> None:
        """Wait (shielded: the attempt is being cancelled) until no worker runs ``waiter``'s
        task any more, if the run is cancelled; ``serve`` finds it out."""
        stopped = waiter.stopped
        if stopped is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.stop_wait):
            await stopped.wait()

    def stop_waiting(self) -> None:
        """``serve`` ended (the run stops here): no attempt waits for its task's stop."""
        for waiter in [*self._stopping.values(), *self._queue]:
            if waiter.stopped is not None:
                waiter.stopped.set()
        self._stopping.clear()

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
        for waiter in queue:
            if waiter.dropped and waiter.stopped is not None:
                waiter.stopped.set()  # never queued: nothing runs it
        queue = [w for w in queue if not w.dropped]
        if queue:
            tasks = [w.task for w in queue if w.task is not None]
            ids = await self.workers.enqueue(tasks, owner=self.owner)
            for waiter in queue:
                assert waiter.task is not None
                task_id = waiter.id = ids[waiter.task.run_id, waiter.task.step]
                if waiter.dropped:
                    self._dropping(waiter)
                else:
                    self._by_id[task_id] = waiter
        if self._by_id or self._adopt:
            for done in await self.workers.take_done(self.run_id, owner=self.owner):
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
            await self.workers.drop_tasks(drop, run_id=self.run_id, owner=self.owner)
        if self._stopping:
            running = await self.workers.unstopped(list(self._stopping))
            for task_id in [i for i in self._stopping if i not in running]:
                stopped = self._stopping.pop(task_id).stopped
                assert stopped is not None
                stopped.set()
