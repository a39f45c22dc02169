"""Typed rows of the worker tables (``_worker_tables``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "ClaimedTask",
    "Coordination",
    "DoneTask",
    "NewTask",
    "SubmissionRow",
    "WorkerBeat",
    "WorkerRow",
]


@dataclass(slots=True)
class SubmissionRow:
    """A run handed to workers: how they find its code, its concurrency, cancel, refusal."""

    run_id: str
    workflow: str
    code_hash: str
    created_at: datetime
    code_ref: str | None = None
    code_blob: bytes | None = None
    concurrency: int = 100
    models: str = "{}"
    cancel_requested: bool = False
    refused: str | None = None


@dataclass(slots=True)
class NewTask:
    """One attempt of one step for the workers to run (the coordinator's side)."""

    run_id: str
    workflow: str
    step: str
    spec: str
    attempt: int
    item: str | None  # JSON
    model: str | None
    replay: bool
    by_value: bool = False


@dataclass(slots=True)
class ClaimedTask:
    """A task a worker claimed: ``token`` fences its commit (a later claim raises it)."""

    id: int
    run_id: str
    workflow: str
    step: str
    spec: str
    attempt: int
    item: str | None
    model: str | None
    replay: bool
    token: int
    by_value: bool = False


@dataclass(slots=True)
class DoneTask:
    """A finished task's outcome (JSON), for the run's coordinator."""

    id: int
    step: str
    attempt: int
    outcome: str
    worker: str


@dataclass(slots=True)
class WorkerRow:
    """One live worker process."""

    id: str
    host: str
    pid: int
    workflows: list[str]
    started_at: datetime
    heartbeat_at: datetime
    in_flight: int = 0
    done: int = 0
    stopping: bool = False


@dataclass(slots=True)
class WorkerBeat:
    """A worker's row as the front of ``wf.run(workers=True)`` reads it: its last
    heartbeat ``age`` in seconds, by the database's clock."""

    id: str
    host: str
    pid: int
    workflows: list[str]
    age: float
    stopping: bool = False


@dataclass(slots=True)
class Coordination:
    """Who coordinates a submitted run: its lease's holder and the seconds its lease has
    left (negative: lapsed; by the database's clock), and every worker's heartbeat."""

    owner: str | None
    lease_left: float | None
    workers: list[WorkerBeat]
