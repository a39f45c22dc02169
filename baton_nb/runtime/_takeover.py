"""An execution that lost its run's lease: what it tells, since it may write nothing more.

Another process took the run over (this one stalled past its lease: a paused kernel, a
suspended laptop, a worker swapped out): the database refuses this execution's commits
(``RunLocked``), or its heartbeat finds the lease gone, or (a worker's coordinator) its
clock says the lease lapsed. The execution stops, and says so: its live ``Run`` is
``taken_over`` (by the lease's holder now, read once from the run's row), its one
``WorkflowFinished`` says ``taken_over``, no step is announced cancelled, and the caller
gets a ``RunLocked`` naming who goes on with the run and how to follow it. Nothing is
written: the new owner writes the run's truth (docs/workers.md "Failures").
"""

from __future__ import annotations

import logging

import anyio

from .._dburl import safe_url
from .._errors import RunLocked
from .._run import Run
from .._states import FINISHED_STATUSES
from ..store import ExecutionStore, RunRow, utcnow
from ._announce import Announcer
from ._lease import Lease

__all__ = ["taken_over"]

logger = logging.getLogger("baton_nb.runtime")
READ_TIMEOUT = 5.0  # seconds the run's row may take to read (the database may be the cause)


async def taken_over(
    store: ExecutionStore, run: Run, lease: Lease, announce: Announcer
) -> RunLocked:
    """Tell the live Run and the run's subscribers that this execution was taken over;
    the ``RunLocked`` its caller gets. Reads the run's row (who holds the lease now)."""
    row = await _read(store, run.id)
    owner = row.lease_owner if row is not None else None
    if owner == lease.owner:  # lapsed by this process's clock, not taken (yet)
        owner = None
    announce.taken_over(owner, utcnow())
    return RunLocked(_message(run, row, owner, lease.ttl), run_id=run.id, owner=owner)


async def _read(store: ExecutionStore, run_id: str) -> RunRow | None:
    with anyio.move_on_after(READ_TIMEOUT):
        try:
            return await store.get_run(run_id)
        except Exception:  # the database unreachable: the lease's holder is not known
            logger.debug("run %s: could not read who holds its lease", run_id, exc_info=True)
    return None


def _message(run: Run, row: RunRow | None, owner: str | None, ttl: float) -> str:
    head = f"run {run.id} of workflow {run.workflow!r}"
    why = (
        f"its lease lapsed here (this process stalled, or could not reach the database, "
        f"for longer than the lease's {ttl:g} s)"
    )
    stopped = "this execution stopped, nothing more of it is written here"
    args = f"{run.id!r}, db={safe_url(run.db_url)!r}" if run.db_url else repr(run.id)
    if row is not None and row.status in FINISHED_STATUSES:
        return (
            f"{head} was taken over by another process, which ended it ({row.status}): "
            f"{why}; {stopped}. Read it with await bn.Run.load({args})"
        )
    follow = f"Follow it with bn.DagWidget({args}) in a notebook, or bn.watch({args})"
    if owner is not None:
        return (
            f"{head} is being continued by {owner}, which took it over: {why}; {stopped}. {follow}"
        )
    return (
        f"{head} is left for another process to take over: {why} (a worker takes it over, "
        f'or wf.run(run_id="{run.id}") resumes it); {stopped}. {follow}'
    )
