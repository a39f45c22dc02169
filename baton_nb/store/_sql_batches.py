"""The SQL store's provider batches (DESIGN §12): the rows of ``_batch_rows`` in the
tables of migration 8, and the one transaction that stores a batch's answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa

from .._dburl import safe_url
from .._errors import StorageError
from .._money import normalize_money
from .._states import BatchRequestState, BatchState
from ._batch_rows import BatchRequestRow, ProviderBatchRow
from ._rows import CallRecord, CompletionRow
from ._sql_base import SqlBase
from ._sql_rows import COMPLETIONS, STATS, call_to_columns, completion_to_columns
from ._sql_write import guard_lease
from ._tables import WorkflowBatchRequest, WorkflowProviderBatch

__all__ = ["BATCH_REQUESTS", "PROVIDER_BATCHES", "SqlProviderBatches"]

PROVIDER_BATCHES = cast(sa.Table, WorkflowProviderBatch.__table__)  # type: ignore[attr-defined]
BATCH_REQUESTS = cast(sa.Table, WorkflowBatchRequest.__table__)  # type: ignore[attr-defined]

# What changes on a batch row after it is stored (its key, run, step and calls never do).
_BATCH_MUTABLE = (
    "state",
    "remote_id",
    "succeeded",
    "failed",
    "cost_usd",
    "standard_cost_usd",
    "error",
    "submitted_at",
    "ended_at",
    "updated_at",
)
_UPDATE_BATCH = (
    sa.update(PROVIDER_BATCHES)
    .where(PROVIDER_BATCHES.c.key == sa.bindparam("b_key"))
    .values({name: sa.bindparam(f"b_{name}") for name in _BATCH_MUTABLE})
)
_UPDATE_REQUEST = (
    sa.update(BATCH_REQUESTS)
    .where(
        BATCH_REQUESTS.c.run_id == sa.bindparam("b_run_id"),
        BATCH_REQUESTS.c.custom_id == sa.bindparam("b_custom_id"),
    )
    .values(
        state=sa.bindparam("b_state"),
        error=sa.bindparam("b_error"),
        batch_key=sa.bindparam("b_batch_key"),
        tries=sa.bindparam("b_tries"),
    )
)


def batch_to_columns(row: ProviderBatchRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "run_id": row.run_id,
        "step": row.step,
        "provider": row.provider,
        "model": row.model,
        "state": row.state.value,
        "remote_id": row.remote_id,
        "request_count": row.request_count,
        "size_bytes": row.size_bytes,
        "succeeded": row.succeeded,
        "failed": row.failed,
        "cost_usd": row.cost,
        "standard_cost_usd": row.standard_cost,
        "discount": row.discount,
        "error": row.error,
        "created_at": row.created_at,
        "submitted_at": row.submitted_at,
        "ended_at": row.ended_at,
        "updated_at": row.updated_at,
    }


def _money(value: Any) -> Any:
    return None if value is None else normalize_money(value)


def batch_from_columns(row: Mapping[Any, Any]) -> ProviderBatchRow:
    return ProviderBatchRow(
        key=row["key"],
        run_id=row["run_id"],
        step=row["step"],
        provider=row["provider"],
        model=row["model"],
        state=BatchState(row["state"]),
        request_count=row["request_count"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        remote_id=row["remote_id"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        cost=_money(row["cost_usd"]),
        standard_cost=_money(row["standard_cost_usd"]),
        discount=_money(row["discount"]),
        submitted_at=row["submitted_at"],
        ended_at=row["ended_at"],
        error=row["error"],
    )


def request_to_columns(row: BatchRequestRow) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "batch_key": row.batch_key,
        "custom_id": row.custom_id,
        "step": row.step,
        "call_index": row.call_index,
        "request_hash": row.request_hash,
        "attempt": row.attempt,
        "price_as": row.price_as,
        "state": row.state.value,
        "error": row.error,
        "tries": row.tries,
    }


def request_from_columns(row: Mapping[Any, Any]) -> BatchRequestRow:
    return BatchRequestRow(
        run_id=row["run_id"],
        batch_key=row["batch_key"],
        custom_id=row["custom_id"],
        step=row["step"],
        call_index=row["call_index"],
        request_hash=row["request_hash"],
        attempt=row["attempt"],
        price_as=row["price_as"],
        state=BatchRequestState(row["state"]),
        error=row["error"],
        tries=row["tries"],
    )


def _batch_params(row: ProviderBatchRow) -> dict[str, Any]:
    columns = batch_to_columns(row)
    params = {f"b_{name}": columns[name] for name in _BATCH_MUTABLE}
    params["b_key"] = row.key
    return params


def _request_params(row: BatchRequestRow) -> dict[str, Any]:
    return {
        "b_run_id": row.run_id,
        "b_custom_id": row.custom_id,
        "b_state": row.state.value,
        "b_error": row.error,
        "b_batch_key": row.batch_key,
        "b_tries": row.tries,
    }


class SqlProviderBatches(SqlBase):
    """``ProviderBatchStore`` on SQLite and Postgres."""

    async def insert_provider_batch(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        *,
        owner: str | None = None,
    ) -> None:
        """A batch and its calls, all or nothing, before it is submitted. A call already
        mapped (a missing answer asked again) moves to this batch with ``tries`` + 1."""
        async with self.begin() as conn:
            await guard_lease(conn, batch.run_id, owner)
            await conn.execute(sa.insert(PROVIDER_BATCHES), [batch_to_columns(batch)])
            known = await _known_custom_ids(conn, batch.run_id, [r.custom_id for r in requests])
            new = [request_to_columns(r) for r in requests if r.custom_id not in known]
            again = [_request_params(r) for r in requests if r.custom_id in known]
            if new:
                await conn.execute(sa.insert(BATCH_REQUESTS), new)
            if again:
                await conn.execute(_UPDATE_REQUEST, again)
            await self.notify(conn, {batch.run_id})

    async def update_provider_batch(
        self, batch: ProviderBatchRow, *, owner: str | None = None
    ) -> None:
        """Store what changed on ``batch`` (state, the provider's id and counts, costs)."""
        async with self.begin() as conn:
            await guard_lease(conn, batch.run_id, owner)
            result = await conn.execute(_UPDATE_BATCH, [_batch_params(batch)])
            if result.rowcount == 0:
                raise StorageError(f"no provider batch {batch.key!r} in {safe_url(self.url)}")
            await self.notify(conn, {batch.run_id})

    async def get_provider_batches(self, run_id: str) -> list[ProviderBatchRow]:
        query = (
            sa.select(PROVIDER_BATCHES)
            .where(PROVIDER_BATCHES.c.run_id == run_id)
            .order_by(PROVIDER_BATCHES.c.id)
        )
        async with self.connect() as conn:
            return [batch_from_columns(r) for r in (await conn.execute(query)).mappings()]

    async def get_batch_requests(self, run_id: str) -> list[BatchRequestRow]:
        query = (
            sa.select(BATCH_REQUESTS)
            .where(BATCH_REQUESTS.c.run_id == run_id)
            .order_by(BATCH_REQUESTS.c.id)
        )
        async with self.connect() as conn:
            return [request_from_columns(r) for r in (await conn.execute(query)).mappings()]

    async def store_batch_results(
        self,
        batch: ProviderBatchRow,
        requests: Sequence[BatchRequestRow],
        completions: Sequence[CompletionRow],
        calls: Sequence[CallRecord],
        *,
        owner: str | None = None,
    ) -> None:
        """A batch's answers in one transaction: the batch row, its calls' states, the
        answers as completions (one already stored for a call is kept, not doubled) and
        the paid calls' stats rows."""
        async with self.begin() as conn:
            await guard_lease(conn, batch.run_id, owner)
            result = await conn.execute(_UPDATE_BATCH, [_batch_params(batch)])
            if result.rowcount == 0:
                raise StorageError(f"no provider batch {batch.key!r} in {safe_url(self.url)}")
            if requests:
                await conn.execute(_UPDATE_REQUEST, [_request_params(r) for r in requests])
            stored = await _stored_calls(conn, batch.run_id, {c.step for c in completions})
            fresh = [
                completion_to_columns(c)
                for c in completions
                if (c.step, c.call_index, c.request_hash) not in stored
            ]
            if fresh:
                await conn.execute(sa.insert(COMPLETIONS), fresh)
            if calls:
                await conn.execute(sa.insert(STATS), [call_to_columns(c) for c in calls])
            await self.notify(conn, {batch.run_id})


async def _known_custom_ids(conn: Any, run_id: str, custom_ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(custom_ids), 5000):  # bounded IN lists
        chunk = custom_ids[start : start + 5000]
        query = sa.select(BATCH_REQUESTS.c.custom_id).where(
            BATCH_REQUESTS.c.run_id == run_id, BATCH_REQUESTS.c.custom_id.in_(chunk)
        )
        known.update((await conn.execute(query)).scalars())
    return known


async def _stored_calls(conn: Any, run_id: str, steps: set[str]) -> set[tuple[str, int, str]]:
    if not steps:
        return set()
    query = sa.select(
        COMPLETIONS.c.step, COMPLETIONS.c.call_index, COMPLETIONS.c.request_hash
    ).where(COMPLETIONS.c.run_id == run_id)
    rows = (await conn.execute(query)).all()
    return {(r[0], r[1], r[2]) for r in rows if r[0] in steps}
