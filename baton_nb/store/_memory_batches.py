"""The in-memory store's provider batches: ``ProviderBatchStore`` over ``MemoryData``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .._errors import StorageError
from ._batch_rows import BatchRequestRow, ProviderBatchRow
from ._memory_reads import MemoryData, guard_lease
from ._rows import CallRecord, CompletionRow

__all__ = ["MemoryProviderBatches"]


class MemoryProviderBatches:
    """Provider batches in memory; each operation is atomic (no await in the middle)."""

    data: MemoryData

    async def insert_provider_batch(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        *,
        owner: str | None = None,
    ) -> None:
        data = self.data
        guard_lease(data, batch.run_id, owner)
        if batch.run_id not in data.runs:
            raise StorageError(f"no run {batch.run_id!r} for provider batch {batch.key!r}")
        if batch.key in data.provider_batches:
            raise StorageError(f"a provider batch {batch.key!r} exists")
        ids = [r.custom_id for r in requests]
        if len(set(ids)) != len(ids):
            raise StorageError(f"provider batch {batch.key!r} names a custom id twice")
        data.provider_batches[batch.key] = replace(batch)
        for request in requests:
            key = (request.run_id, request.custom_id)
            known = data.batch_requests.get(key)
            if known is None:
                data.batch_requests[key] = replace(request)
            else:  # a missing answer asked again: the call moves to this batch
                known.batch_key, known.state = request.batch_key, request.state
                known.error, known.tries = request.error, request.tries
        data.changed({batch.run_id})

    async def update_provider_batch(
        self, batch: ProviderBatchRow, *, owner: str | None = None
    ) -> None:
        guard_lease(self.data, batch.run_id, owner)
        stored = self.data.provider_batches.get(batch.key)
        if stored is None:
            raise StorageError(f"no provider batch {batch.key!r}")
        _update(stored, batch)
        self.data.changed({batch.run_id})

    async def get_provider_batches(self, run_id: str) -> list[ProviderBatchRow]:
        return [replace(b) for b in self.data.provider_batches.values() if b.run_id == run_id]

    async def get_batch_requests(self, run_id: str) -> list[BatchRequestRow]:
        return [replace(r) for (run, _), r in self.data.batch_requests.items() if run == run_id]

    async def store_batch_results(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        completions: Sequence[CompletionRow],
        calls: Sequence[CallRecord],
        *,
        owner: str | None = None,
    ) -> None:
        data = self.data
        guard_lease(data, batch.run_id, owner)
        stored = data.provider_batches.get(batch.key)
        if stored is None:
            raise StorageError(f"no provider batch {batch.key!r}")
        mapped = data.batch_requests
        missing = [r.custom_id for r in requests if (r.run_id, r.custom_id) not in mapped]
        if missing:
            raise StorageError(f"no batch request {missing[0]!r} in run {batch.run_id!r}")
        _update(stored, batch)
        for request in requests:
            known = data.batch_requests[(request.run_id, request.custom_id)]
            known.batch_key, known.state = request.batch_key, request.state
            known.error, known.tries = request.error, request.tries
        for completion in completions:
            c = completion
            if (c.run_id, c.step, c.call_index, c.request_hash) not in data.completions:
                data.completions[c.run_id, c.step, c.call_index, c.request_hash] = replace(c)
        for call in calls:
            data.stats.append(replace(call, id=next(data.ids)))
        data.changed({batch.run_id})


def _update(stored: ProviderBatchRow, batch: ProviderBatchRow) -> None:
    for name in (
        "state",
        "remote_id",
        "succeeded",
        "failed",
        "cost",
        "standard_cost",
        "error",
        "submitted_at",
        "ended_at",
        "updated_at",
    ):
        setattr(stored, name, getattr(batch, name))
