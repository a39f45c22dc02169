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
from datetime import datetime, timezone
from typing import Any, cast

import anyio
import sqlalchemy as sa

from . import _jsonutil
from ._run import TERMINAL_STATES, CallRecord, Run, StepInfo, step_info_from_row
from .events import (
    CallFinished,
    EventsDropped,
    StepUpdated,
    Subscription,
    WorkflowFinished,
    subscribe,
    topic_workflow,
)
from .store import Store, WorkflowDebugLog, WorkflowNode, WorkflowRun, WorkflowStepStat, loads_list

__all__ = ["RUN_TERMINAL", "LiveRun", "Update", "is_newer", "watch"]

Update = StepUpdated | CallFinished | WorkflowFinished
RUN_TERMINAL = frozenset({"completed", "failed", "cancelled"})
# With notifications, polls are a safety net only; notified reads are coalesced to <= 10/s.
LISTENING_POLL_FACTOR = 10
NOTIFIED_MIN_GAP = 0.1
_RANK = {"pending": 0, "executing": 1, "snoozed": 1, "retryable": 1}

RUNS = cast(sa.Table, WorkflowRun.__table__)  # type: ignore[attr-defined]
NODES = cast(sa.Table, WorkflowNode.__table__)  # type: ignore[attr-defined]
STATS = cast(sa.Table, WorkflowStepStat.__table__)  # type: ignore[attr-defined]
LOGS = cast(sa.Table, WorkflowDebugLog.__table__)  # type: ignore[attr-defined]


def _rank(state: str) -> int:
    return 2 if state in TERMINAL_STATES else _RANK.get(state, 0)


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

    Updates are ``StepUpdated`` (a step changed state), ``CallFinished`` (an LLM call was
    recorded) and, last, one ``WorkflowFinished``; iteration then ends. For a run that
    already finished, the only update is its ``WorkflowFinished``.
    """

    def __init__(self, run_id: str, db: str | None, poll_interval: float) -> None:
        self.run_id = run_id
        self.db = db
        self.poll_interval = poll_interval
        self.polls = 0
        self._run: Run | None = None
        self._stack = AsyncExitStack()
        self._sub: Subscription | None = None
        self._store: Store | None = None
        self._queue: deque[Update] = deque()
        self._versions: dict[str, datetime | None] = {}
        self._seen_calls: set[tuple[str, str, datetime]] = set()
        self._last_seen: datetime | None = None
        self._last_stat = 0
        self._last_log = 0
        self._seen_logs: set[int] = set()
        self._next_poll = 0.0
        self._last_poll = float("-inf")
        self._finished = False
        self._listening = False
        self._notified = False
        self._wake: anyio.CancelScope | None = None

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("use `async with bn.watch(...) as live` before reading live.run")
        return self._run

    @property
    def listening(self) -> bool:
        """True when commits of other processes wake this watcher (Postgres LISTEN/NOTIFY)."""
        return self._listening

    @property
    def finished(self) -> bool:
        """True once the run reached a terminal status (completed, failed, cancelled)."""
        return self._finished

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
        while not self._queue:
            if self._finished:
                raise StopAsyncIteration
            await self._wait_for_updates()
        return self._queue.popleft()

    # ── snapshot ──────────────────────────────────────────────────────────────

    async def _load_snapshot(self, store: Store) -> None:
        async with store.connect() as conn:
            marks = (
                await conn.execute(
                    sa.select(
                        sa.select(sa.func.max(NODES.c.updated_at))
                        .where(NODES.c.run_id == self.run_id)
                        .scalar_subquery(),
                        sa.select(sa.func.max(STATS.c.id))
                        .where(STATS.c.run_id == self.run_id)
                        .scalar_subquery(),
                        sa.select(sa.func.max(LOGS.c.id))
                        .where(LOGS.c.run_id == self.run_id)
                        .scalar_subquery(),
                    )
                )
            ).one()
        run = await Run.from_store(store, self.run_id)
        self._run = run
        self._last_seen = _aware(marks[0])
        self._last_stat, self._last_log = int(marks[1] or 0), int(marks[2] or 0)
        self._versions = dict.fromkeys(run.steps, self._last_seen)
        self._seen_calls = {(c.step, c.model, c.created_at) for c in run.calls}
        self._seen_logs = {int(log["id"]) for log in run.logs if "id" in log}
        if run.status in RUN_TERMINAL:
            self._finish(run.status, run.failed_steps, run.finished_at)

    # ── waiting: in-process events, polls ─────────────────────────────────────

    def _on_change(self, run_id: str) -> None:
        """A commit touched some run (Postgres NOTIFY): wake the wait if it is ours."""
        if run_id == self.run_id:
            self._notified = True
            if self._wake is not None:
                self._wake.cancel()

    async def _wait_for_updates(self) -> None:
        assert self._sub is not None
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
            await self._apply_event(event)

    async def _apply_event(self, event: Any) -> None:
        if isinstance(event, StepUpdated):
            self._apply_step_event(event)
        elif isinstance(event, CallFinished):
            self._apply_call(_call_from_event(event), event)
        elif isinstance(event, (WorkflowFinished, EventsDropped)):
            await self._poll()  # the database has everything, results included

    async def _poll(self) -> None:
        self.polls += 1
        self._notified = False  # a commit during this read notifies again
        self._last_poll = time.monotonic()
        factor = LISTENING_POLL_FACTOR if self._listening else 1
        self._next_poll = self._last_poll + self.poll_interval * factor
        store = self._store
        assert store is not None
        async with store.connect() as conn:
            run_row = (
                (await conn.execute(sa.select(RUNS).where(RUNS.c.id == self.run_id)))
                .mappings()
                .first()
            )
            nodes = await self._changed_nodes(conn)
            stats = await self._new_rows(conn, STATS, self._last_stat)
            logs = await self._new_rows(conn, LOGS, self._last_log)
        for row in nodes:
            self._apply_row(row)
            at = _aware(row["updated_at"])
            if at is not None and (self._last_seen is None or at > self._last_seen):
                self._last_seen = at  # only once applied: an interrupted read loses nothing
        for row in stats:
            self._last_stat = max(self._last_stat, int(row["id"]))
            self._apply_call(CallRecord.from_row(row), None)
        for row in logs:
            self._last_log = max(self._last_log, int(row["id"]))
            if int(row["id"]) not in self._seen_logs:
                self._seen_logs.add(int(row["id"]))
                self.run.logs.append(row)
        if run_row is not None and run_row["status"] in RUN_TERMINAL:
            failed = loads_list(run_row["failed_steps"])
            self._finish(run_row["status"], failed, _aware(run_row["finished_at"]))

    async def _changed_nodes(self, conn: Any) -> list[dict[str, Any]]:
        query = sa.select(NODES).where(NODES.c.run_id == self.run_id)
        if self._last_seen is not None:
            # >=: a row written in the same microsecond as the last one seen is not lost.
            query = query.where(NODES.c.updated_at >= self._last_seen)
        return [dict(r) for r in (await conn.execute(query.order_by(NODES.c.id))).mappings()]

    async def _new_rows(self, conn: Any, table: sa.Table, after: int) -> list[dict[str, Any]]:
        query = sa.select(table).where(table.c.run_id == self.run_id, table.c.id > after)
        return [dict(r) for r in (await conn.execute(query.order_by(table.c.id))).mappings()]

    # ── applying updates, forward-only ────────────────────────────────────────

    def _apply_row(self, row: dict[str, Any]) -> None:
        run = self.run
        name = row["step"]
        at = _aware(row["updated_at"])
        info = run.steps.get(name)
        if info is None:
            self._add_node(step_info_from_row(row), at)
        elif is_newer(info.state, self._versions.get(name), row["state"], at):
            self._versions[name] = at
            self._set_state(info, row["state"], row["attempt"], row["error"], at)
            info.has_result = bool(row["has_result"])
            info.started_at = _aware(row["started_at"]) or info.started_at
            info.finished_at = _aware(row["finished_at"]) or info.finished_at
        if row["state"] == "completed" and name not in run.results and row["result"] is not None:
            run.results[name] = _jsonutil.loads(row["result"])
            info = run.steps[name]
            info.has_result = bool(row["has_result"])

    def _apply_step_event(self, event: StepUpdated) -> None:
        info = self.run.steps.get(event.step_name)
        if info is None:
            info = StepInfo(
                name=event.step_name,
                job_id=event.job_id,
                kind="child" if event.parent else "step",
                parent=event.parent,
                worker=event.worker,
                max_attempts=event.max_attempts,
            )
            self._add_node(info, None, announce=False)
        if not is_newer(info.state, self._versions.get(info.name), event.state, event.timestamp):
            return
        self._versions[info.name] = event.timestamp
        info.has_result = event.has_result
        if event.state == "executing" and info.started_at is None:
            info.started_at = event.timestamp
        if event.state in TERMINAL_STATES and info.finished_at is None:
            info.finished_at = event.timestamp
        self._set_state(info, event.state, event.attempt, event.error, event.timestamp)

    def _add_node(self, info: StepInfo, at: datetime | None, *, announce: bool = True) -> None:
        run = self.run
        known = info.name in run.steps
        run.steps[info.name] = info
        self._versions[info.name] = at
        parent = run.steps.get(info.parent) if info.parent else None
        # A parent's children are steps of the run: a step new to the run is new to its
        # parent (no scan of the children list: a 100,000-item map made that minutes).
        if parent is not None and not known:
            parent.children.append(info.name)
        if announce:
            self._queue.append(self._step_update(info, at))

    def _set_state(
        self, info: StepInfo, state: str, attempt: int, error: str | None, at: datetime | None
    ) -> None:
        if (info.state, info.attempt, info.error) == (state, attempt, error):
            return  # same facts seen again (event and poll): not an update
        info.state, info.attempt, info.error = state, attempt, error
        self._queue.append(self._step_update(info, at))

    def _step_update(self, info: StepInfo, at: datetime | None) -> StepUpdated:
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

    def _apply_call(self, call: CallRecord, event: CallFinished | None) -> None:
        key = (call.step, call.model, call.created_at)
        if key in self._seen_calls:
            return
        self._seen_calls.add(key)
        run = self.run
        run.calls.append(call)
        if call.step in run.steps:
            run.steps[call.step].add_call(call)
        self._queue.append(event or call.event(run.workflow))

    def _finish(self, status: str, failed: list[str], at: datetime | None) -> None:
        if self._finished:
            return
        run = self.run
        run.status, run.failed_steps = status, list(failed)
        run.finished_at = at or run.finished_at
        self._finished = True
        self._queue.append(
            WorkflowFinished(run.id, run.workflow, status, list(failed), at or _now())
        )


def _call_from_event(event: CallFinished) -> CallRecord:
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


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return cast(datetime, value.replace(tzinfo=timezone.utc))
    return cast(datetime, value)


def _now() -> datetime:
    return datetime.now(timezone.utc)
