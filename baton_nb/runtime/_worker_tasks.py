"""A worker running claimed tasks (DESIGN §10): one attempt each, with the in-process
attempt runner and calls (replay, stats), its outcome stored under the claim's fencing
token (a worker whose lease was taken over has its commit refused)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import _jsonutil
from .._errors import StorageError
from .._graph import GraphSpec
from .._run import Run
from .._states import NodeKind
from ..store import CallRecord, ClaimedTask, LogRow, NodeRow, RunStore, SqlWorkers, utcnow
from ._announce import Announcer
from ._attempt import run_attempt
from ._calls import Calls
from ._commit import GroupCommit
from ._context import Context
from ._node import Node
from ._remote import encode_outcome
from ._spend import Spend, join_spend

__all__ = ["RunSide", "TaskRunner"]

logger = logging.getLogger("baton_nb.workers")


class _QuietAnnouncer(Announcer):
    """A worker keeps no live Run of the runs it helps: the store is the record."""

    def call(self, call: CallRecord) -> None:
        pass

    def log(self, log: LogRow) -> None:
        pass


class _Finished:
    __slots__ = ("done", "error", "outcome", "stored", "task")

    def __init__(self, task: ClaimedTask, outcome: str) -> None:
        self.task = task
        self.outcome = outcome
        self.stored = False
        self.error: Exception | None = None
        self.done = anyio.Event()


class RunSide:
    """What a worker holds for one run while it runs tasks of it: the graph, params, the
    deps' results read once, and a group commit (its writer task) for the calls."""

    def __init__(self, store: RunStore, run_id: str, graph: GraphSpec, params: dict[str, Any]):
        self.store = store
        self.run_id = run_id
        self.graph = graph
        self.params = params
        self.results: dict[str, Any] = {}
        self.reading = anyio.Lock()  # one read of the deps' results at a time
        self.commit = GroupCommit(run_id, lambda _settled: None)
        self.announce = _QuietAnnouncer(Run(run_id, graph.name, params=params))
        self.in_flight = 0
        self.used = anyio.current_time()  # when its last task ended
        self.stopped = anyio.Event()
        self.spend: Spend | None = None  # the run's budgets and cache (``spend_for``)
        self.spend_read = False
        self.halted = False  # a budget refused a call here: the run's cancel was asked
        self.spend_lock = anyio.Lock()

    async def spend_for(self, workers: SqlWorkers) -> Spend | None:
        """The run's budgets and response cache here, read once (``join_spend``)."""
        if self.spend_read:  # every task after the first: no lock to take
            return self.spend
        async with self.spend_lock:
            if not self.spend_read:

                async def halt() -> None:
                    # The run's coordinator cancels it; this task is cancelled with it.
                    # Asked once per worker: the other calls refused here just wait.
                    if not self.halted:
                        self.halted = True
                        with anyio.CancelScope(shield=True):  # never cut halfway
                            await workers.request_cancel(self.run_id)
                    await anyio.sleep_forever()

                run = self.announce.run
                self.spend = await join_spend(self.graph, self.store, run, self.commit, halt)
                self.spend_read = True
        return self.spend

    async def write(self) -> None:
        """The writer task: until ``stop``, then what is left (a failed call's log)."""
        try:
            async with self.store.writer() as writer:
                await self.commit.run(writer)
            batch = self.commit.take_batch()
            if batch:
                with anyio.CancelScope(shield=True):
                    await self.store.write(batch)
        finally:
            self.stopped.set()


class TaskRunner:
    """Runs claimed tasks; the worker process (``_worker``) claims and feeds them. Keeps
    the worker's slots: claimed tasks and the attempts its coordinators run themselves
    (``_remote.LocalAttempts``) count together against ``concurrency``."""

    def __init__(
        self,
        worker_id: str,
        store: RunStore,
        workers: SqlWorkers,
        graph_for: Callable[[ClaimedTask], Any],
        concurrency: int,
    ) -> None:
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.local = 0  # attempts run by this worker's coordinators, no task row
        self.claiming = 0  # slots held for a claim under way (its tasks not counted yet)
        self.claim_ended: anyio.Event | None = None  # set when the claim under way returns
        self.stopping = False  # no local attempt starts once the worker stops
        # Tasks were queued since the last claim (a NOTIFY): a local attempt's end then
        # wakes the claim loop of a full worker; otherwise it does not (each step of a
        # coordinator running its own attempts would cost a claim's round trip).
        self.wanted = False
        self.store = store
        self.workers = workers
        self.graph_for = graph_for  # async: (graph, params) of a task's run, or None
        self.running: dict[int, tuple[ClaimedTask, anyio.CancelScope]] = {}
        self.sides: dict[str, RunSide] = {}
        self.done = 0
        self.refused_commits = 0
        self.released: set[int] = set()
        self.idle = anyio.Event()
        self.slot_freed = anyio.Event()
        self._finishing: list[_Finished] = []
        self._wake_stop = anyio.Event()  # tasks running here were dropped (``dropped``)
        self._finish_wake = anyio.Event()

    # ── slots ─────────────────────────────────────────────────────────────────

    def free(self) -> int:
        """Slots free for a claim or a local attempt."""
        return self.concurrency - len(self.running) - self.local - self.claiming

    @property
    def in_flight(self) -> int:
        return len(self.running) + self.local

    async def take_local(self) -> bool:
        while not self.stopping:
            if self.free() > 0:
                self.local += 1
                return True
            if self.claim_ended is None:
                break
            # The slots are held for a claim under way (often one that finds nothing to
            # claim): what it leaves free is known in one round trip, cheaper for the
            # attempt than going through the queue.
            await self.claim_ended.wait()
        return False  # queued instead, for the other workers (or this one, later)

    def end_local(self) -> None:
        self.local -= 1
        self.done += 1
        if self.wanted:
            self.slot_freed.set()

    # ── tasks ─────────────────────────────────────────────────────────────────

    async def execute(self, tg: TaskGroup, task: ClaimedTask) -> None:
        # The scope the claim loop registered (a lease lost before this task started
        # cancelled it already), or a new one.
        entry = self.running.get(task.id)
        scope = anyio.CancelScope() if entry is None else entry[1]
        self.running[task.id] = (task, scope)
        side: RunSide | None = None
        try:
            found = await self.graph_for(task)
            if found is None:  # this worker cannot run it (other code): give it back
                await self.workers.release(self.worker_id, [task.id])
                return
            side = self._side(tg, task.run_id, *found)
            side.in_flight += 1
            with scope:
                outcome = await self._attempt(side, task)
            if scope.cancelled_caught or task.id in self.released:
                # lost (dropped, taken over) or released: not ours to commit
                if task.id not in self.released:
                    await self._stopped(side, task)
                return
            stored = await self._finish(task, encode_outcome(outcome))
            if not stored:
                await self._stopped(side, task)
        except StorageError as exc:
            # The database failed under this task (out of connections, restarting): the
            # worker goes on; the task goes back to the queue (its paid calls replayed),
            # or, if even that fails, its lease lapses and it is claimed again.
            logger.warning("task %s (%s of run %s) given back: %s", task.id, task.step,
                           task.run_id, exc)  # fmt: skip
            await self._give_back(task)
        else:
            if stored:
                self.done += 1
            else:
                self.refused_commits += 1
                logger.warning(
                    "task %s (%s of run %s) was dropped (its run cancelled) or taken over: "
                    "its outcome was not stored",
                    task.id,
                    task.step,
                    task.run_id,
                )
        finally:
            self.running.pop(task.id, None)
            self.released.discard(task.id)
            if side is not None:
                side.in_flight -= 1
                side.used = anyio.current_time()
            self.slot_freed.set()
            if not self.running:
                self.idle.set()

    async def _stopped(self, side: RunSide, task: ClaimedTask) -> None:
        """A task that was dropped (its run cancelled) stopped here: what its calls got
        (paid answers, unanswered calls counted) stored first, then the task removed, so
        the run's coordinator, which waits for that, ends the run only after it. (A task
        taken over by another worker is not ``dropped``: nothing removed.)"""
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await side.commit.commit()
                await self.workers.forget(self.worker_id, task.run_id, [task.id])
            except StorageError as exc:
                logger.warning("task %s (%s of run %s): its stop not told: %s", task.id,
                               task.step, task.run_id, exc)  # fmt: skip

    async def _give_back(self, task: ClaimedTask) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await self.workers.release(self.worker_id, [task.id])
            except StorageError as exc:
                logger.warning("task %s left to its lease: %s", task.id, exc)

    def _side(
        self, tg: TaskGroup, run_id: str, graph: GraphSpec, params: dict[str, Any]
    ) -> RunSide:
        side = self.sides.get(run_id)
        if side is None:
            side = self.sides[run_id] = RunSide(self.store, run_id, graph, params)
            tg.start_soon(self._write, side, name=f"baton:writer:{run_id}")
        return side

    async def _write(self, side: RunSide) -> None:
        """A run's writer; if a commit fails, the run's tasks here stop (not stored: their
        leases lapse and other workers run them again, replaying what was stored)."""
        try:
            await side.write()
        except Exception:
            logger.exception("storing the calls of run %s failed", side.run_id)
            if self.sides.get(side.run_id) is side:
                del self.sides[side.run_id]
            for task, scope in list(self.running.values()):
                if task.run_id == side.run_id:
                    scope.cancel()

    async def _attempt(self, side: RunSide, task: ClaimedTask) -> Any:
        spec = side.graph.steps[task.spec]
        row = NodeRow(
            run_id=task.run_id,
            step=task.step,
            kind=NodeKind.CHILD if task.step != task.spec else NodeKind.STEP,
            worker=spec.worker,
            deps=[],
            remaining_deps=0,
            max_attempts=spec.max_attempts,
            updated_at=utcnow(),
            id=task.id,
            model=task.model,
            attempt=task.attempt,
        )
        node = Node(row, spec)
        if task.item is not None:
            node.item = _jsonutil.loads(task.item)
        results = await self._dep_results(side, spec.deps)
        replay = task.replay or task.token > 1 or task.attempt > 1
        calls = Calls(
            side.graph, task.run_id, self.store, side.commit, side.announce, resumed=replay
        )
        calls.spend = await side.spend_for(self.workers)
        ctx = Context(calls, node, side.params, results, task.model)
        return await run_attempt(node, ctx, results)

    async def _dep_results(self, side: RunSide, deps: tuple[str, ...]) -> dict[str, Any]:
        if any(d not in side.results for d in deps):
            async with side.reading:  # tasks starting together: one read for them all
                missing = [d for d in deps if d not in side.results]
                if missing:
                    found = await self.workers.dep_results(side.run_id, missing)
                    for step, text in found.items():
                        side.results[step] = _jsonutil.loads(text)
        return {d: side.results[d] for d in deps if d in side.results}

    async def _finish(self, task: ClaimedTask, outcome: str) -> bool:
        """Store an outcome with the others ready now: one round trip for them all."""
        waiter = _Finished(task, outcome)
        self._finishing.append(waiter)
        self._finish_wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.stored

    async def finisher(self) -> None:
        """The task storing outcomes, batch after batch (run in the worker's task group)."""
        while True:
            await self._finish_wake.wait()
            self._finish_wake = anyio.Event()
            batch, self._finishing = self._finishing, []
            try:
                stored = await self.workers.finish_many(
                    self.worker_id, [(w.task, w.outcome) for w in batch]
                )
            except Exception as exc:
                for waiter in batch:
                    waiter.error = exc
                    waiter.done.set()
                continue
            for waiter in batch:
                waiter.stored = waiter.task.id in stored
                waiter.done.set()

    def close_idle(self, idle: float) -> None:
        """Stop the writers of runs with no task running for ``idle`` seconds."""
        now = anyio.current_time()
        for run_id, side in list(self.sides.items()):
            if side.in_flight == 0 and now - side.used >= idle:
                del self.sides[run_id]
                side.commit.stop()

    async def renew(self, ttl: float) -> None:
        """Extend the leases of the running tasks; stop those no longer ours."""
        ids = list(self.running)
        if not ids:
            return
        alive = await self.workers.renew(self.worker_id, ids, ttl)
        for task_id in ids:
            if task_id not in alive and task_id in self.running:
                self.running[task_id][1].cancel()

    def dropped(self, run_id: str) -> None:
        """Tasks of ``run_id`` were dropped (NOTIFY ``STOP_CHANNEL``): if any runs here,
        ``stop_dropped`` renews now."""
        if any(task.run_id == run_id for task, _ in self.running.values()):
            self._wake_stop.set()

    async def stop_dropped(self, ttl: float) -> None:
        """Stop at once the tasks running here that their coordinator dropped (their run is
        cancelled): a renewal now instead of at the next heartbeat, so the run's end waits
        for them no longer than a round trip (``RemoteAttempts.cancelling``)."""
        while True:
            await self._wake_stop.wait()
            self._wake_stop = anyio.Event()
            await self.renew(ttl)

    async def release_all(self) -> None:
        """Give the running tasks back to the queue (the same attempt) and stop them."""
        ids = list(self.running)
        self.released.update(ids)
        await self.workers.release(self.worker_id, ids)
        for task_id in ids:
            entry = self.running.get(task_id)
            if entry is not None:
                entry[1].cancel()
