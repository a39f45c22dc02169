"""Start or resume a run: validate, create or load rows, take the lease, execute."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio

from .. import _jsonutil
from .._errors import ConfigurationError, RunLocked
from .._graph import GraphSpec
from .._run import TERMINAL_STATES, Run, load_run, run_from_rows
from ..store import Store, utcnow
from ._execution import Execution
from ._node import Node, new_node_row

__all__ = ["DEFAULT_LEASE_TTL", "execute_run"]

DEFAULT_LEASE_TTL = 30.0
# Lease owners of executions alive in this process: a lease held by this process under
# another owner name is left over from an interrupted start and can be taken over.
_LIVE_OWNERS: set[str] = set()


async def execute_run(
    graph: GraphSpec,
    *,
    params: Mapping[str, Any] | None,
    run_id: str | None,
    db: str | None,
    concurrency: int,
    models: Mapping[str, str] | None,
    display: bool | str | None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
) -> Run:
    """Run ``graph`` to the end (or resume ``run_id``) and return the Run."""
    params_json = _encode_params(params)
    model_map = {**graph.models, **dict(models or {})}
    store = await Store.open(db)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _LIVE_OWNERS.add(owner)
    try:
        existing = await store.get_run(run_id) if run_id is not None else None
        if existing is not None:
            assert run_id is not None
            if existing["workflow"] != graph.name:
                raise ConfigurationError(
                    f"run {run_id} belongs to workflow {existing['workflow']!r}, not {graph.name!r}"
                )
            if params is not None and params_json != existing["params"]:
                raise ConfigurationError(
                    f"run {run_id} was started with params {existing['params']}; a resume "
                    "reuses them: call wf.run(run_id=...) without params= (or start a new run)"
                )
            if existing["status"] == "completed":
                return await Run.from_store(store, run_id)
            await _take_lease(store, run_id, owner, lease_ttl, existing.get("lease_owner"))
            created = None
        else:
            run_id = run_id or uuid.uuid4().hex
            created = await _create(store, graph, run_id, params_json, model_map, owner, lease_ttl)
        execution = await _prepare(
            store, graph, run_id, owner, concurrency, model_map, lease_ttl, created
        )
        created = None  # the rows: the nodes have what they need, free them before the run
        with _attach_display(execution.run, display):
            return await execution.execute()
    finally:
        _LIVE_OWNERS.discard(owner)
        with anyio.CancelScope(shield=True):
            await store.close()


def _encode_params(params: Mapping[str, Any] | None) -> str:
    if params is None:
        return "{}"
    if not isinstance(params, Mapping):
        raise ConfigurationError(f"params must be a dict, got {type(params).__name__}")
    try:
        return _jsonutil.dumps(dict(params))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"params must be JSON-serialisable: {exc}") from exc


async def _create(
    store: Store,
    graph: GraphSpec,
    run_id: str,
    params_json: str,
    models: Mapping[str, str],
    owner: str,
    lease_ttl: float,
) -> tuple[Run, list[dict[str, Any]]]:
    """Insert a new run and its nodes; the Run and node rows as they were committed.

    The same values a read back would give (a new run has no stats or logs yet), without
    reading back every node row: only their ids.
    """
    from datetime import timedelta

    now = utcnow()
    run_row = {
        "id": run_id,
        "workflow": graph.name,
        "params": params_json,
        "status": "running",
        "created_at": now,
        "started_at": now,
        "finished_at": None,
        "failed_steps": "[]",
        "executions": 1,
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_ttl),
    }
    rows = _node_rows(graph, run_id, models, now)
    ids = await store.insert_run(run_row, rows)
    for row in rows:
        row["id"] = ids[row["step"]]
    return run_from_rows(store.url, run_row, rows, [], []), rows


def _node_rows(
    graph: GraphSpec, run_id: str, models: Mapping[str, str], now: datetime
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in graph.order:
        spec = graph.steps[name]
        kind = "group" if spec.is_fanout else "step"
        model = None if spec.is_fanout else models.get(name)
        rows.append(
            new_node_row(run_id, spec, name, kind=kind, deps=list(spec.deps), model=model, now=now)
        )
        rows.extend(
            new_node_row(run_id, spec, f"{name}[{m}]", kind="child", parent=name, model=m, now=now)
            for m in spec.models
        )
    return rows


async def _take_lease(
    store: Store, run_id: str, owner: str, ttl: float, holder: str | None
) -> None:
    if await store.acquire_lease(run_id, owner, ttl):
        return
    if (
        holder
        and _holder_is_dead(holder)
        and await store.acquire_lease(run_id, owner, ttl, steal_from=holder)
    ):
        return
    row = await store.get_run(run_id)
    holder = (row or {}).get("lease_owner") or holder
    until = (row or {}).get("lease_expires_at")
    raise RunLocked(
        f"run {run_id} is being executed by {holder} (lease until {until}); wait for it to "
        "finish, or for its lease to expire if that process died"
    )


def _holder_is_dead(holder: str) -> bool:
    """True if the lease holder was a process on this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return holder not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


async def _prepare(
    store: Store,
    graph: GraphSpec,
    run_id: str,
    owner: str,
    concurrency: int,
    models: dict[str, str],
    lease_ttl: float,
    created: tuple[Run, list[dict[str, Any]]] | None,
) -> Execution:
    """The execution of a run just created (``created``) or of a stored one to resume."""
    resumed = created is None
    run, rows = created if created is not None else await load_run(store, run_id)
    _check_same_steps(graph, run_id, rows)
    nodes: dict[str, Node] = {}
    for row in rows:
        spec = graph.steps[row["parent"] or row["step"]]
        node = Node(row, spec, run.steps[row["step"]])
        nodes[node.name] = node
    _link(graph, nodes)
    if resumed:
        _reset_unfinished(nodes, run)
        run.status = "running"
        run.failed_steps = []
    execution = Execution(
        graph,
        store,
        run,
        nodes,
        owner=owner,
        concurrency=concurrency,
        models=models,
        limits=dict(graph.limits),
        lease_ttl=lease_ttl,
        resumed=resumed,
    )
    if resumed:
        for node in nodes.values():
            execution._mark(node)
        execution._pending.run = {
            "id": run_id,
            "status": "running",
            "finished_at": None,
            "failed_steps": "[]",
            "executions": await _next_execution(store, run_id),
        }
        await store.write(execution._take_batch())
    return execution


async def _next_execution(store: Store, run_id: str) -> int:
    row = await store.get_run(run_id)
    return int((row or {}).get("executions") or 0) + 1


def _check_same_steps(graph: GraphSpec, run_id: str, rows: list[dict[str, Any]]) -> None:
    stored = {r["step"] for r in rows if r["parent"] is None}
    if stored != set(graph.steps):
        missing = sorted(stored - set(graph.steps))
        extra = sorted(set(graph.steps) - stored)
        raise ConfigurationError(
            f"run {run_id} was created with other steps than this workflow has "
            f"(missing here: {missing}, new here: {extra}); resume it with the same workflow "
            "or start a new run"
        )


def _link(graph: GraphSpec, nodes: dict[str, Node]) -> None:
    children: dict[str, list[Node]] = {}
    dependents: dict[str, list[Node]] = {}
    for node in nodes.values():
        if node.kind == "child":
            assert node.info.parent is not None
            parent = nodes[node.info.parent]
            node.parent = parent
            children.setdefault(parent.name, []).append(node)
        else:
            for dep in node.deps:
                dependents.setdefault(dep, []).append(node)
    for name, found in dependents.items():
        nodes[name].dependents = found
    for name, found in children.items():
        node = nodes[name]
        order = {m: i for i, m in enumerate(node.spec.models)}
        found.sort(key=lambda c: (order.get(c.model or "", 0), c.item_index or 0, c.id))
        node.children = found
        node.info.children = [c.name for c in found]


def _reset_unfinished(nodes: dict[str, Node], run: Run) -> None:
    """Resume: everything not completed runs again with fresh attempts; counters recomputed."""
    for node in nodes.values():
        if node.state == "completed":
            continue
        if node.parent is not None and node.parent.state == "completed":
            # A child left over from a group whose quorum was met; one still running when
            # the process died is settled as a quorum settles it, or the run never would.
            if node.state not in TERMINAL_STATES:
                node.state = "cancelled"
                node.error = f"not needed: quorum of {node.parent.name!r} met"
                node.finished_at = node.finished_at or utcnow()
            continue
        node.state, node.attempt, node.error = "pending", 0, None
        node.result_json, node.started_at, node.finished_at = None, None, None
        run.results.pop(node.name, None)
    for node in nodes.values():
        if node.kind == "child":
            node.remaining = 0 if node.state in TERMINAL_STATES else 1
        else:
            node.remaining = sum(1 for d in node.deps if nodes[d].state != "completed")


class _attach_display:
    """Show progress for the run (widget in a kernel, text line in a terminal)."""

    def __init__(self, run: Run, display: bool | str | None) -> None:
        self.run = run
        self.display = display
        self.handle: Any = None

    def __enter__(self) -> None:
        from ..widget import attach

        self.handle = attach(self.run, self.display)

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
