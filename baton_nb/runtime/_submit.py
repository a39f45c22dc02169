"""``wf.submit()``: a run handed to the workers (DESIGN §10), and the Run that follows it.

The run and its nodes are stored as for an in-process run (status ``pending``, no lease),
with a submission row saying where the workers find its code: an import path and a hash
of the steps' code, or the workflow itself by value (cloudpickle). A worker takes it from
there; ``SubmittedRun.wait()`` follows it through the database (LISTEN/NOTIFY).

``wf.run(..., workers=True)`` follows a run of the same kind still pending or running on
the workers instead of submitting another (``find_submitted``): a kernel restarted while
it waited, and the cell run again, must not pay for every call a second time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from .. import _jsonutil
from .._dburl import safe_url
from .._detach import detached
from .._errors import ConfigurationError, RunNotFound, RunRefused
from .._run import Run
from .._runview import take_state
from .._states import RunStatus
from .._watch import watch
from ..store import (
    RunRow,
    RunStore,
    SqlWorkers,
    Store,
    SubmissionRow,
    open_worker_store,
    utcnow,
)
from ._code import code_hash, code_ref_of, dumps_workflow
from ._start import _encode_params, _node_rows
from ._unfinished import resume_key

__all__ = ["Following", "SubmittedRun", "follow_submitted", "submit_run"]

_LOOKED_AT = 20  # the newest pending and running runs of the workflow looked at

_KEEP = frozenset({"notice"})  # what a SubmittedRun keeps of its own when read again


class SubmittedRun(Run):
    """A run executing on workers: ``await run.wait()``, ``run.cancel()``.

    Shown in a notebook, it is the live widget of the run as stored (``bn.watch``: its
    status, the map's children as the workers store them), with a Cancel button. Its own
    state is the run's as last read: at submit (or attach), kept current while
    ``wait()`` waits, and the finished run's once it returned."""

    db: str = ""
    executes_elsewhere = True
    _cancelling: Any = None

    @classmethod
    async def attach(cls, run_id: str, db: str | None = None) -> SubmittedRun:
        """A submitted run again, from its id (another process, after a detach)."""
        store = await Store.open(db)
        try:
            row = await store.get_run(run_id)
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {safe_url(store.url)}")
            nodes = await store.get_nodes(run_id)
            run = cls.from_rows(store.url, row, nodes, await store.get_stats([run_id]), [])
        finally:
            await store.close()
        run.db = db or ""
        return run

    async def wait(self) -> Run:
        """Wait until the run ends (on whichever workers); the finished ``bn.Run``.

        Raises ``bn.RunRefused`` if a worker refused the run (other code). Interrupted
        (a kernel interrupt, Ctrl-C), it ends with the short message that the run goes on
        on the workers and how to follow it again (no traceback in a notebook)."""
        try:
            async with watch(self.id, self.db) as live:
                take_state(self, live.run, _KEEP)  # this Run as stored while it goes
                async for _update in live:
                    take_state(self, live.run, _KEEP)
        except (KeyboardInterrupt, asyncio.CancelledError) as exc:
            detached(self.id, self.db, exc)
            raise
        # Read back whole: the watcher's view is forward-only, and a step a stopped
        # coordinator left behind ran again elsewhere.
        finished = await Run.load(self.id, self.db or None)
        take_state(self, finished, _KEEP)  # ``run`` shows the finished run too
        if finished.status is RunStatus.FAILED:
            workers = await open_worker_store(self.db)
            try:
                submission = await workers.get_submission(self.id)
            finally:
                await workers.close()
            if submission is not None and submission.refused:
                raise RunRefused(submission.refused)
        return finished

    def cancel(self) -> None:
        """Cancel the run on every worker holding its steps (the run stays resumable).
        In a running event loop the request is sent by a task: ``await run.wait()``."""
        self.cancel_requested = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            anyio.run(self.request_cancel)
            return
        self._cancelling = loop.create_task(self.request_cancel())

    async def request_cancel(self) -> None:
        """``run.cancel()``, awaited: the request is stored when it returns."""
        workers = await open_worker_store(self.db)
        try:
            await workers.request_cancel(self.id)
        finally:
            await workers.close()


async def submit_run(
    workflow: Any,
    *,
    params: Mapping[str, Any] | None,
    db: str | None,
    concurrency: int,
    models: Mapping[str, str],
    run_id: str | None = None,
    by_value: bool | None = None,
) -> SubmittedRun:
    """Store a new run for the workers and return at once (Postgres only)."""
    graph = workflow.graph()
    params_json = _encode_params(params)
    workers = await open_worker_store(db)  # a clear error unless Postgres
    try:
        ref = None if by_value else code_ref_of(workflow)
        if by_value is False and ref is None:
            raise ConfigurationError(
                f"workflow {graph.name!r} is not importable from a module (defined in a "
                "notebook or a script?): submit it with by_value=True, or define it in a "
                "module the workers import"
            )
        blob = dumps_workflow(workflow) if ref is None else None
    except BaseException:
        await workers.close()
        raise
    model_map = {**graph.models, **dict(models)}
    run_id = run_id or uuid.uuid4().hex
    now = utcnow()
    row = RunRow(
        id=run_id,
        workflow=graph.name,
        params=params_json,
        status=RunStatus.PENDING,
        created_at=now,
        executions=0,
        resume_key=resume_key(graph, model_map),  # its kind: found by follow_submitted
    )
    try:
        store = await Store.open(db)
        try:
            if await store.get_run(run_id) is not None:
                raise ConfigurationError(f"run {run_id!r} exists already; submit a new run id")
            rows = _node_rows(graph, run_id, model_map, now)
            ids = await store.insert_run(row, rows)
            for node in rows:
                node.id = ids[node.step]
            submission = SubmissionRow(
                run_id=run_id,
                workflow=graph.name,
                code_hash=code_hash(graph),
                created_at=now,
                code_ref=ref,
                code_blob=blob,
                concurrency=concurrency,
                models=_jsonutil.dumps(dict(models)),
            )
            await workers.insert_submission(submission)
            run = SubmittedRun.from_rows(store.url, row, rows, [], [])
        finally:
            await store.close()
    finally:
        await workers.close()
    run.db = str(db) if db is not None else ""
    return run


@dataclass(frozen=True, slots=True)
class Following:
    """A run of the same kind submitted earlier, still pending or running on the workers,
    that ``wf.run(..., workers=True)`` follows instead of submitting another."""

    run: SubmittedRun
    done: int
    total: int

    def message(self, call: str) -> str:
        """The one line the cell shows as it follows the run (``call``: the workflow's
        name in the notebook)."""
        run = self.run
        state = "running on" if run.status == RunStatus.RUNNING else "waiting for"
        return (
            f"following run {run.id} of {run.workflow!r}, submitted earlier with the same "
            f"params, models and code and still {state} the workers ({self.done} of "
            f"{self.total} steps done); for a new run instead: await {call}.run(..., "
            "workers=True, resume=False)"
        )


async def follow_submitted(
    workflow: Any, *, params: Mapping[str, Any] | None, db: str | None, models: Mapping[str, str]
) -> Following | None:
    """The newest run of ``workflow`` submitted to the workers with these params (as
    stored), this model map and this code (its resume key) that has not ended (pending or
    running), with no cancel requested: followed by ``wf.run(..., workers=True)``, after
    a kernel restart or in a second notebook, instead of a second paid run. None if there
    is none (or the database is not Postgres: the submit that follows says so)."""
    graph = workflow.graph()
    params_json = _encode_params(params)
    key = resume_key(graph, {**graph.models, **dict(models)})
    try:
        workers = await open_worker_store(db)
    except ConfigurationError:
        return None  # not Postgres: wf.submit raises its own error
    try:
        store = await Store.open(db)
        try:
            row = await find_submitted(store, workers, graph.name, params_json, key)
            if row is None:
                return None
            nodes = await store.get_nodes(row.id)
            run = SubmittedRun.from_rows(store.url, row, nodes, await store.get_stats([row.id]), [])
        finally:
            await store.close()
    finally:
        await workers.close()
    run.db = str(db) if db is not None else ""
    counts = run.counts()  # as every view counts steps (``_counts``)
    return Following(run, counts.completed, counts.total)


async def find_submitted(
    store: RunStore, workers: SqlWorkers, workflow: str, params_json: str, key: str
) -> RunRow | None:
    """``follow_submitted``'s run row: the newest of the workflow's pending and running
    runs (the 20 newest of each) with these params and resume key, submitted to the
    workers, neither cancelled nor refused there."""
    rows = [
        r
        for status in (RunStatus.RUNNING, RunStatus.PENDING)
        for r in await store.list_runs(workflow=workflow, status=status, limit=_LOOKED_AT)
        if r.params == params_json and r.resume_key == key
    ]
    if not rows:
        return None
    submitted = await store.submitted_run_ids([r.id for r in rows])
    for row in sorted(rows, key=lambda r: r.created_at, reverse=True):
        if row.id not in submitted:
            continue  # an in-process run (wf.run() after a crash resumes it)
        submission = await workers.get_submission(row.id)
        if submission is not None and not submission.cancel_requested and not submission.refused:
            return row
    return None
