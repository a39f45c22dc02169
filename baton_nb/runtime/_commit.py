"""Group commit: a run's writes, gathered and committed by one writer task in batches.

Every state change happens first in memory (the scheduler) and is marked here; the writer
commits what is marked in one transaction, as soon as somebody waits for it (an LLM
answer; a settled step whose commit starts a dependent, runs a callback or may end the run)
or after ``LAZY_FLUSH`` (a step that started, a map child that settled: nobody waits for
that row, it rides along with the next commit). A settled step's result, its state and its
dependents' counters go out in one transaction, and what follows (announcing it, starting
its dependents) happens only after that commit: a crash never leaves a dependent running
on a result that is not stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from .._errors import RunLocked, save_failed
from ..store import (
    AttemptRow,
    BatchWriter,
    CallRecord,
    CompletionRow,
    LogRow,
    RunUpdate,
    StepWorkerRow,
    WriteBatch,
    utcnow,
)
from ._decisions import Settled
from ._node import Node

__all__ = ["LAZY_FLUSH", "GroupCommit"]

LAZY_FLUSH = 0.05  # seconds a write nobody waits for may wait for company
# Settled nodes nobody waits for, gathered at most before they are committed all the same:
# a burst of short steps (a fan-out of no-op steps) commits as it goes, not in one
# transaction at the end that the run would wait for.
LAZY_MOST = 500


class _LoopEvent:
    """``anyio.Event``'s ``set``, ``is_set`` and ``wait`` (the ones used here) on asyncio,
    for the writer's events: a commit's end, which every LLM answer's step waits for, and
    "something to write" / "somebody waits", set several times a call (a mark, the rows, a
    settlement, a commit) and nearly always set already. Each waiter awaits a future of
    its own, set with the others; a cancelled waiter's is skipped. Against
    ``anyio.Event`` (its ``wait``, then asyncio's ``Event.wait``: two coroutines, a deque
    entry added and removed per waiter; its ``set``, two calls) two coroutine levels
    fewer to make and to pass through when the waiters wake, and a ``set`` of a set event
    one attribute read (docs/performance.md, issue 16, branch 16s)."""

    __slots__ = ("_futures", "_loop", "_set")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._futures: list[asyncio.Future[None]] = []
        self._set = False

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():  # (cancelled)
                future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def wait(self) -> Awaitable[Any]:
        """What to await (no coroutine of its own): the waiter's future, or a checkpoint
        once set (as ``anyio.Event.wait``)."""
        if self._set:
            return anyio.lowlevel.checkpoint()
        future = self._loop.create_future()
        self._futures.append(future)
        return future


def _loop_event() -> anyio.Event | _LoopEvent:
    """One of the writer's events: ``_LoopEvent`` on an asyncio loop, else (trio, or no
    loop running) ``anyio.Event``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return anyio.Event()
    return _LoopEvent(loop)


class GroupCommit:
    """What a run has to write, and the loop that writes it."""

    def __init__(self, run_id: str, on_committed: Callable[[Settled], None]) -> None:
        self.run_id = run_id
        self._on_committed = on_committed
        self._dirty: dict[int, Node] = {}
        self._pending = WriteBatch()
        # Settled nodes whose commit the writer has not done yet.
        self._settling: list[Settled] = []
        self.settling_nodes = 0  # their nodes, counted
        self._dirt = _loop_event()  # something to write
        self._urgent = _loop_event()  # somebody waits for it to be committed
        self._flush_done = _loop_event()
        self._stopping = False
        self.error: BaseException | None = None  # the write that failed, if one did
        self._held: anyio.Event | None = None  # set when a `held` block ends
        self._writing: anyio.Event | _LoopEvent | None = None  # set when the commit under way ends
        # Asked before each commit (a worker coordinating the run: its lease still held,
        # ``Lease.held``): False, and nothing more is committed, the writer raises RunLocked.
        # A cheap early exit only: what makes a late commit impossible is ``owner``.
        self.fence: Callable[[], bool] | None = None
        # The run's lease owner (its executor): every batch is committed only while it
        # holds the lease, checked in the commit's transaction (``WriteBatch.owner``); a
        # refused commit raises RunLocked from the writer, nothing of it written.
        self.owner: str | None = None

    # ── marking ───────────────────────────────────────────────────────────────

    def mark(self, node: Node) -> None:
        """``node`` changed: its row goes out with the next commit."""
        self._dirty[node.id] = node
        self._dirt.set()

    def add_rows(
        self,
        *,
        completion: CompletionRow | None = None,
        call: CallRecord | None = None,
        log: LogRow | None = None,
        attempt: AttemptRow | None = None,
        ran_on: StepWorkerRow | None = None,
    ) -> None:
        """A stored completion, a call's stats row, a captured-context row, an ended
        attempt, the worker that ran an attempt (a coordinator's own) to commit."""
        pending = self._pending
        if completion is not None:
            pending.completions.append(completion)
        if call is not None:
            pending.stats.append(call)
        if log is not None:
            pending.logs.append(log)
        if attempt is not None:
            pending.attempts.append(attempt)
        if ran_on is not None:
            pending.ran_on.append(ran_on)
        self._dirt.set()

    def set_run(self, update: RunUpdate) -> None:
        self._pending.run = update
        self._dirt.set()

    def settle(self, settled: Settled, unsettled: int, *, urgent: bool = False) -> None:
        """Commit soon (its nodes are marked); ``on_committed(settled)`` runs right after.
        ``unsettled``: the run's nodes not counted settled yet (``Scheduler.unsettled``);
        ``urgent``: committed at once whatever follows it.

        Somebody waits for this commit if it starts a node, runs a callback, or may end
        the run (every node not settled is in it or in a commit to come): then it goes
        out at once. Else it rides along with the next commit somebody needs, or goes
        out after ``LAZY_FLUSH``, as a step's start does: a wide map's children settle a
        few at a time, and committing each few on its own cost a transaction (a round
        trip to the database's thread, the pages rewritten) per handful of children
        (docs/performance.md, "Fifth round")."""
        waited_for = urgent or bool(settled.ready or settled.callbacks)
        if not waited_for and unsettled - self.settling_nodes <= len(settled.nodes):
            waited_for = True  # it may end the run
        self._settling.append(settled)
        self.settling_nodes += len(settled.nodes)
        self._dirt.set()
        if waited_for or self.settling_nodes >= LAZY_MOST:
            self._urgent.set()

    def hurry(self, unsettled: int) -> None:
        """Commit what settled now if every node not settled (``unsettled``) is in it:
        the run's end waits for it (the last to settle was a callback, an expansion)."""
        if self._settling and unsettled <= self.settling_nodes:
            self._urgent.set()

    def take_settling(self) -> list[Settled]:
        """What settled but was not committed by the writer (it stopped first): written with
        the run's end, which announces it (no dependents start, no callbacks run then)."""
        settling, self._settling = self._settling, []
        self.settling_nodes = 0
        return settling

    def take_all(self) -> tuple[WriteBatch, list[Settled]]:
        """``take_batch`` and ``take_settling``: what a last commit writes and announces."""
        return self.take_batch(), self.take_settling()

    def take_batch(self) -> WriteBatch:
        """Everything marked so far, as one batch (and a clean slate)."""
        batch = self._pending
        batch.run_id = self.run_id
        batch.owner = self.owner
        now = utcnow()  # one updated_at for the rows that commit together
        batch.nodes = [n.update(now) for n in self._dirty.values()]
        self._dirty = {}
        self._pending = WriteBatch()
        return batch

    # ── committing ────────────────────────────────────────────────────────────

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No commit of the writer during the block (one under way is let finish first).

        For rows stored on another connection (a map's children) stamped with a time taken
        in the block: no row stamped later is committed before them. ``bn.watch`` reads the
        rows updated since the newest time it has seen, and would never see them otherwise.
        """
        while self._held is not None:  # another block (a second map expanding)
            await self._held.wait()
        held = self._held = anyio.Event()
        try:
            if self._writing is not None:
                await self._writing.wait()
            yield
        finally:
            self._held = None
            held.set()

    async def commit(self) -> None:
        """Wait until everything marked so far is committed."""
        done = self._flush_done
        self._dirt.set()
        self._urgent.set()
        await done.wait()
        if self.error is not None:
            raise save_failed(self.run_id, self.error)

    def stop(self) -> None:
        """Let ``run`` return (what is still marked is written by whoever ends the run)."""
        self._stopping = True
        self._dirt.set()
        self._urgent.set()

    async def run(self, writer: BatchWriter) -> None:
        """The writer task: commit what is marked, batch after batch, until ``stop``."""
        # ``stop`` may come while a batch is written (it set the events of that round):
        # checked again before each wait, or the writer would wait for ever.
        while not self._stopping:
            await self._dirt.wait()
            if self._stopping:
                return
            # Writes nobody waits for (a step started) ride along with the next commit
            # somebody needs, or go out after LAZY_FLUSH: half the transactions in chains.
            if self._urgent.is_set():
                await anyio.lowlevel.checkpoint()  # what is ready now joins this commit
            else:
                with anyio.move_on_after(LAZY_FLUSH):
                    await self._urgent.wait()
            while self._held is not None:
                await self._held.wait()
            self._dirt, self._urgent = _loop_event(), _loop_event()
            done, self._flush_done = self._flush_done, _loop_event()
            batch, settling = self.take_all()
            if self.fence is not None and not self.fence():
                self.error = RunLocked(f"run {self.run_id}: its lease lapsed, not committed")
                done.set()
                raise self.error
            self._writing = done
            try:
                with anyio.CancelScope(shield=True):
                    if batch:
                        await writer.write(batch)
            except RunLocked as exc:  # taken over: this execution stops, nothing written
                self.error = exc
                raise
            except Exception as exc:
                self.error = exc
                raise save_failed(self.run_id, exc) from exc
            finally:
                self._writing = None
                done.set()
            for settled in settling:
                self._on_committed(settled)
