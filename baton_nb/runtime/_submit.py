"""``wf.submit()``: a run handed to the workers (DESIGN §10), and the Run that follows it.

The run and its nodes are stored as for an in-process run (status ``pending``, no lease),
with a submission row saying where the workers find its code: an import path and a hash
of the steps' code, or the workflow itself by value (cloudpickle). A worker takes it from
there; ``SubmittedRun.wait()`` follows it through the database (LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import anyio

from .. import _jsonutil
from .._dburl import safe_url
from .._errors import ConfigurationError, RunNotFound, RunRefused
from .._run import Run
from .._states import RunStatus
from .._watch import watch
from ..store import RunRow, Store, SubmissionRow, open_worker_store, utcnow
from ._code import code_hash, code_ref_of, dumps_workflow
from ._start import _encode_params, _node_rows

__all__ = ["SubmittedRun", "submit_run"]


class SubmittedRun(Run):
    """A run executing on workers: ``await run.wait()``, ``run.cancel()``."""

    db: str = ""
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

        Raises ``bn.RunRefused`` if a worker refused the run (other code)."""
        async with watch(self.id, self.db) as live:
            async for _update in live:
                pass
        # Read back whole: the watcher's view is forward-only, and a step a stopped
        # coordinator left behind ran again elsewhere.
        finished = await Run.load(self.id, self.db or None)
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
