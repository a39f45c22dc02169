"""Tables of the worker processes (DESIGN §10, migration 10): submitted runs, the queue of
attempts handed to workers, and the live workers. Postgres only in use (SQLite has them,
empty: ``FOR UPDATE SKIP LOCKED`` and LISTEN/NOTIFY are what workers need)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from ._tables import NAME, UtcDateTime

__all__ = [
    "WorkflowLimitGrant",
    "WorkflowLimitSlot",
    "WorkflowStepWorker",
    "WorkflowSubmission",
    "WorkflowTask",
    "WorkflowWorker",
]


def _when(*, optional: bool = False) -> datetime:
    if optional:
        return Field(default=None, sa_type=UtcDateTime)  # type: ignore[no-any-return]
    return Field(sa_type=UtcDateTime)  # type: ignore[no-any-return]


class WorkflowSubmission(SQLModel, table=True):
    """A run submitted to workers (``wf.submit``): how a worker finds its code."""

    __tablename__ = "workflow_submissions"
    run_id: str = Field(primary_key=True, sa_type=NAME)
    workflow: str = Field(sa_type=NAME, index=True)
    code_ref: str | None = Field(default=None, sa_type=NAME)  # "module:attribute"
    code_hash: str = Field(sa_type=NAME)
    code_blob: bytes | None = Field(default=None, sa_type=sa.LargeBinary)  # cloudpickle
    concurrency: int = 100
    models: str = "{}"
    cancel_requested: bool = False
    refused: str | None = None  # why a worker refused the run (other code, by value)
    created_at: datetime = _when()


class WorkflowTask(SQLModel, table=True):
    """One attempt of one step handed to the workers: queued, claimed (a lease with a
    fencing token), done (its outcome, for the run's coordinator to take)."""

    __tablename__ = "workflow_tasks"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    workflow: str = Field(sa_type=NAME)
    step: str = Field(sa_type=NAME)  # the node: a step, or a fan-out child "step[key]"
    spec: str = Field(sa_type=NAME)  # the workflow's step the node runs
    attempt: int = 1
    item: str | None = None  # JSON: a map child's item
    model: str | None = Field(default=None, sa_type=NAME)
    replay: bool = False  # stored answers may exist: read them before calling
    by_value: bool = False  # the run's code is shipped by value (cloudpickle)
    # queued | claimed | done | dropped (no longer wanted: a worker running it stops it)
    state: str = Field(default="queued", sa_type=NAME)
    claimed_by: str | None = Field(default=None, sa_type=NAME)
    lease_until: datetime | None = _when(optional=True)
    token: int = 0
    outcome: str | None = None  # JSON
    created_at: datetime = _when()


class WorkflowWorker(SQLModel, table=True):
    """A live worker process (``baton-nb workers``)."""

    __tablename__ = "workflow_workers"
    id: str = Field(primary_key=True, sa_type=NAME)
    host: str = Field(sa_type=NAME)
    pid: int
    workflows: str = "[]"
    started_at: datetime = _when()
    heartbeat_at: datetime = _when()
    in_flight: int = 0
    done: int = 0
    stopping: bool = False


class WorkflowLimitGrant(SQLModel, table=True):
    """A request (``kind`` 'rpm') or token estimate ('tpm') admitted to a provider by a
    worker, at ``at`` (the database's epoch seconds): the sliding windows of ``bn.Limit``
    held across all workers (migration 12)."""

    __tablename__ = "workflow_limit_grants"
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(sa_type=NAME)
    kind: str = Field(sa_type=NAME)  # rpm | tpm
    at: float
    amount: float


class WorkflowLimitSlot(SQLModel, table=True):
    """A concurrency slot of a provider held by a worker's call until ``expires_at`` (epoch
    seconds, renewed by the worker's heartbeat): a killed worker's slots lapse."""

    __tablename__ = "workflow_limit_slots"
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(sa_type=NAME)
    worker: str = Field(sa_type=NAME)
    expires_at: float


class WorkflowStepWorker(SQLModel, table=True):
    """Which worker ran an attempt of a step: written with the outcome it stored under its
    lease (``baton-nb show``, ``run.steps[name].ran_on``; migration 12)."""

    __tablename__ = "workflow_step_workers"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    attempt: int
    worker: str = Field(sa_type=NAME)
    finished_at: datetime = _when()
