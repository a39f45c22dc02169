"""Start or resume a run: validate, create or load rows, take the lease, execute."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio

from .. import _jsonutil
from .._dburl import safe_url
from .._errors import ConfigurationError, RunLocked
from .._gc import fewer_collections
from .._graph import GraphSpec
from .._run import Run, load_run
from .._states import NodeKind, RunStatus, State
from ..store import ExecutionStore, NodeRow, RunRow, RunStore, RunUpdate, Store, utcnow
from ._driver import Driver
from ._expand import store_settled_rest
from ._identity import resolve_run
from ._lease import DEFAULT_LEASE_TTL, Lease, take_lease
from ._node import build_nodes, new_node_row, reset_for_resume
from ._spend import open_spend
from ._unfinished import Edited, Unfinished, find_unfinished, resume_key, same_step_models

__all__ = ["DEFAULT_LEASE_TTL", "execute_run"]


async def execute_run(
    graph: GraphSpec,
    *,
    params: Mapping[str, Any] | None,
    run_id: str | None,
    db: str | None,
    concurrency: int,
    models: Mapping[str, str] | None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    on_start: Callable[[Run], None] | None = None,
    resume_unfinished: bool = False,
    on_resume: Callable[[Unfinished | Edited], None] | None = None,
) -> Run:
    """Run ``graph`` to the end (or resume ``run_id``) and return the Run.

    ``on_start(run)`` is called with the live Run once it is about to execute (not for a
    completed run, which is returned as stored): where the front end shows progress.
    ``resume_unfinished`` (without ``run_id``): resume the newest run of this workflow
    with these params and models that a process that is gone left unfinished
    (``_unfinished``), after telling ``on_resume``; else a new run, telling ``on_resume``
    first of such a run not resumed only because the steps' code changed (``Edited``).
    """
    params_json = _encode_params(params)
    model_map = {**graph.models, **dict(models or {})}
    key = resume_key(graph, model_map)
    # Collections rarer from the store's opening to its closing (``_gc``): a full
    # collection that fell due before the run waits for its end, not for its first wave.
    with fewer_collections():
        store = await Store.open(db, shared=True)
        try:
            with Lease(lease_ttl) as lease:
                existing = await resolve_run(store, graph.name, run_id) if run_id else None
                found = None
                if run_id is None and resume_unfinished:
                    looked = await find_unfinished(
                        store, graph.name, params_json, model_map, set(graph.steps), key
                    )
                    if isinstance(looked, Edited):
                        if on_resume is not None:
                            on_resume(looked)  # a new run, and the run_id= that would resume
                    else:
                        found = looked
                    existing = found.row if found is not None else None
                created = None
                rekeyed = None  # the run's new resume key, if it is to have one
                if existing is not None:
                    _check_resumable(graph, existing, params, params_json)
                    if existing.status is RunStatus.COMPLETED:
                        return await Run.from_store(store, existing.id)
                    if found is None:
                        await take_lease(store, existing.id, lease, existing.lease_owner)
                        # resumed by run_id=, with this code from now on: the key says so
                        # (if the model map is the run's: ``_prepare``), and a wf.run()
                        # after another crash resumes it
                        rekeyed = key if existing.resume_key != key else None
                    else:
                        await _take_unfinished(store, found, lease)
                    run_id = existing.id
                else:
                    run_id = run_id or uuid.uuid4().hex
                    created = await _create(
                        store, graph, run_id, params_json, model_map, lease, key
                    )
                # The lease is this call's from here: given back if anything fails before
                # the run executes (steps changed since, an interrupt), not left to block
                # the run until it expires or this process exits (a stopped run's resume).
                try:
                    if found is not None and on_resume is not None:
                        on_resume(found)
                    driver = await _prepare(
                        store,
                        graph,
                        run_id,
                        lease,
                        concurrency,
                        model_map,
                        created,
                        found is not None,
                        rekeyed,
                    )
                    created = None  # the rows: the nodes have them, free them before the run
                    if on_start is not None:
                        on_start(driver.run)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await store.end_failed_start(run_id, lease.owner)
                    raise
                return await driver.execute()
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()


async def _take_unfinished(store: ExecutionStore, found: Unfinished, lease: Lease) -> None:
    """The lease of the unfinished run this call would resume; ``RunLocked`` naming that
    run when another process (a second re-run at the same moment) resumed it first."""
    row = found.row
    try:
        if found.resumed_by is None:
            await take_lease(store, row.id, lease, row.lease_owner, count_execution=True)
            return
        owner: str | None = found.resumed_by
        cause: RunLocked | None = None
    except RunLocked as exc:
        owner, cause = exc.owner, exc
    args = f"{row.id!r}, db={safe_url(store.url)!r}"
    raise RunLocked(
        f"this call would have resumed run {row.id} of {row.workflow!r} (the same params, "
        f"models and code), which another process ({owner}) resumed and is executing: "
        f"follow it with bn.DagWidget({args}) in a notebook or bn.watch({args}), or start a "
        "new run with wf.run(..., resume=False)",
        run_id=row.id,
        owner=owner,
    ) from cause


def _encode_params(params: Mapping[str, Any] | None) -> str:
    if params is None:
        return "{}"
    if not isinstance(params, Mapping):
        raise ConfigurationError(f"params must be a dict, got {type(params).__name__}")
    try:
        return _jsonutil.dumps(dict(params))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"params must be JSON-serialisable: {exc}") from exc


def _check_resumable(
    graph: GraphSpec, existing: RunRow, params: Mapping[str, Any] | None, params_json: str
) -> None:
    if existing.workflow != graph.name:
        raise ConfigurationError(
            f"run {existing.id} belongs to workflow {existing.workflow!r}, not {graph.name!r}"
        )
    if params is not None and params_json != existing.params:
        raise ConfigurationError(
            f"run {existing.id} was started with params {existing.params}; a resume "
            "reuses them: call wf.run(run_id=...) without params= (or start a new run)"
        )


async def _create(
    store: ExecutionStore,
    graph: GraphSpec,
    run_id: str,
    params_json: str,
    models: Mapping[str, str],
    lease: Lease,
    key: str | None = None,
) -> tuple[Run, list[NodeRow]]:
    """Insert a new run and its nodes; the Run and node rows as they were committed.

    The same values a read back would give (a new run has no stats or logs yet), without
    reading back every node row: only their ids.
    """
    now = utcnow()
    run_row = RunRow(
        id=run_id,
        workflow=graph.name,
        params=params_json,
        status=RunStatus.RUNNING,
        created_at=now,
        started_at=now,
        executions=1,
        lease_owner=lease.owner,
        lease_expires_at=now + timedelta(seconds=lease.ttl),
        resume_key=key,
    )
    rows = _node_rows(graph, run_id, models, now)
    ids = await store.insert_run(run_row, rows)
    for row in rows:
        row.id = ids[row.step]
    return Run.from_rows(store.url, run_row, rows, [], []), rows


def _node_rows(
    graph: GraphSpec, run_id: str, models: Mapping[str, str], now: datetime
) -> list[NodeRow]:
    rows: list[NodeRow] = []
    for name in graph.order:
        spec = graph.steps[name]
        kind = NodeKind.GROUP if spec.is_fanout else NodeKind.STEP
        model = None if spec.is_fanout else models.get(name)
        rows.append(
            new_node_row(run_id, spec, name, kind=kind, deps=list(spec.deps), model=model, now=now)
        )
        rows.extend(
            new_node_row(
                run_id, spec, f"{name}[{m}]", kind=NodeKind.CHILD, parent=name, model=m, now=now
            )
            for m in spec.models
        )
    return rows


async def _prepare(
    store: RunStore,
    graph: GraphSpec,
    run_id: str,
    lease: Lease,
    concurrency: int,
    models: dict[str, str],
    created: tuple[Run, list[NodeRow]] | None,
    counted: bool = False,
    resume_key: str | None = None,
) -> Driver:
    """The driver of a run just created (``created``) or of a stored one to resume
    (``counted``: its lease's taking counted this execution already; ``resume_key``: the
    key to store on it, in the run row's update that marks it running again)."""
    resumed = created is None
    run, rows = created if created is not None else await load_run(store, run_id)
    _check_same_steps(graph, run_id, rows)
    if resume_key is not None and not same_step_models(rows, models):
        resume_key = None  # another model map: the key would claim models its steps lack
    nodes = build_nodes(graph, rows)
    if resumed:  # a map settled early whose last chunks were not stored: stored cancelled
        await store_settled_rest(nodes, store, run, run_id, lease.owner)
    for node in nodes.values():
        if node.kind is NodeKind.GROUP:
            run.set_children(node.name, [c.name for c in node.children])
    changed = []
    if resumed:
        changed = reset_for_resume(nodes, utcnow)
        for node in nodes.values():
            if node.state is not State.COMPLETED:
                run.forget_result(node.name)
        run.set_status(RunStatus.RUNNING, failed_steps=[])
    driver = Driver(
        graph,
        store,
        run,
        nodes,
        lease=lease,
        concurrency=concurrency,
        models=models,
        resumed=resumed,
    )
    driver.calls.spend = await open_spend(graph, store, run, driver.commit, resumed=resumed)
    if resumed:
        for node in changed:
            driver.mark(node)
        previous = await store.get_run(run_id)
        executions = (previous.executions if previous else 0) + (0 if counted else 1)
        # a submitted run (stored pending, never started) starts now: its views' elapsed time
        started = utcnow() if previous is not None and previous.started_at is None else None
        run.set_status(RunStatus.RUNNING, started_at=started)
        update = RunUpdate(
            run_id,
            RunStatus.RUNNING,
            executions=executions,
            resume_key=resume_key,
            started_at=started,
        )
        driver.commit.set_run(update)
        await store.write(driver.commit.take_batch())
    return driver


def _check_same_steps(graph: GraphSpec, run_id: str, rows: list[NodeRow]) -> None:
    stored = {r.step for r in rows if r.parent is None}
    if stored != set(graph.steps):
        missing = sorted(stored - set(graph.steps))
        extra = sorted(set(graph.steps) - stored)
        raise ConfigurationError(
            f"run {run_id} was created with other steps than this workflow has "
            f"(missing here: {missing}, new here: {extra}); resume it with the same workflow "
            "or start a new run"
        )
