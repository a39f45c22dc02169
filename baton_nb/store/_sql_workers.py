"""The worker tables on Postgres (DESIGN §10): submitted runs, the task queue claimed with
``FOR UPDATE SKIP LOCKED`` under leases with fencing tokens, the live workers.

Statements go to asyncpg's own connection (``$1`` parameters, arrays for batches): the
queue's hot paths are one round trip each.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from .._dburl import safe_url
from .._errors import ConfigurationError, StorageError, lease_not_held
from ._engine import resolve_url
from ._sql_base import NOTIFY_CHANNEL, SqlBase, driver_connection
from ._sql_write import lease_cte
from ._worker_rows import (
    ClaimedTask,
    Coordination,
    DoneTask,
    NewTask,
    SubmissionRow,
    WorkerBeat,
    WorkerRow,
)

__all__ = [
    "DONE_CHANNEL",
    "RUNS_CHANNEL",
    "STOP_CHANNEL",
    "TASKS_CHANNEL",
    "SqlWorkers",
    "open_worker_store",
]

TASKS_CHANNEL = "baton_nb_tasks"  # new tasks for workers (payload: workflow)
# A run for a coordinator (submitted, or handed over; payload: workflow): its own channel,
# so the tasks queued all along do not send every worker to look for runs too.
RUNS_CHANNEL = "baton_nb_runs_queued"
DONE_CHANNEL = "baton_nb_tasks_done"  # a task finished (payload: run id)
# Tasks a worker is running were dropped (their run cancelled): stop them (payload: run id).
STOP_CHANNEL = "baton_nb_tasks_stop"
TX_SHIELD = 30.0  # seconds a queue transaction may outlive the cancellation of its task

_TASK_COLUMNS = (
    "t.id, t.run_id, t.workflow, t.step, t.spec, t.attempt, t.item, t.model, t.replay, "
    "t.token, t.by_value"
)

# Which worker ran each attempt (workflow_step_workers), in the statement that stores its
# outcome (``done``: the tasks just finished; ``$3``/``$1``: the worker): no round trip more.
_RAN_ON = (
    "INSERT INTO workflow_step_workers (run_id, step, attempt, worker, finished_at) "
    "SELECT run_id, step, attempt, {worker}, now() FROM done"
)


async def open_worker_store(db: str | os.PathLike[str] | None) -> SqlWorkers:
    """The worker tables at ``db``; a clear error unless it is Postgres."""
    url = resolve_url(db)
    if not url.startswith("postgresql"):
        raise ConfigurationError(
            f"workers need Postgres, and {safe_url(url)!r} is not: submit runs and start "
            "workers with db='postgresql://user@host/dbname' (run in-process with wf.run() "
            "on SQLite)"
        )
    return await SqlWorkers.open(url)


def _notifying(rows: str, column: str, channel: str) -> str:
    """The tail of a ``SELECT ... FROM rows``: NOTIFY ``channel`` once per distinct
    ``column`` of ``rows`` (a CTE), in the same statement. The notifications are joined in
    as one aggregate row, so Postgres evaluates them (an unreferenced CTE is not run) and
    keeps every row of ``rows``."""
    return (
        f" CROSS JOIN (SELECT count(*) FROM (SELECT pg_notify({channel}, k) FROM "
        f"(SELECT DISTINCT {column} AS k FROM {rows}) d) n) notified"
    )


_QUEUE_CHANGE = "this change to the task queue"  # what a refused queue write did not write


def _claimed(row: Any) -> ClaimedTask:
    return ClaimedTask(
        id=row["id"],
        run_id=row["run_id"],
        workflow=row["workflow"],
        step=row["step"],
        spec=row["spec"],
        attempt=row["attempt"],
        item=row["item"],
        model=row["model"],
        replay=row["replay"],
        token=row["token"],
        by_value=row["by_value"],
    )


def _submission(row: Any) -> SubmissionRow:
    return SubmissionRow(
        run_id=row["run_id"],
        workflow=row["workflow"],
        code_hash=row["code_hash"],
        created_at=row["created_at"],
        code_ref=row["code_ref"],
        code_blob=row["code_blob"],
        concurrency=row["concurrency"],
        models=row["models"],
        cancel_requested=row["cancel_requested"],
        refused=row["refused"],
    )


class _SqlQueue(SqlBase):
    """The task queue (Postgres): queued by coordinators, claimed by workers."""

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        """asyncpg's connection in a transaction of its own: SQLAlchemy begins one only
        before its own first statement, so without this each statement would commit alone
        (and a ``SELECT ... FOR UPDATE`` would hold its locks for no later statement)."""
        async with self._driver(transaction=True) as driver:
            yield driver

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        async with self.connect() as conn:
            yield await driver_connection(conn)

    @asynccontextmanager
    async def _one(self) -> AsyncIterator[Any]:
        """asyncpg's connection for ONE statement, its own transaction (autocommit): the
        queue's hot paths are one statement each, NOTIFY included (``_notifying``), so one
        round trip instead of four (BEGIN, statement, NOTIFY, COMMIT)."""
        async with self._driver(transaction=False) as driver:
            yield driver

    @asynccontextmanager
    async def _driver(self, *, transaction: bool) -> AsyncIterator[Any]:
        """asyncpg's connection for a write, shielded from outside cancellation for
        ``TX_SHIELD`` seconds: a task cancelled meanwhile (its lease lost, the worker
        stopping) lets the write commit or fail first. Past them the write is cut and
        ``StorageError`` raised. A connection whose write failed or was cut is discarded,
        never handed back to the pool inside an aborted transaction (asyncpg's rollback,
        itself cancelled, would not have run: the next user got "current transaction is
        aborted")."""
        scope = anyio.CancelScope(shield=True, deadline=anyio.current_time() + TX_SHIELD)
        with scope:
            async with self.begin() as conn:
                driver = await driver_connection(conn)
                try:
                    if transaction:
                        async with driver.transaction():
                            yield driver
                    else:
                        yield driver
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await conn.invalidate()
                    raise
        if scope.cancelled_caught:
            raise StorageError(
                f"database {safe_url(self.url)!r} did not answer within {TX_SHIELD:.0f}s; "
                "check that the server is up and not overloaded"
            )

    # ── the task queue: the coordinator's side ───────────────────────────────

    async def enqueue(
        self, tasks: Sequence[NewTask], *, owner: str | None = None
    ) -> dict[tuple[str, str], int]:
        """Queue attempts for the workers (one round trip): their ids by (run, step).
        ``owner``: only while it holds the lease of the tasks' run (one run then; else
        ``RunLocked``, nothing queued): a coordinator that lost its run queues nothing."""
        if not tasks:
            return {}
        guard = ""
        if owner is not None:
            assert len({t.run_id for t in tasks}) == 1
            guard = f"{lease_cte('$11', '$12')}, "
        async with self._one() as db:
            rows = await db.fetch(
                f"WITH {guard}ins AS (INSERT INTO workflow_tasks (run_id, workflow, step, spec, "
                "attempt, item, model, replay, by_value, state, token, created_at) "
                "SELECT r, w, s, f, a, i, m, p, b, 'queued', 0, now() FROM unnest("
                "$1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], "
                "$7::text[], $8::bool[], $9::bool[]) "
                "WITH ORDINALITY AS v(r, w, s, f, a, i, m, p, b, n) "
                + ("WHERE EXISTS (SELECT 1 FROM lease) " if guard else "")
                + "ORDER BY n RETURNING id, run_id, step, workflow) "
                "SELECT id, run_id, step FROM ins" + _notifying("ins", "workflow", "$10"),
                [t.run_id for t in tasks],
                [t.workflow for t in tasks],
                [t.step for t in tasks],
                [t.spec for t in tasks],
                [t.attempt for t in tasks],
                [t.item for t in tasks],
                [t.model for t in tasks],
                [t.replay for t in tasks],
                [t.by_value for t in tasks],
                TASKS_CHANNEL,
                *(() if owner is None else (tasks[0].run_id, owner)),
            )
        if owner is not None and not rows:
            raise lease_not_held(tasks[0].run_id, owner, _QUEUE_CHANGE)
        return {(r["run_id"], r["step"]): r["id"] for r in rows}

    async def take_done(self, run_id: str, *, owner: str | None = None) -> list[DoneTask]:
        """The finished tasks of a run, removed from the queue (the coordinator's).
        ``owner``: only while it holds the run's lease (else ``RunLocked``, none taken: a
        coordinator that lost the run does not take the outcomes from the new one)."""
        async with self._one() as db:
            if owner is None:
                rows = await db.fetch(
                    "DELETE FROM workflow_tasks WHERE run_id = $1 AND state = 'done' "
                    "RETURNING id, step, attempt, outcome, claimed_by",
                    run_id,
                )
            else:
                rows = await db.fetch(
                    f"WITH {lease_cte('$1', '$2')}, d AS (DELETE FROM workflow_tasks "
                    "WHERE run_id = $1 AND state = 'done' AND EXISTS (SELECT 1 FROM lease) "
                    "RETURNING id, step, attempt, outcome, claimed_by) "
                    "SELECT EXISTS (SELECT 1 FROM lease) AS held, d.* FROM (SELECT 1) one "
                    "LEFT JOIN d ON true",
                    run_id,
                    owner,
                )
                if not rows[0]["held"]:
                    raise lease_not_held(run_id, owner, _QUEUE_CHANGE)
                rows = [r for r in rows if r["id"] is not None]
        return [
            DoneTask(r["id"], r["step"], r["attempt"], r["outcome"], r["claimed_by"] or "")
            for r in rows
        ]

    async def drop_tasks(
        self, ids: Sequence[int], *, run_id: str | None = None, owner: str | None = None
    ) -> None:
        """Tasks no longer wanted (a cancel, a quorum met): removed, but one a worker runs:
        ``dropped`` (lease kept), NOTIFY ``STOP_CHANNEL``: that worker stops it, then
        ``forget``s it (``unstopped``). A claim committing during the DELETE is seen by the
        UPDATE. ``owner``: only while it holds ``run_id``'s lease (else ``RunLocked``)."""
        if not ids:
            return
        async with self._tx() as db:
            if owner is not None and not await db.fetchval(
                f"WITH {lease_cte('$1', '$2', or_finished=True)} "
                "SELECT EXISTS (SELECT 1 FROM lease)",
                run_id,
                owner,
            ):
                raise lease_not_held(run_id, owner, _QUEUE_CHANGE)
            await db.execute(
                "DELETE FROM workflow_tasks WHERE id = ANY($1::bigint[]) AND state <> 'claimed'",
                ids,
            )
            running = await db.fetch(
                "UPDATE workflow_tasks SET state = 'dropped', lease_until = CASE WHEN state = "
                "'claimed' THEN lease_until END WHERE id = ANY($1::bigint[]) RETURNING run_id",
                ids,
            )
            for run in {r["run_id"] for r in running}:
                await db.execute("SELECT pg_notify($1, $2)", STOP_CHANNEL, run)

    async def drop_run_tasks(self, run_id: str, owner: str) -> int:
        """A run's tasks, its coordinator ``owner`` done with it (``_lease_cte``, or finished)."""
        async with self._tx() as db:
            status = await db.execute(
                f"WITH {lease_cte('$1', '$2', or_finished=True)} DELETE FROM workflow_tasks "
                "WHERE run_id = $1 AND EXISTS (SELECT 1 FROM lease)",
                run_id,
                owner,
            )
        return int(status.split()[-1])

    async def run_tasks(self, run_id: str) -> dict[str, tuple[int, str, str | None, str | None]]:
        """A run's tasks by step: (id, state, outcome, worker), for a coordinator taking
        the run over to adopt (the newest per step)."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT id, step, state, outcome, claimed_by FROM workflow_tasks "
                "WHERE run_id = $1 AND state <> 'dropped' ORDER BY id",
                run_id,
            )
        return {r["step"]: (r["id"], r["state"], r["outcome"], r["claimed_by"]) for r in rows}

    async def requeue_run(self, run_id: str, owner: str) -> bool:
        """A coordinator that stops (SIGTERM) hands its run to the next worker: running
        again, lease free, unless the user cancelled it. Only by the lease's ``owner`` (in
        the UPDATE: a coordinator that lost the run meanwhile frees nobody's lease); False
        when nothing was changed."""
        async with self._tx() as db:
            status = await db.execute(
                "UPDATE workflow_runs SET status = 'running', finished_at = NULL, "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 "
                "AND lease_owner = $2 AND NOT EXISTS "
                "(SELECT 1 FROM workflow_submissions s WHERE s.run_id = $1 "
                "AND s.cancel_requested)",
                run_id,
                owner,
            )
            await db.execute("SELECT pg_notify($1, $2)", RUNS_CHANNEL, "")
        return str(status).split()[-1] != "0"

    async def dep_results(self, run_id: str, steps: Sequence[str]) -> dict[str, str | None]:
        """The stored results (JSON) of the completed steps among ``steps``, and the
        partial values of the failed fan-out groups among them (``_partial_values``)."""
        async with self._read() as db:
            return await _dep_results(db, run_id, steps)

    # ── the task queue: the workers' side ────────────────────────────────────

    async def claim(
        self,
        worker: str,
        workflows: Sequence[str],
        by_value: bool,
        limit: int,
        ttl: float,
        skip_runs: Collection[str] = (),
    ) -> list[ClaimedTask]:
        """Claim up to ``limit`` queued tasks (or ones whose lease lapsed): ``FOR UPDATE
        SKIP LOCKED``, so workers claiming together never get the same task; each claim
        raises the task's fencing token."""
        if limit <= 0:
            return []
        served = (
            "AND (workflow = ANY($1::text[]) OR ($2 AND by_value)) "
            "AND NOT (run_id = ANY($3::text[])) "
        )
        # One statement: lapsed leases first (their holder died), then queued tasks, oldest
        # first; two ordered scans of partial indexes (an OR over both read every task ever
        # queued), each locking with SKIP LOCKED, then the claim with a new fencing token.
        async with self._one() as db:
            rows = await db.fetch(
                "WITH lapsed AS (SELECT id FROM workflow_tasks WHERE state = 'claimed' "
                f"AND lease_until < now() {served}"
                "ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED), "
                f"queued AS (SELECT id FROM workflow_tasks WHERE state = 'queued' {served}"
                "ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED), "
                "picked AS (SELECT id FROM (SELECT id, 0 AS o FROM lapsed UNION ALL "
                "SELECT id, 1 FROM queued) p ORDER BY o, id LIMIT $4) "
                "UPDATE workflow_tasks t SET state = 'claimed', claimed_by = $5, "
                "lease_until = now() + make_interval(secs => $6), token = t.token + 1 "
                f"FROM picked WHERE t.id = picked.id RETURNING {_TASK_COLUMNS}",
                list(workflows),
                by_value,
                list(skip_runs),
                limit,
                worker,
                ttl,
            )
        return sorted((_claimed(r) for r in rows), key=lambda t: t.id)

    async def renew(self, worker: str, ids: Sequence[int], ttl: float) -> set[int]:
        """Extend the leases of ``worker``'s tasks; the ids still its own (a task dropped
        or taken over is not: its attempt should stop)."""
        if not ids:
            return set()
        async with self._one() as db:
            rows = await db.fetch(
                "UPDATE workflow_tasks SET lease_until = now() + make_interval(secs => $3) "
                "WHERE id = ANY($2::bigint[]) AND claimed_by = $1 AND state = 'claimed' "
                "RETURNING id",
                worker,
                list(ids),
                ttl,
            )
        return {r["id"] for r in rows}

    async def finish(self, worker: str, task: ClaimedTask, outcome: str) -> bool:
        """Store a task's outcome under its fencing token: False (nothing stored) if the
        lease was lost and the task claimed again or dropped meanwhile."""
        return task.id in await self.finish_many(worker, [(task, outcome)])

    async def finish_many(self, worker: str, done: Sequence[tuple[ClaimedTask, str]]) -> set[int]:
        """``finish`` for many tasks in one statement (one round trip, the coordinators'
        NOTIFY included): the ids whose outcome was stored (the others' tokens were stale)."""
        if not done:
            return set()
        async with self._one() as db:
            rows = await db.fetch(
                "WITH done AS (UPDATE workflow_tasks t SET state = 'done', outcome = v.outcome "
                "FROM unnest($2::bigint[], $3::int[], $4::text[]) AS v(id, token, outcome) "
                "WHERE t.id = v.id AND t.token = v.token AND t.claimed_by = $1 "
                "AND t.state = 'claimed' RETURNING t.id, t.run_id, t.step, t.attempt), "
                "ran AS ("
                + _RAN_ON.format(worker="$1")
                + ") SELECT id FROM done"
                + _notifying("done", "run_id", "$5"),
                worker,
                [task.id for task, _ in done],
                [task.token for task, _ in done],
                [outcome for _, outcome in done],
                DONE_CHANNEL,
            )
        return {r["id"] for r in rows}

    async def release(self, worker: str, ids: Sequence[int]) -> None:
        """Give tasks back to the queue (a worker stopping): the same attempt, run again
        by another worker (its paid calls replayed)."""
        if not ids:
            return
        async with self._tx() as db:
            await db.execute(
                "UPDATE workflow_tasks SET state = 'queued', claimed_by = NULL, "
                "lease_until = NULL, replay = true "
                "WHERE id = ANY($2::bigint[]) AND claimed_by = $1 AND state = 'claimed'",
                worker,
                list(ids),
            )
            await db.execute("SELECT pg_notify($1, $2)", TASKS_CHANNEL, "")


class SqlWorkers(_SqlQueue):
    """Submitted runs, the task queue and the live workers (Postgres)."""

    # ── submitted runs ────────────────────────────────────────────────────────

    async def insert_submission(self, row: SubmissionRow) -> None:
        """Hand a stored run to the workers (and wake them)."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO workflow_submissions (run_id, workflow, code_ref, code_hash, "
                "code_blob, concurrency, models, cancel_requested, refused, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, false, NULL, $8)",
                row.run_id,
                row.workflow,
                row.code_ref,
                row.code_hash,
                row.code_blob,
                row.concurrency,
                row.models,
                row.created_at,
            )
            await db.execute("SELECT pg_notify($1, $2)", RUNS_CHANNEL, row.workflow)

    async def get_submission(self, run_id: str) -> SubmissionRow | None:
        async with self._read() as db:
            row = await db.fetchrow("SELECT * FROM workflow_submissions WHERE run_id = $1", run_id)
        return None if row is None else _submission(row)

    async def claimable_runs(
        self, workflows: Sequence[str], by_value: bool, limit: int = 10
    ) -> list[SubmissionRow]:
        """Submitted runs not finished whose lease is free or lapsed (no coordinator)."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT s.* FROM workflow_submissions s JOIN workflow_runs r ON r.id = s.run_id "
                "WHERE r.status IN ('pending', 'running') AND s.refused IS NULL "
                "AND (r.lease_owner IS NULL OR r.lease_expires_at < now()) "
                "AND (s.workflow = ANY($1::text[]) OR ($2 AND s.code_blob IS NOT NULL)) "
                "ORDER BY s.created_at LIMIT $3",
                list(workflows),
                by_value,
                limit,
            )
        return [_submission(r) for r in rows]

    async def refuse_run(self, run_id: str, reason: str) -> None:
        """A worker cannot run this run's code: the run fails with ``reason`` on it;
        not a run whose lease a live coordinator holds (another worker took it meanwhile:
        its lease is not this worker's to free)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE workflow_runs SET status = 'failed', finished_at = now(), "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 "
                "AND status IN ('pending', 'running') "
                "AND (lease_owner IS NULL OR lease_expires_at < now())",
                run_id,
            )
            await db.execute(
                "UPDATE workflow_submissions SET refused = $2 WHERE run_id = $1 AND NOT EXISTS "
                "(SELECT 1 FROM workflow_runs r WHERE r.id = $1 AND r.lease_owner IS NOT NULL "
                "AND r.lease_expires_at >= now())",
                run_id,
                reason,
            )
            await db.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, run_id)

    async def request_cancel(self, run_id: str) -> None:
        """``run.cancel()`` of a submitted run: its coordinator cancels it on every worker."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE workflow_submissions SET cancel_requested = true WHERE run_id = $1",
                run_id,
            )
            await db.execute("SELECT pg_notify($1, $2)", DONE_CHANNEL, run_id)

    async def cancel_requested(self, run_id: str) -> bool:
        async with self._read() as db:
            value = await db.fetchval(
                "SELECT cancel_requested FROM workflow_submissions WHERE run_id = $1", run_id
            )
        return bool(value)

    # ── dropped tasks: the workers stopping them ─────────────────────────────

    async def unstopped(self, ids: Sequence[int]) -> set[int]:
        """The dropped tasks among ``ids`` a worker may still be running: not yet removed
        by it (``forget``) and their lease not lapsed (a dead worker runs nothing)."""
        if not ids:
            return set()
        async with self._one() as db:
            rows = await db.fetch(
                "SELECT id FROM workflow_tasks WHERE id = ANY($1::bigint[]) "
                "AND state = 'dropped' AND lease_until >= now()",
                list(ids),
            )
        return {r["id"] for r in rows}

    async def forget(self, worker: str, run_id: str, ids: Sequence[int]) -> None:
        """``worker`` stopped these dropped tasks, what their calls got stored: removed
        (NOTIFY ``DONE_CHANNEL``: the run's coordinator waits for it, ``unstopped``)."""
        if not ids:
            return
        async with self._one() as db:
            await db.execute(
                "WITH f AS (DELETE FROM workflow_tasks WHERE id = ANY($2::bigint[]) "
                "AND claimed_by = $1 AND state = 'dropped') "
                "SELECT pg_notify($3, $4)",
                worker,
                list(ids),
                DONE_CHANNEL,
                run_id,
            )

    # ── live workers ──────────────────────────────────────────────────────────

    async def beat(self, row: WorkerRow) -> None:
        """Insert or refresh a worker's row (its heartbeat)."""
        import json

        async with self._tx() as db:
            await db.execute(
                "INSERT INTO workflow_workers (id, host, pid, workflows, started_at, "
                "heartbeat_at, in_flight, done, stopping) VALUES ($1, $2, $3, $4, $5, now(), "
                "$6, $7, $8) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), "
                "in_flight = $6, done = $7, stopping = $8",
                row.id,
                row.host,
                row.pid,
                json.dumps(row.workflows),
                row.started_at,
                row.in_flight,
                row.done,
                row.stopping,
            )

    async def remove_worker(self, worker: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM workflow_workers WHERE id = $1", worker)

    async def workers(self, max_age: float = 60.0) -> list[WorkerRow]:
        """Workers with a heartbeat in the last ``max_age`` seconds, oldest first."""
        import json

        async with self._read() as db:
            rows = await db.fetch(
                "SELECT * FROM workflow_workers WHERE heartbeat_at > now() - "
                "make_interval(secs => $1) ORDER BY started_at, id",
                max_age,
            )
        return [
            WorkerRow(
                id=r["id"],
                host=r["host"],
                pid=r["pid"],
                workflows=json.loads(r["workflows"]),
                started_at=r["started_at"],
                heartbeat_at=r["heartbeat_at"],
                in_flight=r["in_flight"],
                done=r["done"],
                stopping=r["stopping"],
            )
            for r in rows
        ]

    async def coordination(self, run_id: str) -> Coordination:
        """Who holds the run's lease and for how long still, and every worker's last
        heartbeat, ages by the database's clock: what ``wf.run(workers=True)`` tells of
        the workers while it waits (no live worker, a coordinator that stopped answering)."""
        import json

        async with self._read() as db:
            lease = await db.fetchrow(
                "SELECT lease_owner, "
                "extract(epoch FROM lease_expires_at - now())::float8 AS lease_left "
                "FROM workflow_runs WHERE id = $1",
                run_id,
            )
            rows = await db.fetch(
                "SELECT id, host, pid, workflows, stopping, "
                "extract(epoch FROM now() - heartbeat_at)::float8 AS age "
                "FROM workflow_workers ORDER BY started_at, id"
            )
        beats = [
            WorkerBeat(
                id=r["id"],
                host=r["host"],
                pid=r["pid"],
                workflows=json.loads(r["workflows"]),
                age=r["age"],
                stopping=r["stopping"],
            )
            for r in rows
        ]
        if lease is None:
            return Coordination(None, None, beats)
        return Coordination(lease["lease_owner"], lease["lease_left"], beats)

    @asynccontextmanager
    async def listen(
        self, channels: Sequence[str], on_notify: Callable[[str, str], None]
    ) -> AsyncIterator[None]:
        """``on_notify(channel, payload)`` for each NOTIFY on ``channels`` during the block."""

        def deliver(_conn: object, _pid: int, channel: str, payload: str) -> None:
            on_notify(channel, payload)

        async with self.connect() as conn:
            driver = await driver_connection(conn)
            for channel in channels:
                await driver.add_listener(channel, deliver)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    for channel in channels:
                        await driver.remove_listener(channel, deliver)


async def _dep_results(db: Any, run_id: str, steps: Sequence[str]) -> dict[str, str | None]:
    rows = await db.fetch(
        "SELECT step, result FROM workflow_nodes WHERE run_id = $1 "
        "AND step = ANY($2::text[]) AND state = 'completed'",
        run_id,
        list(steps),
    )
    found: dict[str, str | None] = {r["step"]: r["result"] for r in rows}
    missing = [s for s in steps if s not in found]
    if missing:  # a failed fan-out group, run after by an ignore flag
        found.update(_partial_values(await db.fetch(_FAILED_CHILDREN, run_id, missing)))
    return found


# The children of failed fan-out groups among $2, in order (for ``_partial_values``).
_FAILED_CHILDREN = (
    "SELECT c.parent, c.model, c.item_index, c.state, c.result "
    "FROM workflow_nodes c JOIN workflow_nodes g "
    "ON g.run_id = c.run_id AND g.step = c.parent "
    "WHERE c.run_id = $1 AND c.parent = ANY($2::text[]) AND g.kind = 'group' "
    "AND g.state IN ('discarded', 'cancelled') "
    "ORDER BY c.parent, c.item_index, c.id"
)


def _partial_values(children: Sequence[Any]) -> dict[str, str]:
    """The value (JSON) a failed fan-out group gives a dependent that ignores its failure,
    from its children's rows in order: as ``runtime._groups.partial_value`` makes it (a
    map's list with null for each child not completed, a multi-model group's dict of the
    models that completed; none when no child completed)."""
    by_group: dict[str, list[Any]] = {}
    for row in children:
        by_group.setdefault(row["parent"], []).append(row)
    values: dict[str, str] = {}
    for group, rows in by_group.items():
        done = [r for r in rows if r["state"] == "completed"]
        if not done:
            continue
        if any(r["item_index"] is not None for r in rows):  # a map: item order
            parts = [(r["result"] or "null") if r["state"] == "completed" else "null" for r in rows]
            values[group] = "[" + ",".join(parts) + "]"
        else:
            pairs = [f"{json.dumps(r['model'])}:{r['result'] or 'null'}" for r in done]
            values[group] = "{" + ",".join(pairs) + "}"
    return values
