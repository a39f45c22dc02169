"""The in-memory store's tables, and reading them back (runs, changes for ``bn.watch``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from .._errors import lease_not_held
from ._batch_rows import BatchRequestRow, ProviderBatchRow
from ._rows import (
    AttemptRow,
    CallRecord,
    ChangeMarks,
    CompletionRow,
    LogRow,
    NewestRuns,
    NodeRow,
    RunChanges,
    RunFilter,
    RunRow,
    RunStopped,
)

__all__ = ["MemoryData", "MemoryReads", "copy_node", "copy_run", "guard_lease"]


def guard_lease(data: MemoryData, run_id: str | None, owner: str | None) -> None:
    """``RunLocked`` unless ``owner`` holds ``run_id``'s lease (``WriteBatch.owner``): called
    before a write applies anything, in the same step (no await between)."""
    run = data.runs.get(run_id) if run_id is not None else None
    if owner is not None and (run is None or run.lease_owner != owner):
        raise lease_not_held(run_id, owner)


@dataclass
class MemoryData:
    """The tables. Rows are never handed out: readers get copies."""

    runs: dict[str, RunRow] = field(default_factory=dict)
    nodes: dict[int, NodeRow] = field(default_factory=dict)  # by id: id order is insert order
    stats: list[CallRecord] = field(default_factory=list)
    completions: dict[tuple[str, str, int, str], CompletionRow] = field(default_factory=dict)
    logs: list[LogRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # provider batches (migration 8): by key; their calls by (run id, custom id)
    provider_batches: dict[str, ProviderBatchRow] = field(default_factory=dict)
    batch_requests: dict[tuple[str, str], BatchRequestRow] = field(default_factory=dict)
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def node_steps(self) -> set[tuple[str, str]]:
        return {(n.run_id, n.step) for n in self.nodes.values()}

    def changed(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            for listener in list(self.listeners):
                listener(run_id)


class MemoryReads:
    """Reads over ``MemoryData``."""

    def __init__(self, data: MemoryData) -> None:
        self.data = data

    def newest_first(self, where: RunFilter) -> Iterator[RunRow]:
        """The runs ``where`` selects, as the SQL listings order them."""
        runs = [r for r in self.data.runs.values() if where.matches(r)]
        runs.sort(key=lambda r: r.id)
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return iter(runs)

    async def get_run(self, run_id: str) -> RunRow | None:
        run = self.data.runs.get(run_id)
        return None if run is None else copy_run(run)

    async def get_nodes(self, run_id: str) -> list[NodeRow]:
        return [copy_node(n) for n in self.data.nodes.values() if n.run_id == run_id]

    async def get_stats(self, run_ids: Sequence[str]) -> list[CallRecord]:
        wanted = set(run_ids)
        return [replace(c) for c in self.data.stats if c.run_id in wanted]

    async def get_attempts(self, run_id: str) -> list[AttemptRow]:
        return [a for a in self.data.attempts if a.run_id == run_id]  # frozen rows

    async def get_ran_on(self, run_id: str) -> dict[str, str]:
        return {}  # workers need Postgres: in-process runs only here

    async def get_debug_logs(self, run_id: str, step: str | None = None) -> list[LogRow]:
        return [
            replace(log)
            for log in self.data.logs
            if log.run_id == run_id and (step is None or log.step == step)
        ]

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        where = RunFilter(workflow=workflow, since=since, until=until, status=status)
        runs = [copy_run(r) for r in self.newest_first(where)]
        return runs if limit is None else runs[:limit]

    async def newest_of_kind(self, workflow: str, params: str, key: str) -> NewestRuns:
        of_params = None
        for run in self.newest_first(RunFilter(workflow=workflow)):
            if run.params != params:
                continue
            found = RunStopped(run.id, run.status, run.stopped_by, run.resume_key)
            of_params = of_params or found
            if run.resume_key == key:
                return NewestRuns(found, of_params)
        return NewestRuns(None, of_params)

    async def recent_run_ids(self, workflow: str, limit: int) -> list[str]:
        return [r.id for r in self.newest_first(RunFilter(workflow=workflow))][:limit]

    async def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        return {i for i in run_ids if i in self.data.runs}

    async def submitted_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        return set()  # workers need Postgres: nothing is submitted to a memory store

    async def run_ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        found = sorted(i for i in self.data.runs if i.startswith(prefix))
        found.sort(key=lambda i: i != prefix)  # an exact match first
        return found[:limit]

    async def change_marks(self, run_id: str) -> ChangeMarks:
        nodes = [n.updated_at for n in self.data.nodes.values() if n.run_id == run_id]
        stats = [c.id or 0 for c in self.data.stats if c.run_id == run_id]
        logs = [log.id or 0 for log in self.data.logs if log.run_id == run_id]
        return ChangeMarks(max(nodes, default=None), max(stats, default=0), max(logs, default=0))

    async def changes_since(self, run_id: str, marks: ChangeMarks) -> RunChanges:
        since = marks.nodes_at
        return RunChanges(
            run=await self.get_run(run_id),
            nodes=[
                copy_node(n)
                for n in self.data.nodes.values()
                if n.run_id == run_id and (since is None or n.updated_at >= since)
            ],
            calls=[
                replace(c)
                for c in self.data.stats
                if c.run_id == run_id and (c.id or 0) > marks.last_stat_id
            ],
            logs=[
                replace(log)
                for log in self.data.logs
                if log.run_id == run_id and (log.id or 0) > marks.last_log_id
            ],
        )

    @asynccontextmanager
    async def notifications(self, on_change: Callable[[str], None]) -> AsyncIterator[bool]:
        """Every write of this process calls ``on_change`` at once: no polling needed."""
        self.data.listeners.append(on_change)
        try:
            yield True
        finally:
            self.data.listeners.remove(on_change)


def copy_run(run: RunRow) -> RunRow:
    return replace(run, failed_steps=list(run.failed_steps))


def copy_node(node: NodeRow) -> NodeRow:
    return replace(node, deps=list(node.deps))
