"""``bn.watch``: a run kept current, wherever it executes (seed: PgFlow LiveClient).

Order matters and is the point: subscribe to in-process events first, then load the
snapshot from the database, then apply updates forward-only. Runs executing in another
process are followed by reading only the rows changed since the last read: on Postgres as
soon as a commit notifies (LISTEN/NOTIFY), on SQLite by polling. Every update goes
through one rule, so an update seen twice (event and poll) or late (a poll older than an
event) changes nothing.

>>> async with bn.watch(run_id, db="sqlite:///runs.db") as live:
...     async for update in live:
...         print(update)           # StepUpdated, CallFinished, then WorkflowFinished
...     live.run.status
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import anyio

from . import _jsonutil
from ._run import Run, run_abandoned
from ._runview import StepInfo, count_unstored
from ._states import FINISHED_STATUSES, TERMINAL_STATES, NodeKind, RunStatus, State
from .events import (
    CallFinished,
    EventsDropped,
    StepUpdated,
    Subscription,
    WorkflowFinished,
    subscribe,
    topic_workflow,
)
from .store import CallRecord, ChangeMarks, NodeRow, RunStore, Store

__all__ = ["RUN_TERMINAL", "LiveRun", "Update", "is_newer", "watch"]

Update = StepUpdated | CallFinished | WorkflowFinished
RUN_TERMINAL = FINISHED_STATUSES
# With notifications, polls are a safety net only; notified reads are coalesced to <= 10/s.
LISTENING_POLL_FACTOR = 10
NOTIFIED_MIN_GAP = 0.1
_RANK = {State.PENDING: 0, State.EXECUTING: 1, State.SNOOZED: 1, State.RETRYABLE: 1}


def _rank(state: str) -> int:
    return 2 if state in TERMINAL_STATES else _RANK.get(State(state), 0)


def is_newer(current: str, seen_at: datetime | None, state: str, at: datetime | None) -> bool:
    """Forward-only: pending < executing/snoozed/retryable < terminal; terminal is final.

    Among the active states (a retry or a snooze cycles through them) the later one wins.
    """
    old, new = _rank(current), _rank(state)
    if old != new:
        return new > old
    if new != 1 or at is None:
        return False
    return seen_at is None or at > seen_at


def watch(run_id: str, db: str | None = None, *, poll_interval: float = 0.5) -> LiveRun:
    """Follow a run: ``async with bn.watch(run_id, db=...) as live`` (see ``LiveRun``)."""
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    return LiveRun(run_id, db, poll_interval)


class LiveRun:
    """``live.run`` is a ``bn.Run`` kept current; ``async for update in live`` yields changes.

    Its status is the stored one (``pending`` until a process takes the run, ``running``,
    then its end), with ``started_at``; views following it (``Run.follow``) are told of
    each change as they are for a run of this process (but its end: whoever shows them
    closes them).

    Updates are ``StepUpdated`` (a step changed state), ``CallFinished`` (an LLM call was
    recorded) and, last, one ``WorkflowFinished``; iteration then ends. For a run that
    already finished, the only update is its ``WorkflowFinished``.
    """

    def __init__(self, run_id: str, db: str | None, poll_interval: float) -> None:
        self.run_id = run_id
        self.db = db
        self.poll_interval = poll_interval
        self.polls = 0
        self._apply: _Forward | None = None
        self._stack = AsyncExitStack()
        self._sub: Subscription | None = None
        self._store: RunStore | None = None
        self._marks = ChangeMarks()
        self._next_poll = 0.0
        self._last_poll = float("-inf")
        self._listening = False
        self._notified = False
        self._wake: anyio.CancelScope | None = None

    @property
    def run(self) -> Run:
        if self._apply is None:
            raise RuntimeError("use `async with bn.watch(...) as live` before reading live.run")
        return self._apply.run

    @property
    def listening(self) -> bool:
        """True when commits of other processes wake this watcher (Postgres LISTEN/NOTIFY)."""
        return self._listening

    @property
    def finished(self) -> bool:
        """True once the run reached a terminal status (completed, failed, cancelled)."""
        return self._apply is not None and self._apply.finished

    async def __aenter__(self) -> LiveRun:
        try:
            topic = topic_workflow(self.run_id)
            self._sub = await self._stack.enter_async_context(subscribe(topic))
            self._store = await Store.open(self.db)
            self._stack.push_async_callback(self._store.close)
            notifications = self._store.notifications(self._on_change)
            self._listening = await self._stack.enter_async_context(notifications)
            await self._load_snapshot(self._store)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        assert self._apply is not None
        queue = self._apply.queue
        while not queue:
            if self._apply.finished:
                raise StopAsyncIteration
            await self._wait_for_updates()
        return queue.popleft()

    # ── snapshot ──────────────────────────────────────────────────────────────

    async def _load_snapshot(self, store: RunStore) -> None:
        marks = await store.change_marks(self.run_id)
        run = await Run.from_store(store, self.run_id)
        self._marks = marks
        self._apply = _Forward(run, marks.nodes_at)
        if run.status in RUN_TERMINAL:
            self._apply.finish(run.status, run.failed_steps, run.finished_at)

    # ── waiting: in-process events, polls ─────────────────────────────────────

    def _on_change(self, run_id: str) -> None:
        """A commit touched some run (Postgres NOTIFY): wake the wait if it is ours."""
        if run_id == self.run_id:
            self._notified = True
            if self._wake is not None:
                self._wake.cancel()

    async def _wait_for_updates(self) -> None:
        assert self._sub is not None and self._apply is not None
        if self._notified:
            await anyio.sleep(max(0.0, self._last_poll + NOTIFIED_MIN_GAP - time.monotonic()))
            await self._poll()
            return
        wait = self._next_poll - time.monotonic()
        if wait <= 0:
            await self._poll()
            return
        events: list[Any] = []
        # Only the wait is cancellable (deadline, NOTIFY): applying an event may read the
        # database, and a read cut short would lose the rows it had taken.
        with anyio.move_on_after(wait) as wake:
            self._wake = wake
            try:
                events.append(await self._sub.__anext__())
            finally:
                self._wake = None
        while (more := self._sub.get_nowait()) is not None:
            events.append(more)
        for event in events:
            if isinstance(event, StepUpdated):
                self._apply.step_event(event)
            elif isinstance(event, CallFinished):
                self._apply.call(_call_from_event(event), event)
            elif isinstance(event, (WorkflowFinished, EventsDropped)):
                await self._poll()  # the database has everything, results included

    async def _poll(self) -> None:
        self.polls += 1
        self._notified = False  # a commit during this read notifies again
        self._last_poll = time.monotonic()
        factor = LISTENING_POLL_FACTOR if self._listening else 1
        self._next_poll = self._last_poll + self.poll_interval * factor
        assert self._store is not None and self._apply is not None
        apply = self._apply
        changes = await self._store.changes_since(self.run_id, self._marks)
        marks = self._marks
        for row in changes.nodes:
            apply.row(row)
            # only once applied: an interrupted read loses nothing
            if marks.nodes_at is None or row.updated_at > marks.nodes_at:
                marks = replace(marks, nodes_at=row.updated_at)
        for call in changes.calls:
            marks = replace(marks, last_stat_id=max(marks.last_stat_id, call.id or 0))
            apply.call(call, None)
        for log in changes.logs:
            marks = replace(marks, last_log_id=max(marks.last_log_id, log.id or 0))
            apply.log(log)
        # Which worker ran each step (DESIGN §10), as the steps end: stored with the
        # outcome, before the step's own row, so it is here when the step shows as ended.
        for ran in changes.ran_on:
            marks = replace(marks, last_ran_on_id=max(marks.last_ran_on_id, ran.id))
            apply.ran_on(ran.step, ran.worker)
        self._marks = marks
        run_row = changes.run
        if run_row is not None and run_row.status == RunStatus.RUNNING:
            # abandoned as bn.runs() says it, now: a resume elsewhere takes the lease again
            apply.run.abandoned = run_abandoned(run_row)
        if run_row is not None and run_row.status in RUN_TERMINAL:
            apply.finish(run_row.status, run_row.failed_steps, run_row.finished_at)
        elif run_row is not None:  # pending → running (taken by a worker), its start
            apply.status(run_row.status, run_row.started_at)


class _Forward:
    """Applies what is seen of a run (rows, events) to its ``Run``, forward-only, and
    queues the updates that changed something. The Run's followers (``Run.follow``: a
    widget or a text line shown for ``live.run``) are told each step it changes, as the
    runtime tells them of a run of this process, and its status (``""``) as stored."""

    def __init__(self, run: Run, seen_at: datetime | None) -> None:
        self.run = run
        self.queue: deque[Update] = deque()
        self.finished = False
        self._versions: dict[str, datetime | None] = dict.fromkeys(run.steps, seen_at)
        self._seen_calls = {(c.step, c.model, c.created_at) for c in run.calls}
        self._seen_logs = {log.id for log in run.logs if log.id is not None}

    def row(self, row: NodeRow) -> None:
        run = self.run
        name = row.step
        at = row.updated_at
        info = run.steps.get(name)
        if info is None:
            self._add(StepInfo.from_row(row), at)
        elif is_newer(info.state, self._versions.get(name), row.state, at):
            self._versions[name] = at
            self._set(
                info,
                row.state,
                row.attempt,
                row.error,
                at,
                row.has_result,
                row.started_at,
                row.finished_at,
            )
        if row.state is State.COMPLETED and name not in run.results and row.result is not None:
            run.set_result(name, _jsonutil.loads(row.result))
            info = run.steps[name]
            self._sync(
                info,
                info.state,
                info.attempt,
                info.error,
                row.has_result,
                info.started_at,
                info.finished_at,
            )
        if row.map_items is not None:  # a map expanding: its items not stored yet pending
            count_unstored(run.steps, name, row.map_items)
            run.step_changed(name)  # its count of items moved

    def step_event(self, event: StepUpdated) -> None:
        info = self.run.steps.get(event.step_name)
        if info is None:
            info = StepInfo(
                name=event.step_name,
                job_id=event.job_id,
                kind=NodeKind.CHILD if event.parent else NodeKind.STEP,
                parent=event.parent,
                worker=event.worker,
                max_attempts=event.max_attempts,
            )
            self._add(info, None, announce=False)
        if not is_newer(info.state, self._versions.get(info.name), event.state, event.timestamp):
            return
        self._versions[info.name] = event.timestamp
        started = info.started_at
        if event.state == State.EXECUTING and started is None:
            started = event.timestamp
        finished = info.finished_at
        if event.state in TERMINAL_STATES and finished is None:
            finished = event.timestamp
        self._set(
            info,
            State(event.state),
            event.attempt,
            event.error,
            event.timestamp,
            event.has_result,
            started,
            finished,
        )

    def call(self, call: CallRecord, event: CallFinished | None) -> None:
        key = (call.step, call.model, call.created_at)
        if key in self._seen_calls:
            return
        self._seen_calls.add(key)
        self.run.add_call(call)
        self.queue.append(event or call.event(self.run.workflow))
        self.run.step_changed(call.step)

    def ran_on(self, step: str, worker: str) -> None:
        info = self.run.steps.get(step)
        if info is not None:
            info.ran_on = worker
            self.run.step_changed(step)

    def status(self, status: RunStatus, started_at: datetime | None) -> None:
        """The stored run's status while it goes (``pending``, ``running``) and its start:
        the views following the run told (its header). Its end is ``finish``."""
        run = self.run
        started = started_at or run.started_at
        if self.finished or (status, started) == (run.status, run.started_at):
            return
        run.set_status(status, started_at=started_at)
        run.step_changed("")  # no step's name: the followers look at the header again

    def log(self, log: Any) -> None:
        if log.id not in self._seen_logs:
            self._seen_logs.add(log.id)
            self.run.add_log(log)

    def finish(self, status: RunStatus, failed: list[str], at: datetime | None) -> None:
        if self.finished:
            return
        run = self.run
        run.set_status(status, failed_steps=failed, finished_at=at)
        for info in run.steps.values():  # a map's items not stored by now never will be
            info.unstored = 0
        self.finished = True
        self.queue.append(
            WorkflowFinished(run.id, run.workflow, status, list(failed), at or _now())
        )
        # Its header: the run's end told to the followers as a change; their end is told
        # by whoever shows them (``wf.run(workers=True)`` closes its view once it said
        # by whom the run was taken over, if it was).
        run.step_changed("")

    def _add(self, info: StepInfo, at: datetime | None, *, announce: bool = True) -> None:
        self.run.add_step(info)
        parent = self.run.steps.get(info.parent) if info.parent is not None else None
        if parent is not None and parent.unstored:  # one of its items stored
            parent.unstored -= 1
        self._versions[info.name] = at
        if announce:
            self.queue.append(self._update(info, at))
        self.run.step_changed(info.name)

    def _set(
        self,
        info: StepInfo,
        state: State,
        attempt: int,
        error: str | None,
        at: datetime | None,
        has_result: bool,
        started_at: datetime | None,
        finished_at: datetime | None,
    ) -> None:
        same = (info.state, info.attempt, info.error) == (state, attempt, error)
        self._sync(
            info,
            state,
            attempt,
            error,
            has_result,
            started_at or info.started_at,
            finished_at or info.finished_at,
        )
        if not same:  # the same facts seen again (event and poll) are not an update
            self.queue.append(self._update(info, at))

    def _sync(
        self,
        info: StepInfo,
        state: State,
        attempt: int,
        error: str | None,
        has_result: bool,
        started_at: datetime | None,
        finished_at: datetime | None,
    ) -> None:
        self.run.sync_step(info.name, state, attempt, error, has_result, started_at, finished_at)
        self.run.step_changed(info.name)  # the views following this Run (``Run.follow``)

    def _update(self, info: StepInfo, at: datetime | None) -> StepUpdated:
        run = self.run
        return StepUpdated(
            workflow_id=run.id,
            workflow_label=run.workflow,
            step_name=info.name,
            worker=info.worker,
            state=info.state,
            job_id=info.job_id,
            attempt=info.attempt,
            has_result=info.has_result,
            error=info.error,
            timestamp=at or _now(),
            parent=info.parent,
            max_attempts=info.max_attempts,
        )


def _call_from_event(event: CallFinished) -> CallRecord:
    if event.unanswered and event.cost is not None:
        return CallRecord.unanswered(
            event.workflow_id, event.step_name, 0, -1, event.model, event.provider,
            event.cost, event.timestamp,
        )  # fmt: skip
    return CallRecord(
        run_id=event.workflow_id,
        step=event.step_name,
        model=event.model,
        provider=event.provider,
        attempt=0,
        call_index=-1,
        usage=event.usage,
        cost=event.cost,
        latency_ms=event.latency_ms,
        replayed=event.replayed,
        estimated=event.estimated,
        created_at=event.timestamp,
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)
