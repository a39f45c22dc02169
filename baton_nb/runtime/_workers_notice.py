"""What the notebook's end of ``wf.run(..., workers=True)`` tells of the workers while it
waits: no live worker takes runs of the workflow (the run waits in the queue), the run's
coordinator stopped answering (another takes the run over when its lease ends), and by
whom the run was taken over. One line, ``run.notice``: the widget's header and the text
line show it. Read from the worker tables every second; nothing here changes the queue.
"""

from __future__ import annotations

import logging
import math

import anyio

from .._dburl import safe_url
from .._owners import holder_where, process_gone
from .._run import Run
from ..store import Coordination, SubmissionRow, WorkerBeat, open_worker_store
from ._lease import DEFAULT_LEASE_TTL

__all__ = ["STALE_BEAT", "WorkersNotice", "keep_workers_notice"]

logger = logging.getLogger(__name__)

# A worker beats every third of its lease (10 s at the default lease): two beats missed
# and it is taken as not answering. A process of this host that is gone is seen at once.
STALE_BEAT = 2 * DEFAULT_LEASE_TTL / 3
CHECK_EVERY = 1.0  # seconds between two reads of the worker tables


class WorkersNotice:
    """The line for one submitted run, from what ``SqlWorkers.coordination`` reads; keeps
    the coordinator seen lost, to say by whom the run was taken over."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.by_value = False
        self.start = "`baton-nb worker <module>:<workflow> --db <url>`"
        self.lost: str | None = None  # host:pid of a coordinator that stopped answering
        self.taken: str | None = None  # the line once another worker took the run over:
        # it stays when the run ended; the others go

    def submitted(self, submission: SubmissionRow | None, url: str) -> None:
        """The run's submission: how a worker for it is started (its ``module:attribute``,
        none for a run by value), on which database."""
        self.by_value = submission is not None and submission.code_blob is not None
        ref = submission.code_ref if submission is not None else None
        served = "" if self.by_value else f" {ref or '<module>:<workflow>'}"
        self.start = f"`baton-nb worker{served} --db {safe_url(url)}`"

    def text(self, seen: Coordination) -> str | None:
        serving = [w for w in seen.workers if self._serves(w)]
        owner = seen.owner if seen.lease_left is not None and seen.lease_left > 0 else None
        if owner is None:  # queued, or its coordinator's lease ended
            if not serving:
                lost = f"worker {self.lost} stopped answering, its lease ended; " * bool(self.lost)
                return lost + self.no_worker()
            if self.lost:
                return (
                    f"worker {self.lost} stopped answering; its lease ended: another worker "
                    "takes the run over"
                )
            return self.taken
        host, pid = holder_where(owner)
        who = f"{host}:{pid}"
        if not self._answering(seen.workers, host, pid):
            self.lost = who
            left = math.ceil(seen.lease_left or 0)
            text = (
                f"worker {who} stopped answering; another takes the run over when its lease "
                f"ends (≤ {left} s)"
            )
            if not [w for w in serving if (w.host, w.pid) != (host, pid)]:
                text += "; but " + self.no_worker()
            return text
        if who == self.lost:  # it answers again
            self.lost = None
        elif self.lost is not None:
            self.taken = f"worker {self.lost} stopped answering; the run was taken over by {who}"
            self.lost = None
        return self.taken

    def ended(self, run: Run) -> str | None:
        """What stays said once the run ended: by whom it was taken over. A run that ended
        between two reads after its coordinator was lost: by the worker that ran its last
        step (``ran_on``, stored with each outcome)."""
        if self.taken is not None or self.lost is None:
            return self.taken
        ran = [s for s in run.steps.values() if s.ran_on and s.finished_at is not None]
        last = max(ran, key=lambda s: s.finished_at or 0, default=None)
        by = ""
        if last is not None and last.ran_on is not None:
            host, pid = holder_where(last.ran_on)
            by = f" by {host}:{pid}" if f"{host}:{pid}" != self.lost else ""
        return f"worker {self.lost} stopped answering; the run was taken over{by}"

    def no_worker(self) -> str:
        return (
            f"no live worker takes runs of {self.workflow!r} on this database: start one with "
            f"{self.start} (docs/workers.md); the run waits in the queue"
        )

    def _serves(self, beat: WorkerBeat) -> bool:
        return (
            beat.age <= STALE_BEAT
            and not beat.stopping
            and not process_gone(beat.host, beat.pid)
            and (self.by_value or self.workflow in beat.workflows)
        )

    @staticmethod
    def _answering(beats: list[WorkerBeat], host: str, pid: int | None) -> bool:
        if pid is None:
            return True  # not a worker's lease: nothing to tell
        if process_gone(host, pid):
            return False
        rows = [w for w in beats if (w.host, w.pid) == (host, pid)]
        return not rows or min(w.age for w in rows) <= STALE_BEAT


async def keep_workers_notice(run: Run, db: str | None, notice: WorkersNotice) -> None:
    """Keep ``run.notice`` current (``notice``'s line) until the run ended or this task is
    cancelled. The caller ends it: ``run.set_notice(notice.taken)`` once the run ended."""
    try:
        workers = await open_worker_store(db)
    except Exception:
        logger.debug("no worker notice for run %s", run.id, exc_info=True)
        return
    try:
        try:
            notice.submitted(await workers.get_submission(run.id), workers.url)
        except Exception:
            logger.debug("no worker notice for run %s", run.id, exc_info=True)
            return
        while not run.done:
            try:
                seen = await workers.coordination(run.id)
            except Exception:  # a read that failed: the next one tells
                logger.debug("reading run %s's workers failed", run.id, exc_info=True)
            else:
                if not run.done:
                    run.set_notice(notice.text(seen))
            await anyio.sleep(CHECK_EVERY)
    finally:
        with anyio.CancelScope(shield=True):
            await workers.close()
