"""``baton-nb worker``: a long-running process serving submitted runs (DESIGN §10).

It does two jobs, both claimed through Postgres: it coordinates runs whose lease is free
(``_coordinator``: the run's scheduler, in one process per run) and it runs tasks, the
attempts any coordinator queued (``_worker_tasks``), claimed in batches with ``FOR UPDATE
SKIP LOCKED`` under a lease renewed by its heartbeat. Woken by LISTEN/NOTIFY, with a short
poll as the safety net. SIGTERM (``stop``): no more claims; tasks running get ``grace``
seconds to finish, then go back to the queue (same attempt); runs it coordinates are
handed to the other workers.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .._errors import ConfigurationError, StorageError
from .._gc import fewer_collections
from .._graph import GraphSpec
from .._money import plural
from ..llm._limits import share_limits
from ..store import (
    DONE_CHANNEL,
    RUNS_CHANNEL,
    SLOTS_CHANNEL,
    STOP_CHANNEL,
    TASKS_CHANNEL,
    ClaimedTask,
    RunStore,
    SqlLimits,
    SqlStore,
    SqlWorkers,
    SubmissionRow,
    WorkerRow,
    open_worker_store,
    utcnow,
)
from ._code import code_hash, loads_workflow
from ._coordinator import coordinate
from ._remote import POLL, RemoteAttempts
from ._shared_limits import WorkerLimits
from ._worker_tasks import TaskRunner

__all__ = ["ServedWorkflow", "Worker"]

logger = logging.getLogger("baton_nb.workers")
# Tasks claimed in one round trip at most. A worker claims up to its free slots anyway
# (a full batch is followed at once by the next claim): 64 took ~50 per claim on the no-op
# map at 200 in flight, 256 took ~150 (round trips per step 0.155 -> 0.10).
CLAIM_BATCH = 256
RETRY = (0.1, 5.0)  # seconds before a loop tries again after a database error: first, most


async def _steadily(doing: str, loop: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run one of the worker's loops; a database error (the server restarting, out of
    connections) is logged and the loop started again after a backoff, so a worker outlives
    what its leases would not (its leases lapse meanwhile and the others take its work)."""
    delay = RETRY[0]
    while True:
        try:
            await loop(*args)
            return
        except StorageError as exc:
            logger.warning("%s failed, trying again in %.1fs: %s", doing, delay, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY[1])


@dataclass(frozen=True)
class ServedWorkflow:
    """A workflow this worker has the code of: its graph, code hash and import path."""

    graph: GraphSpec
    code_hash: str
    ref: str

    @classmethod
    def of(cls, workflow: Any, ref: str) -> ServedWorkflow:
        graph = workflow.graph()
        return cls(graph, code_hash(graph), ref)


class Worker:
    """One worker process (``await Worker(...).serve(stop)``)."""

    def __init__(
        self,
        db: str,
        served: Sequence[ServedWorkflow],
        *,
        concurrency: int = 100,
        accept_other_code: bool = False,
        refuse_by_value: bool = False,
        lease_ttl: float = 30.0,
        grace: float = 30.0,
        freeze_heap: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"worker concurrency must be >= 1, got {concurrency}")
        self.db = db
        self.served = {s.graph.name: s for s in served}
        self.concurrency = concurrency
        self.accept_other_code = accept_other_code
        self.refuse_by_value = refuse_by_value
        self.lease_ttl = lease_ttl
        self.grace = grace
        # The process is this worker's alone (``baton-nb worker``): what it holds once
        # started (modules, served workflows, the stores) lives as long as the process and
        # is kept out of cyclic collections (``gc.freeze``), whose full ones otherwise
        # traverse all of it again and again while tasks run.
        self.freeze_heap = freeze_heap
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = utcnow()
        self.stopping = anyio.Event()
        self._wake_tasks = anyio.Event()
        self._wake_runs = anyio.Event()
        self._coordinators: dict[str, RemoteAttempts] = {}  # by run, for NOTIFY wake-ups
        self._coordinating: set[str] = set()
        self._coordinated = anyio.Event()  # set when the last coordinated run ends
        self._graphs: dict[str, tuple[GraphSpec, dict[str, Any]] | None] = {}
        self._skip: set[str] = set()  # runs this worker cannot run (other code)
        self._store: RunStore | None = None
        self._workers: SqlWorkers | None = None
        self._tasks: TaskRunner | None = None
        self._limits: WorkerLimits | None = None

    # ── the process ───────────────────────────────────────────────────────────

    async def serve(self, stop: anyio.Event) -> None:
        """Serve until ``stop`` is set, then stop gracefully (see the module's doc)."""
        workers = self._workers = await open_worker_store(self.db)
        # The runs' store on the worker store's pool: one pool per worker process (two
        # held up to 30 connections each: three workers and a loaded server ran out).
        store = self._store = SqlStore(workers.url, workers.engine)
        tasks = self._tasks = TaskRunner(self.id, store, workers, self._graph_for, self.concurrency)
        # bn.Limit held across all workers (slots outlive a missed heartbeat or two)
        # on the worker store's connections (no pool more per worker)
        limits = self._limits = WorkerLimits(
            SqlLimits(workers.url, workers.engine), self.id, 3 * self.lease_ttl
        )
        previous_limits = share_limits(limits)
        try:
            await workers.beat(self._row())
            if self.freeze_heap:
                gc.collect()
                gc.freeze()
            # A worker runs steps all along (its coordinators' and its tasks'): young
            # collections rarer throughout, as while a run executes in process (``_gc``).
            with fewer_collections():
                async with (
                    anyio.create_task_group() as tg,
                    workers.listen(
                        [TASKS_CHANNEL, RUNS_CHANNEL, DONE_CHANNEL, SLOTS_CHANNEL, STOP_CHANNEL],
                        self._notified,
                    ),
                ):
                    tg.start_soon(_steadily, "heartbeat", self._heartbeat)
                    tg.start_soon(
                        _steadily, "stopping dropped tasks", tasks.stop_dropped, self.lease_ttl
                    )
                    tg.start_soon(tasks.finisher)
                    tg.start_soon(_steadily, "claiming runs", self._claim_runs, tg)
                    tg.start_soon(_steadily, "claiming tasks", self._claim_tasks, tg)
                    logger.info("worker %s serving %s", self.id, ", ".join(self.served) or "-")
                    await stop.wait()
                    logger.info(
                        "worker %s stopping: %s in flight, coordinating %s; grace %gs",
                        self.id, plural(tasks.in_flight, "task"),
                        plural(len(self._coordinating), "run"), self.grace,
                    )  # fmt: skip
                    self.stopping.set()
                    tasks.stopping = True
                    self._wake_tasks.set()
                    self._wake_runs.set()
                    await self._drain(tasks)
                    tg.cancel_scope.cancel()
                logger.info("worker %s stopped (%s done)", self.id, plural(tasks.done, "task"))
        finally:
            with anyio.CancelScope(shield=True):
                share_limits(previous_limits)
                try:  # best effort: its slots and its row lapse anyway
                    await limits.close()
                    await workers.remove_worker(self.id)
                except StorageError as exc:
                    logger.warning("could not sign off (its slots lapse): %s", exc)
                finally:
                    await workers.close()  # the store's pool too

    async def _drain(self, tasks: TaskRunner) -> None:
        """Stopping: running tasks finish within the grace period or go back to the
        queue; coordinated runs end or are handed over (``_coordinator``)."""
        if tasks.running:
            tasks.idle = anyio.Event()
            with anyio.move_on_after(self.grace):
                await tasks.idle.wait()
        if tasks.running:
            logger.info("releasing %d task(s) to the other workers", len(tasks.running))
            await tasks.release_all()
        if self._coordinating:  # they hand their runs over after the grace period
            self._coordinated = anyio.Event()
            await self._coordinated.wait()

    def _row(self) -> WorkerRow:
        tasks = self._tasks
        return WorkerRow(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            workflows=sorted(self.served),
            started_at=self.started_at,
            heartbeat_at=utcnow(),
            in_flight=tasks.in_flight if tasks else 0,
            done=tasks.done if tasks else 0,
            stopping=self.stopping.is_set(),
        )

    def _notified(self, channel: str, payload: str) -> None:
        if channel == SLOTS_CHANNEL:
            if self._limits is not None:
                self._limits.released(payload)
            return
        if channel == DONE_CHANNEL:
            remote = self._coordinators.get(payload)
            if remote is not None:
                remote.wake()
            return
        if channel == RUNS_CHANNEL:
            self._wake_runs.set()
            return
        if channel == STOP_CHANNEL:
            if self._tasks is not None:
                self._tasks.dropped(payload)
            return
        self._wake_tasks.set()
        if self._tasks is not None:
            self._tasks.wanted = True

    async def _heartbeat(self) -> None:
        assert self._workers is not None and self._tasks is not None
        while True:
            await self._tasks.renew(self.lease_ttl)
            self._tasks.close_idle(self.lease_ttl)
            await self._workers.beat(self._row())
            if self._limits is not None:
                await self._limits.renew()
            await anyio.sleep(self.lease_ttl / 3)

    # ── coordinating runs ─────────────────────────────────────────────────────

    async def _claim_runs(self, tg: Any) -> None:
        workers = self._workers
        assert workers is not None
        while not self.stopping.is_set():
            self._wake_runs = anyio.Event()
            found = await workers.claimable_runs(list(self.served), not self.refuse_by_value)
            for submission in found:
                if submission.run_id in self._coordinating:
                    continue
                graph = await self._coordinated_graph(submission)
                if graph is not None:
                    self._coordinating.add(submission.run_id)
                    tg.start_soon(self._coordinate, submission, graph)
            with anyio.move_on_after(POLL * 2):
                await self._wake_runs.wait()

    async def _coordinate(self, submission: SubmissionRow, graph: GraphSpec) -> None:
        assert self._store is not None and self._workers is not None
        try:
            await coordinate(
                self._store,
                self._workers,
                submission,
                graph,
                slots=self._tasks,
                worker_id=self.id,
                registry=self._coordinators,
                lease_ttl=self.lease_ttl,
                stopping=self.stopping,
                grace=self.grace,
            )
        except Exception:
            logger.exception("coordinating run %s failed", submission.run_id)
        finally:
            self._coordinating.discard(submission.run_id)
            if not self._coordinating:
                self._coordinated.set()

    async def _coordinated_graph(self, submission: SubmissionRow) -> GraphSpec | None:
        """The graph to drive ``submission`` with; None (and the run refused with the
        reason on it, when no worker should take it) if this worker cannot."""
        assert self._workers is not None
        if submission.code_blob is not None:
            if self.refuse_by_value:
                return None
            return loads_workflow(submission.code_blob).graph()  # type: ignore[no-any-return]
        served = self.served.get(submission.workflow)
        if served is None:
            return None
        if served.code_hash != submission.code_hash and not self.accept_other_code:
            await self._workers.refuse_run(submission.run_id, self._other_code(submission, served))
            return None
        return served.graph

    def _other_code(self, submission: SubmissionRow, served: ServedWorkflow) -> str:
        return (
            f"worker {self.id} refused run {submission.run_id}: it was submitted with code "
            f"{submission.code_hash} of workflow {submission.workflow!r} "
            f"({submission.code_ref or 'by value'}), and this worker has code "
            f"{served.code_hash} ({served.ref}); deploy the same code to the workers and "
            "submit again, or start the worker with --accept-other-code"
        )

    # ── running tasks ─────────────────────────────────────────────────────────

    async def _claim_tasks(self, tg: Any) -> None:
        workers, tasks = self._workers, self._tasks
        assert workers is not None and tasks is not None
        by_value = not self.refuse_by_value
        while not self.stopping.is_set():
            self._wake_tasks = anyio.Event()
            tasks.slot_freed = anyio.Event()
            free = min(tasks.free(), CLAIM_BATCH)
            claimed: list[ClaimedTask] = []
            if free > 0:
                # Held while the claim is under way: a coordinator of this worker running
                # an attempt itself meanwhile would otherwise take a slot counted here.
                tasks.claiming = free
                tasks.wanted = False  # a NOTIFY from now on sets it again
                ended = tasks.claim_ended = anyio.Event()
                try:
                    claimed = await workers.claim(
                        self.id, list(self.served), by_value, free, self.lease_ttl, self._skip
                    )
                finally:
                    tasks.claiming = 0
                    tasks.claim_ended = None
                    ended.set()
                for task in claimed:
                    tasks.running[task.id] = (task, anyio.CancelScope())
                    tg.start_soon(tasks.execute, tg, task)
            if free > 0 and len(claimed) == free:
                # More may be waiting; first let a coordinator's attempt woken by the claim's
                # end (``take_local``) take a free slot, or back-to-back claims keep it out.
                await anyio.lowlevel.checkpoint()
                continue
            with anyio.move_on_after(POLL):
                if free > 0:
                    await self._wake_tasks.wait()
                else:
                    await tasks.slot_freed.wait()

    async def _graph_for(self, task: ClaimedTask) -> tuple[GraphSpec, dict[str, Any]] | None:
        """The graph and params of a task's run (read once per run), None if this worker
        does not have its code."""
        if task.run_id in self._graphs:
            return self._graphs[task.run_id]
        assert self._workers is not None and self._store is not None
        submission = await self._workers.get_submission(task.run_id)
        run = await self._store.get_run(task.run_id)
        found: tuple[GraphSpec, dict[str, Any]] | None = None
        if submission is not None and run is not None:
            params = json.loads(run.params)
            if submission.code_blob is not None:
                if not self.refuse_by_value:
                    found = loads_workflow(submission.code_blob).graph(), params
            else:
                served = self.served.get(submission.workflow)
                if served is not None and (
                    served.code_hash == submission.code_hash or self.accept_other_code
                ):
                    found = served.graph, params
        if len(self._graphs) > 1000:
            self._graphs.clear()
        self._graphs[task.run_id] = found
        if found is None:
            self._skip.add(task.run_id)  # not claimed again by this worker
        return found
