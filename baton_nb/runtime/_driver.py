"""The in-process driver: executes one run in this process, applying the scheduler's
decisions with anyio tasks against the store.

One task per running attempt (started once it holds its slots), one writer task (group
commit, ``_commit``), one heartbeat task (the run's lease, ``_lease``). The scheduler
decides; this module runs attempts (``_attempt``), fan-out groups and callbacks, commits
what changed, and acts on a ``Settled`` only after its commit. A second driver (worker
processes claiming steps) reuses the scheduler, the attempt runner, the calls and the
store the same way.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel

from .._errors import RunLocked, unwrap_group
from .._graph import GraphSpec
from .._run import LIVE_RUNS, Run, live_run
from .._states import NodeKind, RunStatus, State
from ..store import ExecutionStore, RunUpdate, WriteBatch, utcnow
from ._announce import Announcer
from ._attempt import dep_results, keep_attempt, model_for, run_attempt
from ._batching import Batching
from ._calls import Calls
from ._commit import GroupCommit
from ._context import Context
from ._decisions import (
    PARKED,
    Completed,
    GroupOpened,
    Outcome,
    RetryAfter,
    RunEnd,
    Settled,
)
from ._expand import CHUNKS, expand_map
from ._lease import Lease
from ._node import Node
from ._scheduler import Scheduler
from ._spend import budget_stop
from ._steptasks import RunTasks
from ._takeover import taken_over

__all__ = ["Driver", "active_run", "active_runs"]

logger = logging.getLogger("baton_nb.runtime")
_ACTIVE = LIVE_RUNS  # the live Runs of this process, by id (kept in _run for the views)


def active_run(run_id: str) -> Run | None:
    """The live Run object of a run executing in this process, if any."""
    return live_run(run_id)


def active_runs() -> list[Run]:
    """Runs executing in this process right now."""
    return list(_ACTIVE.values())


class Driver:
    """Runs the nodes of one run to the end (or to cancellation)."""

    def __init__(
        self,
        graph: GraphSpec,
        store: ExecutionStore,
        run: Run,
        nodes: dict[str, Node],
        *,
        lease: Lease,
        concurrency: int,
        models: dict[str, str],
        resumed: bool,
    ) -> None:
        self.graph = graph
        self.store = store
        self.run = run
        self.lease = lease
        self.models = models
        self.scheduler = Scheduler(nodes, concurrency=concurrency, key_limits=graph.limits)
        self.announce = Announcer(run)
        self.commit = GroupCommit(run.id, self._committed)
        self.commit.owner = lease.owner  # every commit only while the lease is held
        self.calls = Calls(graph, run.id, store, self.commit, self.announce, resumed=resumed)
        # Provider batches (DESIGN §12): only for a graph with a batched step.
        self.batching: Batching | None = None
        if any(spec.batch for spec in graph.steps.values()):
            self.batching = Batching(
                run.id, store, self.calls, self.announce, spawn=self._spawn, readmit=self._admit
            )
            self.calls.batching = self.batching
        self.attempts: AttemptRunner = run_locally  # or the workers' queue (``_remote``)
        self.map_chunks = CHUNKS  # a map's children stored per chunk: first, most
        self._context = contextvars.copy_context()
        self._settled = anyio.Event()
        self._stopping = anyio.Event()  # the run settled: writer and heartbeat return
        self._helpers = 0  # writer and heartbeat not returned yet
        self._helpers_done = anyio.Event()
        self._tasks: RunTasks | None = None  # where steps run (``_spawn``)
        self._cancelled = False
        self.handing_over = False  # a coordinator stopping: its run's end not written
        self.taken: RunLocked | None = None  # the run taken over: what the caller is told
        self._loop_thread = threading.get_ident()
        self._token: Any = None

    def mark(self, node: Node) -> None:
        """``node`` changed: written with the next commit, shown in the live Run now, and its
        followers told now (a view reads the step just written, not a commit later)."""
        self.commit.mark(node)
        result = node.result_json  # Node.has_result, inline: the runtime's most frequent call
        run, name = self.run, node.name
        has_result = result is not None and result != "null"
        start, end = node.started_at, node.finished_at
        run.sync_step(name, node.state, node.attempt, node.error, has_result, start, end)
        if run.followers:
            run.step_changed(name)

    # ── the whole execution ───────────────────────────────────────────────────

    async def execute(self) -> Run:
        run = self.run
        run.set_status(RunStatus.RUNNING, started_at=run.started_at or utcnow())
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._context = contextvars.copy_context()  # each step's task starts from a copy
        run._canceller = self._request_cancel
        _ACTIVE[run.id] = run
        interrupted = False
        stopped_by: BaseException | None = None
        if self.batching is not None and self.calls.resumed:
            await self.batching.load()  # re-attach to the batches of earlier executions
        try:
            async with RunTasks.open(self._context) as tasks:
                self._tasks = tasks
                self._helpers = 2
                tasks.group.start_soon(self._helper, self._write)
                keep = partial(self.lease.keep, self.store, self.run.id, self._stopping)
                tasks.group.start_soon(self._helper, keep)
                for node in self.scheduler.initial():
                    self._start(node)
                if self.scheduler.unsettled == 0:
                    self._settled.set()
                await self._settled.wait()
                await self._stop_helpers()
                tasks.cancel()  # steps still running that a quorum made unneeded
        except BaseException as exc:
            interrupted = True
            real = stopped_by = unwrap_group(exc)
            # a commit found the run taken over: nothing more is written by this execution
            self.lease.lost = self.lease.lost or isinstance(real, RunLocked)
            if real is not exc and not isinstance(real, anyio.get_cancelled_exc_class()):
                raise real from None
            raise
        finally:
            run._canceller = None
            _ACTIVE.pop(run.id, None)
            # Once every node settled (and committed), a cancel or an interrupt that comes
            # while the writer stops finds nothing to cancel: the run ended as its nodes did.
            cancelled = (interrupted or self._cancelled) and not self._settled.is_set()
            with anyio.CancelScope(shield=True):
                await self._finish(cancelled=cancelled)
            # Taken over: the caller is told who has the run now; another stop as it came.
            if self.taken is not None and (stopped_by is None or isinstance(stopped_by, RunLocked)):
                raise self.taken from None
        return run

    def _request_cancel(self) -> None:
        """Cancel from the event loop's thread or any other (a widget button, a signal)."""
        self._cancelled = True
        tasks = self._tasks
        if tasks is None:
            return
        if threading.get_ident() == self._loop_thread:
            tasks.cancel()
        else:
            anyio.from_thread.run_sync(tasks.cancel, token=self._token)

    async def _finish(self, *, cancelled: bool) -> None:
        if not _lost(self.commit, self.lease):
            await self._end(cancelled=cancelled)
        if self.lease.lost:  # taken over: nothing of its end written nor told (``_takeover``)
            self.taken = await taken_over(self.store, self.run, self.lease, self.announce)

    async def _end(self, *, cancelled: bool) -> None:
        """The run's end, committed under the lease (not if it was taken over meanwhile)."""
        # Handing over: what its own attempts stored is committed (taken before the end
        # marks steps cancelled), not the run's end; under the lease as every batch.
        handed = self.commit.take_all() if self.handing_over else None
        # run.cancel(), not an interrupt; while the lease is held (not a new owner's batches)
        batching = self.batching if handed is None and self._cancelled else None
        if batching is not None and _may_commit(self.commit, self.lease):
            await batching.cancel_remote()
        end = self.scheduler.wind_down(cancelled=cancelled, why=await budget_stop(self.calls.spend))
        for node in end.cancelled:
            self.mark(node)
            self.announce.step(node)
        now = utcnow()
        self.announce.ended(end.status, end.failed_steps, now)
        # Only while the lease is held: by the clock (``fence``), in the commit (``owner``).
        self.commit.set_run(_run_end(self, end, now, stopped=cancelled and handed is None))
        last = handed or self.commit.take_all()
        try:
            if _may_commit(self.commit, self.lease):  # refused (taken over): ``lease.lost``
                await _write_last(self.store, self.lease, self.announce, *last)
        finally:  # the execution ended, stored or not: its one WorkflowFinished
            if not self.lease.lost:
                self.announce.finished(end.status, end.failed_steps, now)

    # ── helpers: the writer and the heartbeat ─────────────────────────────────

    async def _helper(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await body()
        finally:
            self._helpers -= 1
            if self._helpers == 0:
                self._helpers_done.set()

    async def _write(self) -> None:  # RunLocked (run taken over): ``execute`` stops
        async with self.store.writer() as writer:
            await self.commit.run(writer)

    async def _stop_helpers(self) -> None:
        """Let the writer and the heartbeat return instead of cancelling them: a cancelled
        task's CancelledError keeps its frames (this execution, every node and result) in a
        cycle only a full collection frees. What is still marked ``_finish`` writes."""
        self._stopping.set()
        self.commit.stop()
        if self._helpers:
            await self._helpers_done.wait()

    # ── starting nodes ────────────────────────────────────────────────────────

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], name: str, *args: Any) -> None:
        """Start ``fn(*args)`` in a copy of the run's context (``RunTasks.spawn``)."""
        assert self._tasks is not None
        self._tasks.spawn(fn, f"baton:{name}", *args)

    def _start(self, node: Node) -> None:
        """``node`` was admitted: run an attempt (it holds its slots), or open its group."""
        body = self._open_group if node.kind is NodeKind.GROUP else self._run_step
        self._spawn(body, node.name, node)

    def _admit(self, node: Node) -> None:
        admitted = self.scheduler.admit(node)
        if admitted is not None:
            self._start(admitted)

    def _context_for(self, node: Node) -> Context:
        results = dep_results(node, self.scheduler.nodes)
        model = model_for(node, self.models)
        return Context(self.calls, node, self.run.params, results, model)

    # ── running ───────────────────────────────────────────────────────────────

    async def _run_step(self, node: Node) -> None:
        """One attempt of a step that holds its slots; a retry or snooze admits it again."""
        scheduler = self.scheduler
        try:
            if not scheduler.begin(node):
                return  # settled while it waited (e.g. a quorum was met)
            self.mark(node)
            self.announce.step(node)
            ctx = self._context_for(node)
            began = utcnow()
            outcome = await self.attempts(node, ctx)
        finally:
            for nxt in scheduler.release(node):
                self._start(nxt)
        decision = scheduler.conclude(node, outcome)
        if decision is not None and (node.attempt > 1 or not isinstance(outcome, Completed)):
            keep_attempt(self.commit, self.run, node, outcome, began)  # retry history
        if isinstance(decision, RetryAfter):
            self.mark(node)
            self.announce.step(node)
            if outcome is PARKED and self.batching is not None:
                self.batching.parked(node)  # admitted again once its batch answers
                return
            await anyio.sleep(decision.delay)
            self._admit(node)
        else:
            self._settle(decision)
        if self.batching is not None and node.spec.batch:
            self.batching.check(node.parent)  # a child settled: the round may be complete

    async def _open_group(self, group: Node) -> None:
        scheduler = self.scheduler
        scheduler.begin_group(group)
        self.mark(group)
        self.announce.step(group)
        if group.spec.map_over is None:
            self._opened(scheduler.open_group(group))
            return
        # A map's children, one per item of its source's result, stored and started a
        # chunk at a time (``_expand``).
        problem = await expand_map(
            group,
            scheduler,
            self.store,
            self.commit,
            self.announce,
            self.run.id,
            self._opened,
            chunks=self.map_chunks,
        )
        if problem is not None:
            self._settle(scheduler.settle(group, State.DISCARDED, error=problem))
            return
        if self.batching is not None and group.spec.batch:
            # Every child taken now: a batched round is complete once every open child is
            # parked, and they may all have parked before the last chunk was taken (a
            # resume whose later chunks had completed): no park or settle comes to say so.
            self.batching.check(group)
        self._count_settled(1)  # the expansion itself (``plan_children``)

    def _opened(self, opened: GroupOpened) -> None:
        """A group's children to write and to start, and its verdict if known already."""
        for child in opened.reset:
            self.mark(child)
        self._settle(opened.settled)
        for child in opened.start:
            self._start(child)

    # ── settling ──────────────────────────────────────────────────────────────

    def _settle(self, settled: Settled | None) -> None:
        """Commit what settled; the rest follows the commit (``_committed``)."""
        if settled is None:
            return
        for node in settled.changed:
            self.mark(node)
        for node in settled.nodes:
            if node.state is State.COMPLETED:
                self.announce.result(node)
        # A worker's outcome was taken off the queue: committed at once (kill -9 would lose it)
        remote = self.attempts is not run_locally
        self.commit.settle(settled, self.scheduler.unsettled, urgent=remote)

    def _committed(self, settled: Settled) -> None:
        """``settled`` stored: announce it, start what it readied, run callbacks, count it."""
        for node in settled.nodes:
            self.announce.step(node)
        for node in self.scheduler.committed(settled):
            self._start(node)
        if settled.callbacks:
            name = settled.nodes[0].name
            self._spawn(_run_callbacks, name, settled, self._context_for, self._count_settled)
        else:
            self._count_settled(len(settled.nodes))

    def _count_settled(self, count: int) -> None:
        """``count`` more nodes settled: the run ends once every node has (or once the
        commit that all the others wait for is done: hurried)."""
        if self.scheduler.count_settled(count):
            self._settled.set()
        else:
            self.commit.hurry(self.scheduler.unsettled)


AttemptRunner = Callable[[Node, Context], Coroutine[Any, Any, Outcome]]


async def _run_callbacks(
    settled: Settled, context_for: Callable[[Node], Context], count: Callable[[int], None]
) -> None:
    """The ``on_dep_*`` callbacks of the nodes ``settled`` cancelled, then counted settled."""
    for node, dep_state, reason in settled.callbacks:
        spec = node.spec
        fn = spec.on_dep_discarded if dep_state is State.DISCARDED else spec.on_dep_cancelled
        if fn is None:
            continue
        try:
            result = fn(reason, context_for(node))
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_dep_%s callback of step %r raised", dep_state, node.name)
    count(len(settled.nodes))


def run_locally(node: Node, ctx: Context) -> Coroutine[Any, Any, Outcome]:
    """An attempt run in this process (the in-process driver's way): ``run_attempt``'s
    own coroutine, awaited by the step's task (no coroutine of its own around it)."""
    return run_attempt(node, ctx, ctx.results)


def _run_end(driver: Driver, end: RunEnd, now: datetime, *, stopped: bool) -> RunUpdate:
    """The run's end, its lease given back. ``stopped`` by an interrupt or an outside
    cancellation (a kernel restart interrupts first), not by ``run.cancel()`` nor a budget
    (which cancel the run): the execution's lease owner stored as ``stopped_by``, so that
    a re-run once this process is gone resumes the run (``_unfinished``)."""
    interrupted = stopped and not driver._cancelled and not driver.run.budget_stop
    owner = driver.lease.owner if interrupted and end.status is RunStatus.CANCELLED else None
    return RunUpdate(driver.run.id, end.status, end.failed_steps, now, None, True, owner)


def _lost(commit: GroupCommit, lease: Lease) -> bool:
    """Whether the run's lease is lost: found taken, or lapsed by a coordinator's clock
    (``GroupCommit.fence``, which then marks it ``lost``)."""
    return lease.lost or (commit.fence is not None and not commit.fence())


def _may_commit(commit: GroupCommit, lease: Lease) -> bool:
    """Whether the run's last commit may be written: no commit failed, the lease is
    held (by this process's clock too: ``GroupCommit.fence``, a worker's coordinator)."""
    fence = commit.fence
    return commit.error is None and not lease.lost and (fence is None or fence())


async def _write_last(
    store: ExecutionStore,
    lease: Lease,
    announce: Announcer,
    batch: WriteBatch,
    settling: list[Settled],
) -> None:
    """The execution's last commit; refused (the run taken over meanwhile: ``RunLocked``),
    the lease is lost, nothing of the batch was written."""
    try:
        await store.write(batch)
    except RunLocked:
        lease.lost = True
        return
    for settled in settling:  # stored now: announced as the writer would have
        for node in settled.nodes:
            announce.step(node)
