"""A worker coordinating one submitted run (DESIGN §10, docs/workers.md).

The worker that takes a submitted run's lease drives it with the usual ``Driver`` (every
scheduling decision in one place, as in process); an attempt runs in this process when the
worker has a free slot (``LocalAttempts``), else it goes to the task queue
(``RemoteAttempts``) for any worker to run. A coordinator that dies (kill -9) stops
renewing the run's lease, and its own attempts die with it: once the lease lapses another
worker takes the run over, resumes it (what completed stays completed: those attempts'
steps run again, their paid calls replayed) and adopts the tasks already queued or done,
so no step that finished is run again. One that stops (SIGTERM) lets its attempts run for
the grace period, then hands the run over.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import anyio

from .._errors import RunLocked, unwrap_group
from .._graph import GraphSpec
from .._runview import status_text
from .._states import FINISHED_STATUSES
from ..store import RunStore, SqlWorkers, SubmissionRow
from ._driver import Driver
from ._lease import Lease, take_lease
from ._remote import POLL, LocalAttempts, LocalSlots, RemoteAttempts
from ._spend_shared import SharedBudgets
from ._start import _prepare

__all__ = ["coordinate"]

logger = logging.getLogger("baton_nb.workers")


async def coordinate(
    store: RunStore,
    workers: SqlWorkers,
    submission: SubmissionRow,
    graph: GraphSpec,
    *,
    slots: LocalSlots | None,
    worker_id: str,
    registry: dict[str, RemoteAttempts],
    lease_ttl: float,
    stopping: anyio.Event,
    grace: float,
) -> None:
    """Drive ``submission``'s run to its end (or hand it over when ``stopping``)."""
    run_id = submission.run_id
    row = await store.get_run(run_id)
    if row is None or row.status in FINISHED_STATUSES:
        return
    with Lease(lease_ttl) as lease:
        try:
            await take_lease(store, run_id, lease, row.lease_owner)
        except RunLocked:
            return  # another worker was quicker
        # Read again under the lease: the row read before may be stale (this worker
        # stalled, another one executed the run meanwhile and died).
        row = await store.get_run(run_id)
        if row is None or row.status in FINISHED_STATUSES:
            return
        adopt = await workers.run_tasks(run_id)
        models = {**graph.models, **json.loads(submission.models)}
        driver = await _prepare(store, graph, run_id, lease, submission.concurrency, models, None)
        # A run no coordinator executed before has no call stored: its first attempts read
        # none (``Calls.resumed``); retries and a run taken over read them (``LocalAttempts``).
        replay = row.executions > 0
        driver.calls.resumed = replay
        driver.commit.fence = partial(_fence, lease)
        if driver.calls.spend is not None:  # its budgets shared with the workers' calls
            driver.calls.spend.shared = SharedBudgets(store, run_id)
        local = None
        if slots is not None:
            local = LocalAttempts(slots, driver, worker_id, replay=replay)
        remote = RemoteAttempts(
            workers,
            run_id,
            submission.workflow,
            by_value=submission.code_blob is not None,
            replay=replay,
            adopt=adopt,
            local=local,
            owner=lease.owner,
            # Waiting for the workers to stop its tasks (cancelled) the run's lease is not
            # renewed (the driver's heartbeat is cancelled with its steps): half its time
            # to live, within what is left of it (a dead worker's tasks run nothing).
            stop_wait=lease_ttl / 2,
        )
        driver.attempts = remote
        registry[run_id] = remote
        logger.info("coordinating run %s (%s)", run_id, submission.workflow)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_serve, remote, lease)
                tg.start_soon(_follow, workers, driver, remote, stopping, grace)
                await driver.execute()
                tg.cancel_scope.cancel()
            run = driver.run
            if run.status in FINISHED_STATUSES and not remote.handing_over:  # it ended here
                logger.info(
                    "run %s (%s) %s: %s", run_id, submission.workflow, status_text(run),
                    run.counts().text(),
                )  # fmt: skip
        except BaseException as exc:  # the task group's: RunLocked inside a group
            real = unwrap_group(exc)
            if not isinstance(real, RunLocked):
                raise
            # Taken over (found by the heartbeat, a commit or a queue change): this worker
            # stops coordinating the run, nothing more of it written here; the driver says
            # who took it (``_takeover``), even when a queue change found it first.
            logger.warning("stopped coordinating run %s: %s", run_id, driver.taken or real)
        finally:
            registry.pop(run_id, None)
            taken = lease.lost  # taken over (or lapsed) meanwhile: left to the next worker
            if remote.handing_over:
                lease.lost = True  # as if this worker had died: nothing more written here
            with anyio.CancelScope(shield=True):
                if remote.handing_over and not taken:
                    await workers.requeue_run(run_id, lease.owner)
                    logger.info("run %s handed over to the other workers", run_id)
                elif not remote.handing_over:
                    # In SQL: only while this worker holds the run, or once it is finished
                    # (a queue change racing the run's end was refused: ``_serve``).
                    await workers.drop_run_tasks(run_id, lease.owner)


async def _serve(remote: RemoteAttempts, lease: Lease) -> None:
    """``remote.serve``; a change of the task queue that found the run taken over (each is
    checked in its statement) stops the execution, as a refused commit does."""
    try:
        await remote.serve()
    except RunLocked:
        lease.lost = True
        raise
    finally:
        remote.stop_waiting()


def _fence(lease: Lease) -> bool:
    """Whether the run's lease is surely still held by this process's clock: a cheap
    early exit before each commit (``GroupCommit.fence``; the commit itself is checked in
    the database, ``WriteBatch.owner``); once not, nothing of the run is written here
    again (``lost``), as when the heartbeat finds the lease taken."""
    if lease.held():
        return True
    lease.lost = True
    return False


async def _cancel_requested(workers: SqlWorkers, run_id: str) -> None:
    """Return once the run's user asked to cancel it."""
    while True:
        if await workers.cancel_requested(run_id):
            return
        await anyio.sleep(POLL * 2)


async def _follow(
    workers: SqlWorkers,
    driver: Driver,
    remote: RemoteAttempts,
    stopping: anyio.Event,
    grace: float,
) -> None:
    """Cancel the run when its user asks (``run.cancel()`` anywhere); hand it over when
    this worker stops and the run has not ended within the grace period."""
    run_id = driver.run.id
    while True:
        with anyio.move_on_after(POLL * 2):
            await stopping.wait()
        if stopping.is_set():
            with anyio.move_on_after(grace):
                await _cancel_requested(workers, run_id)
                remote.cancelling = True
                driver.run.cancel()
                return
            # As if this worker had died, at once, but for what its own attempts stored
            # (paid answers): committed, the run's end not (``Driver.handing_over``); the
            # next coordinator resumes it.
            remote.handing_over = driver.handing_over = True
            driver.run.cancel()
            return
        if await workers.cancel_requested(run_id):
            # Ended once the workers stopped its tasks (``RemoteAttempts.cancelling``).
            remote.cancelling = True
            driver.run.cancel()
            return
