"""The SQL tables as SQLAlchemy ``Table`` objects, and typed rows to and from their columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa

from .. import _jsonutil
from .._money import normalize_money
from .._states import NodeKind, RunStatus, State
from .._usage import Usage
from ..pricing import CallPricing
from ._rows import AttemptRow, CallRecord, CompletionRow, LogRow, NodeRow, RunRow, StepWorkerRow
from ._tables import (
    WorkflowAttempt,
    WorkflowCompletion,
    WorkflowDebugLog,
    WorkflowNode,
    WorkflowRun,
    WorkflowStepStat,
)
from ._worker_tables import WorkflowStepWorker, WorkflowSubmission

__all__ = [
    "ATTEMPTS",
    "COMPLETIONS",
    "LOGS",
    "NODES",
    "RUNS",
    "STATS",
    "STEP_WORKERS",
    "SUBMISSIONS",
    "attempt_from_columns",
    "attempt_to_columns",
    "call_from_columns",
    "call_to_columns",
    "completion_to_columns",
    "deps_text",
    "log_from_columns",
    "log_to_columns",
    "node_from_columns",
    "node_to_columns",
    "run_from_columns",
    "run_to_columns",
    "step_worker_to_columns",
]

RUNS = cast(sa.Table, WorkflowRun.__table__)  # type: ignore[attr-defined]
NODES = cast(sa.Table, WorkflowNode.__table__)  # type: ignore[attr-defined]
STATS = cast(sa.Table, WorkflowStepStat.__table__)  # type: ignore[attr-defined]
COMPLETIONS = cast(sa.Table, WorkflowCompletion.__table__)  # type: ignore[attr-defined]
LOGS = cast(sa.Table, WorkflowDebugLog.__table__)  # type: ignore[attr-defined]
ATTEMPTS = cast(sa.Table, WorkflowAttempt.__table__)  # type: ignore[attr-defined]
STEP_WORKERS = cast(sa.Table, WorkflowStepWorker.__table__)  # type: ignore[attr-defined]
SUBMISSIONS = cast(sa.Table, WorkflowSubmission.__table__)  # type: ignore[attr-defined]

Columns = Mapping[Any, Any]  # a result row (sqlalchemy RowMapping)


def loads_list(text: str | None) -> list[str]:
    if not text or text == "[]":  # most nodes (every fan-out child) have no deps
        return []
    return list(json.loads(text))


def deps_text(deps: list[str]) -> str:
    """A node's deps as stored (JSON text); most nodes (every fan-out child) have none."""
    return _jsonutil.dumps(deps) if deps else "[]"


def run_to_columns(run: RunRow) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "params": run.params,
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "failed_steps": _jsonutil.dumps(list(run.failed_steps)),
        "executions": run.executions,
        "lease_owner": run.lease_owner,
        "lease_expires_at": run.lease_expires_at,
        "resume_key": run.resume_key,
        "stopped_by": run.stopped_by,
    }


def run_from_columns(row: Columns) -> RunRow:
    return RunRow(
        id=row["id"],
        workflow=row["workflow"],
        params=row["params"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        failed_steps=loads_list(row["failed_steps"]),
        executions=int(row["executions"] or 0),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        resume_key=row["resume_key"],
        stopped_by=row["stopped_by"],
    )


def node_to_columns(node: NodeRow) -> dict[str, Any]:
    """The insert values of a node (its id is given by the database)."""
    return {
        "run_id": node.run_id,
        "step": node.step,
        "parent": node.parent,
        "kind": node.kind,  # a str enum: bound as its value, no .value lookup per row
        "worker": node.worker,
        "deps": deps_text(node.deps),
        "remaining_deps": node.remaining_deps,
        "ignore_cancelled": node.ignore_cancelled,
        "ignore_discarded": node.ignore_discarded,
        "max_attempts": node.max_attempts,
        "model": node.model,
        "item_index": node.item_index,
        "state": node.state,
        "attempt": node.attempt,
        "error": node.error,
        "result": node.result,
        "has_result": node.has_result,
        "started_at": node.started_at,
        "finished_at": node.finished_at,
        "updated_at": node.updated_at,
        "map_items": node.map_items,
    }


# A stored state or kind to its enum member: a dict lookup, not an Enum call (a tenth of the
# cost; a resumed 100,000-item map reads 100,000 of each).
_STATE = {state.value: state for state in State}
_KIND = {kind.value: kind for kind in NodeKind}


def node_from_columns(row: Columns) -> NodeRow:
    return NodeRow(
        id=int(row["id"]),
        run_id=row["run_id"],
        step=row["step"],
        parent=row["parent"],
        kind=_KIND.get(row["kind"]) or NodeKind(row["kind"]),
        worker=row["worker"],
        deps=loads_list(row["deps"]),
        remaining_deps=row["remaining_deps"],
        ignore_cancelled=bool(row["ignore_cancelled"]),
        ignore_discarded=bool(row["ignore_discarded"]),
        max_attempts=row["max_attempts"],
        model=row["model"],
        item_index=row["item_index"],
        state=_STATE.get(row["state"]) or State(row["state"]),
        attempt=row["attempt"],
        error=row["error"],
        result=row["result"],
        has_result=bool(row["has_result"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        map_items=row["map_items"],
    )


def call_to_columns(call: CallRecord) -> dict[str, Any]:
    """The ``workflow_step_stats`` row of a call (the one place that builds it)."""
    pricing = call.pricing
    return {
        "run_id": call.run_id,
        "step": call.step,
        "model": call.model,
        "provider": call.provider,
        "attempt": call.attempt,
        "call_index": call.call_index,
        **call.usage.to_dict(),
        "cost_usd": call.cost,
        "fees_usd": pricing.fees if pricing is not None else None,
        "priced_as": pricing.priced_as if pricing is not None else None,
        "price_source": pricing.source if pricing is not None else None,
        "price_model": pricing.model if pricing is not None else None,
        "latency_ms": call.latency_ms,
        "replayed": call.replayed,
        "estimated": call.estimated,
        "created_at": call.created_at,
        "batch": pricing is not None and pricing.batch,
        "cached": call.cached,
        "saved_usd": call.saved,
    }


def call_from_columns(row: Columns) -> CallRecord:
    fees = row.get("fees_usd")
    pricing = None
    if row.get("priced_as") or row.get("price_source"):
        pricing = CallPricing(
            priced_as=row.get("priced_as") or row["model"],
            source=row.get("price_source"),
            model=row.get("price_model"),
            fees=None if fees is None else normalize_money(fees),
            batch=bool(row.get("batch", False)),
        )
    return CallRecord(
        run_id=row["run_id"],
        step=row["step"],
        model=row["model"],
        provider=row["provider"],
        attempt=row["attempt"],
        call_index=row["call_index"],
        usage=Usage.from_dict(dict(row)),
        cost=None if row["cost_usd"] is None else normalize_money(row["cost_usd"]),
        latency_ms=float(row["latency_ms"]),
        replayed=bool(row["replayed"]),
        estimated=bool(row["estimated"]),
        created_at=row["created_at"],
        pricing=pricing,
        id=int(row["id"]),
        cached=bool(row.get("cached", False)),
        saved=None if row.get("saved_usd") is None else normalize_money(row["saved_usd"]),
    )


def completion_to_columns(row: CompletionRow) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "step": row.step,
        "call_index": row.call_index,
        "request_hash": row.request_hash,
        "response": row.response,
        "created_at": row.created_at,
    }


def log_to_columns(log: LogRow) -> dict[str, Any]:
    return {
        "run_id": log.run_id,
        "step": log.step,
        "attempt": log.attempt,
        "kind": log.kind,
        "message": log.message,
        "data": log.data,
        "created_at": log.created_at,
    }


def log_from_columns(row: Columns) -> LogRow:
    return LogRow(
        id=int(row["id"]),
        run_id=row["run_id"],
        step=row["step"],
        attempt=row["attempt"],
        kind=row["kind"],
        message=row["message"],
        data=row["data"],
        created_at=row["created_at"],
    )


def attempt_to_columns(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "run_id": attempt.run_id,
        "step": attempt.step,
        "attempt": attempt.attempt,
        "state": attempt.state,
        "error": attempt.error,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
    }


def step_worker_to_columns(row: StepWorkerRow) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "step": row.step,
        "attempt": row.attempt,
        "worker": row.worker,
        "finished_at": row.finished_at,
    }


def attempt_from_columns(row: Columns) -> AttemptRow:
    return AttemptRow(
        id=int(row["id"]),
        run_id=row["run_id"],
        step=row["step"],
        attempt=row["attempt"],
        state=row["state"],
        error=row["error"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
