"""The in-memory store: the repository interface over Python lists and dicts.

For tests and for runs that need no durability (``db="memory://"``): the same behaviour as
the SQL store (tests/integration/test_store.py runs on both), no file, no server. Its data
lives as long as the process; every ``Store.open("memory://NAME")`` of the process sees the
same data under one NAME. Each operation runs without awaiting in the middle, so on one
event loop each is atomic, as a transaction is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

from .._errors import StorageError
from .._states import RunStatus, State
from ._memory_batches import MemoryProviderBatches
from ._memory_reads import MemoryData, copy_node, copy_run, guard_lease
from ._memory_reports import MemoryReports
from ._memory_spend import MemorySpend
from ._rows import NODE_UPDATE_FIELDS, NodeRow, RunRow, WriteBatch, utcnow

__all__ = ["MEMORY_SCHEME", "MemoryStore", "is_memory_store_url"]

MEMORY_SCHEME = "memory://"
_DATA: dict[str, MemoryData] = {}


def is_memory_store_url(url: str) -> bool:
    return url.startswith(MEMORY_SCHEME)


class _Writer:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def write(self, batch: WriteBatch) -> None:
        await self._store.write(batch)


class MemoryStore(MemoryProviderBatches, MemorySpend, MemoryReports):
    """``RunStore`` in memory; see the module docstring."""

    def __init__(self, url: str = MEMORY_SCHEME) -> None:
        name = url[len(MEMORY_SCHEME) :] if is_memory_store_url(url) else url
        super().__init__(_DATA.setdefault(name, MemoryData()))
        self.url = MEMORY_SCHEME + name

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ── a run's execution ─────────────────────────────────────────────────────

    async def insert_run(self, run: RunRow, nodes: Sequence[NodeRow]) -> dict[str, int]:
        if run.id in self.data.runs:
            raise StorageError(f"run {run.id!r} already exists")
        ids = self._insert_nodes(nodes)
        self.data.runs[run.id] = copy_run(run)
        self.data.changed({run.id})
        return ids

    async def set_map_items(self, node_id: int, items: int, *, owner: str | None = None) -> None:
        node = self.data.nodes.get(node_id)
        if node is not None:
            guard_lease(self.data, node.run_id, owner)
        if node is not None:
            node.map_items, node.updated_at = items, utcnow()
            self.data.changed({node.run_id})

    async def insert_nodes(
        self,
        nodes: Sequence[NodeRow],
        *,
        owner: str | None = None,
        map_items: tuple[int, int] | None = None,
    ) -> dict[str, int]:
        if not nodes:
            return {}
        missing = {n.run_id for n in nodes} - set(self.data.runs)
        if missing:
            raise StorageError(f"no run {sorted(missing)} for these nodes")
        for run_id in {n.run_id for n in nodes}:
            guard_lease(self.data, run_id, owner)
        ids = self._insert_nodes(nodes)
        if map_items is not None:
            await self.set_map_items(*map_items, owner=owner)
        self.data.changed({n.run_id for n in nodes})
        return ids

    def _insert_nodes(self, nodes: Sequence[NodeRow]) -> dict[str, int]:
        taken = self.data.node_steps()
        for node in nodes:
            if (node.run_id, node.step) in taken:
                raise StorageError(f"run {node.run_id!r} already has a node {node.step!r}")
            taken.add((node.run_id, node.step))
        ids = {}
        for node in nodes:
            stored = copy_node(node)
            stored.id = next(self.data.ids)
            self.data.nodes[stored.id] = stored
            ids[node.step] = stored.id
        return ids

    async def get_completions(self, run_id: str, step: str) -> dict[int, tuple[str, str]]:
        return {
            row.call_index: (row.request_hash, row.response)
            for (run, node, _, _), row in self.data.completions.items()
            if run == run_id and node == step
        }

    async def acquire_lease(
        self,
        run_id: str,
        owner: str,
        ttl: float,
        *,
        steal_from: str | None = None,
        count_execution: bool = False,
    ) -> bool:
        run = self.data.runs.get(run_id)
        now = utcnow()
        if run is None:
            return False
        holder = run.lease_owner
        free = (
            holder is None
            or holder == owner
            or (run.lease_expires_at is not None and run.lease_expires_at < now)
            or (steal_from is not None and holder == steal_from)
        )
        if free:
            run.lease_owner, run.lease_expires_at = owner, now + timedelta(seconds=ttl)
            run.executions += count_execution
        return free

    async def end_failed_start(self, run_id: str, owner: str) -> None:
        run = self.data.runs.get(run_id)
        if run is not None and run.lease_owner == owner:
            run.lease_owner = run.lease_expires_at = None
            if run.status is RunStatus.RUNNING:
                run.status, run.stopped_by, run.finished_at = RunStatus.CANCELLED, owner, utcnow()

    async def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        run = self.data.runs.get(run_id)
        if run is None or run.lease_owner != owner:
            return False
        run.lease_expires_at = utcnow() + timedelta(seconds=ttl)
        return True

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[_Writer]:
        yield _Writer(self)

    async def write(self, batch: WriteBatch) -> None:
        """All or nothing: every row is checked before any is applied."""
        data = self.data
        if batch.owner is not None:
            guard_lease(data, batch.run_id, batch.owner)
        for update in batch.nodes:
            if update[-1] not in data.nodes:
                raise StorageError(f"no node with id {update[-1]}")
        run = batch.run
        if run is not None and run.id not in data.runs:
            raise StorageError(f"no run {run.id!r}")
        keys = [(c.run_id, c.step, c.call_index, c.request_hash) for c in batch.completions]
        if len(set(keys)) != len(keys) or any(k in data.completions for k in keys):
            raise StorageError("a stored completion with this run, step, call and hash exists")
        for update in batch.nodes:
            node = data.nodes[update[-1]]
            for name, value in zip(NODE_UPDATE_FIELDS, update, strict=False):
                setattr(node, name, value)
            node.state = State(node.state)  # stored as its value, read back as the enum
        if batch.run is not None:
            _apply_run_update(data.runs[batch.run.id], batch)
        for key, completion in zip(keys, batch.completions, strict=True):
            data.completions[key] = replace(completion)
        for call in batch.stats:
            data.stats.append(replace(call, id=next(data.ids)))
        for log in batch.logs:
            data.logs.append(replace(log, id=next(data.ids)))
        for attempt in batch.attempts:
            data.attempts.append(replace(attempt, id=next(data.ids)))
        data.changed(batch.run_ids())


def _apply_run_update(run: RunRow, batch: WriteBatch) -> None:
    update = batch.run
    assert update is not None
    run.status, run.failed_steps = update.status, list(update.failed_steps)
    run.finished_at = update.finished_at
    run.stopped_by = update.stopped_by
    if update.executions is not None:
        run.executions = update.executions
    if update.resume_key is not None:
        run.resume_key = update.resume_key
    if update.started_at is not None:
        run.started_at = update.started_at
    if update.release_lease:
        run.lease_owner = run.lease_expires_at = None
