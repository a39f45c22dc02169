"""SQLModel tables (DESIGN §5). Timestamps are naive UTC in the database."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from .._states import State

__all__ = [
    "NAME",
    "ExactDecimal",
    "SchemaVersion",
    "UtcDateTime",
    "WorkflowBatchRequest",
    "WorkflowBudget",
    "WorkflowCache",
    "WorkflowCompletion",
    "WorkflowDebugLog",
    "WorkflowNode",
    "WorkflowProviderBatch",
    "WorkflowRun",
    "WorkflowStepStat",
    "metadata",
    "sqlite_text",
]

metadata = SQLModel.metadata
# Names (workflow, step, run id, model, fan-out child ``step[key]``) and the runtime's short
# labels: TEXT, no length cap, on Postgres as on SQLite (which never enforced one). A map
# child's name is only known mid-run, so a cap would fail runs half-way. Indexes over step
# and model names are on their md5 on Postgres (migration 4): a btree entry holds at most
# 2704 bytes there.
NAME = sa.Text


class ExactDecimal(TypeDecorator[Decimal]):
    """Money as an exact decimal: unconstrained NUMERIC on Postgres, a decimal string on
    SQLite.

    Postgres keeps an unconstrained ``NUMERIC`` exactly as given, every digit (a
    ``NUMERIC(30, 12)`` would round a price of 13 decimals or a provider-reported cost).
    SQLite has no exact decimal type (NUMERIC there is a float), so the text form keeps
    every digit; reports sum it with an exact aggregate registered on each connection.
    """

    impl = sa.String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(asdecimal=True))
        return dialect.type_descriptor(sa.String(80))

    def bind_processor(self, dialect: Dialect) -> Any:
        # On SQLite, what process_bind_param sends (its String impl has no processor), in
        # one call instead of TypeDecorator's wrapper around it: a call's stats row binds
        # three (docs/performance.md, "Ninth round: instructions a call").
        if dialect.name == "sqlite":
            return _decimal_text
        return super().bind_processor(dialect)

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return _checked_decimal(value)
        return _decimal_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


def _checked_decimal(value: Decimal | None) -> Decimal | None:
    if value is not None and not isinstance(value, Decimal):
        raise TypeError(f"cost must be a Decimal, got {type(value).__name__}")
    return value


def _decimal_text(value: Decimal | None) -> str | None:
    """A Decimal as SQLite keeps it: its exact text, every digit."""
    if value is None:
        return None
    return format(_checked_decimal(value), "f")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        # On SQLite, what process_bind_param and then SQLite's DATETIME processor send, in
        # one C call: a run writes two or three timestamps per step (docs/performance.md,
        # "Fourth round"); the generic path was a tenth of the runtime's CPU per step.
        if dialect.name == "sqlite":
            return sqlite_text
        return super().bind_processor(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return _utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.utcoffset() is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is timezone.utc:
        return value
    if value.utcoffset() is None:
        raise ValueError("baton_nb stores aware datetimes only; use datetime.now(timezone.utc)")
    return value.astimezone(timezone.utc)


# Texts of the timestamps written lately (``sqlite_text``): a node's ``started_at`` goes out
# in its ``executing`` row and again in its ``completed`` one, a call's time in its stored
# answer and its stats row. Only UTC values are kept: equal UTC datetimes are the same
# instant, so the same text; emptied when full (a commit's worth of rows is far fewer).
_TEXTS: dict[datetime, str] = {}
_TEXTS_MOST = 16_384


def sqlite_text(value: datetime | None) -> str | None:
    """``value`` in UTC as SQLAlchemy's SQLite DATETIME stores it (``2026-12-06
    08:50:04.000000``: microseconds always, no offset). A value written lately is looked up
    (0.2 us), not formatted again (the runtime binds ~5 a call, 3 of them new)."""
    if value is None:
        return None
    if value.tzinfo is not timezone.utc:  # (the runtime's own times are UTC)
        # not looked up: two local times that differ only in ``fold`` (an hour repeated
        # when clocks go back) compare equal but are different instants
        return _utc_text(_utc(value))
    text = _TEXTS.get(value)
    if text is None:
        text = _utc_text(value)
        if len(_TEXTS) >= _TEXTS_MOST:
            _TEXTS.clear()
        _TEXTS[value] = text
    return text


# The text of a timestamp up to its second, per second seen lately (``_utc_text``), and the
# texts of 0-999 for its microseconds: ``isoformat`` costs ~13,000 instructions a value (it
# formats the ``+00:00`` offset too, through a ``utcoffset`` call and a ``timedelta``, to be
# cut off), ``%``-formatting the seven fields ~10,000, this ~4,500 (docs/performance.md,
# "Ninth round: instructions a call").
_SECONDS: dict[tuple[int, int, int, int, int, int], str] = {}
_SECONDS_MOST = 4_096
_THREE = tuple(f"{i:03d}" for i in range(1000))


def _utc_text(value: datetime) -> str:
    """A UTC ``value``'s text: what ``value.isoformat(" ", "microseconds")[:26]`` gives."""
    second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    head = _SECONDS.get(second)
    if head is None:
        year, month, day, hour, minute, sec = second
        head = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{sec:02d}."
        if len(_SECONDS) >= _SECONDS_MOST:
            _SECONDS.clear()
        _SECONDS[second] = head
    micro = value.microsecond
    return head + _THREE[micro // 1000] + _THREE[micro % 1000]


def _when(*, index: bool = False, optional: bool = False) -> Any:
    if optional:
        return Field(default=None, sa_type=UtcDateTime, index=index)
    return Field(sa_type=UtcDateTime, index=index)


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "baton_schema_version"
    version: int = Field(primary_key=True)
    applied_at: datetime = _when()


class WorkflowRun(SQLModel, table=True):
    __tablename__ = "workflow_runs"
    id: str = Field(primary_key=True, sa_type=NAME)
    workflow: str = Field(index=True, sa_type=NAME)
    params: str = "{}"
    status: str = Field(index=True, sa_type=NAME)
    created_at: datetime = _when(index=True)
    started_at: datetime | None = _when(optional=True)
    finished_at: datetime | None = _when(optional=True)
    failed_steps: str = "[]"
    executions: int = 0
    lease_owner: str | None = Field(default=None, sa_type=NAME)
    lease_expires_at: datetime | None = _when(optional=True)
    resume_key: str | None = Field(default=None, sa_type=NAME)
    stopped_by: str | None = Field(default=None, sa_type=NAME)


class WorkflowNode(SQLModel, table=True):
    __tablename__ = "workflow_nodes"
    __table_args__ = (sa.UniqueConstraint("run_id", "step", name="uq_workflow_nodes_run_step"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    parent: str | None = Field(default=None, sa_type=NAME)
    kind: str = Field(default="step", sa_type=NAME)  # step | group | child
    worker: str = Field(default="", sa_type=NAME)
    deps: str = "[]"
    remaining_deps: int = 0
    ignore_cancelled: bool = False
    ignore_discarded: bool = False
    max_attempts: int = 1
    model: str | None = Field(default=None, sa_type=NAME)
    item_index: int | None = None
    # A map group's number of items, stored as its expansion begins (migration 13): a
    # reader counts the items with no child stored yet as pending (``RunView.from_rows``).
    map_items: int | None = None
    state: str = Field(default=State.PENDING.value, sa_type=NAME)
    attempt: int = 0
    error: str | None = None
    result: str | None = None
    has_result: bool = False
    started_at: datetime | None = _when(optional=True)
    finished_at: datetime | None = _when(optional=True)
    updated_at: datetime = _when()


class WorkflowStepStat(SQLModel, table=True):
    __tablename__ = "workflow_step_stats"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    model: str = Field(sa_type=NAME)
    provider: str = Field(sa_type=NAME)
    attempt: int = 1
    call_index: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    # added by migration 3 with DEFAULT 0 (writers that name the older columns only work)
    cache_write_1h_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    web_search_requests: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    cost_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    fees_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    priced_as: str | None = Field(default=None, sa_type=NAME)
    price_source: str | None = Field(default=None, sa_type=NAME)
    price_model: str | None = Field(default=None, sa_type=NAME)
    latency_ms: float = 0.0
    replayed: bool = False
    estimated: bool = False
    created_at: datetime = _when(index=True)
    # added by migration 8: the call went through a provider batch (priced at batch rates)
    batch: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # added by migration 11: answered from the response cache (cost 0), and what it saved
    cached: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    saved_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)


class WorkflowCompletion(SQLModel, table=True):
    __tablename__ = "workflow_completions"
    __table_args__ = (
        sa.UniqueConstraint(
            "run_id", "step", "call_index", "request_hash", name="uq_workflow_completions_call"
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    call_index: int
    request_hash: str = Field(sa_type=NAME)
    response: str
    created_at: datetime = _when()


class WorkflowDebugLog(SQLModel, table=True):
    __tablename__ = "workflow_debug_logs"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    attempt: int = 0
    kind: str = Field(sa_type=NAME)  # log | request | response | error
    message: str = ""
    data: str | None = None
    created_at: datetime = _when(index=True)


class WorkflowAttempt(SQLModel, table=True):
    """One ended attempt of a step: its error and duration (migration 9)."""

    __tablename__ = "workflow_attempts"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    attempt: int
    state: str = Field(sa_type=NAME)
    error: str | None = None
    started_at: datetime = _when()
    finished_at: datetime = _when()


class WorkflowProviderBatch(SQLModel, table=True):
    """A provider batch (DESIGN §12), stored before it is submitted (migration 8)."""

    __tablename__ = "workflow_provider_batches"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_type=NAME, unique=True)
    run_id: str = Field(sa_type=NAME, index=True)
    step: str = Field(sa_type=NAME)
    provider: str = Field(sa_type=NAME)
    model: str = Field(sa_type=NAME)
    state: str = Field(sa_type=NAME)
    remote_id: str | None = Field(default=None, sa_type=NAME)
    request_count: int = 0
    size_bytes: int = 0
    succeeded: int = 0
    failed: int = 0
    cost_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    standard_cost_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    discount: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    error: str | None = None
    created_at: datetime = _when()
    submitted_at: datetime | None = _when(optional=True)
    ended_at: datetime | None = _when(optional=True)
    updated_at: datetime = _when()


class WorkflowBatchRequest(SQLModel, table=True):
    """One call sent in a provider batch: custom id -> (run, step, call, request hash)."""

    __tablename__ = "workflow_batch_requests"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "custom_id", name="uq_workflow_batch_requests_custom_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME)
    batch_key: str = Field(sa_type=NAME, index=True)
    custom_id: str = Field(sa_type=NAME)
    step: str = Field(sa_type=NAME)
    call_index: int
    request_hash: str = Field(sa_type=NAME)
    attempt: int = 1
    price_as: str | None = Field(default=None, sa_type=NAME)
    state: str = Field(sa_type=NAME)
    error: str | None = None
    tries: int = 1


class WorkflowBudget(SQLModel, table=True):
    """A run's budget (scope ``""``) or one step's (scope = step name), migration 11.

    Amounts are integers of ``MONEY_UNIT`` (10^-12 USD): one ``UPDATE ... WHERE spent +
    reserved + x <= cap`` reserves atomically on SQLite and Postgres alike, exactly."""

    __tablename__ = "workflow_budgets"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(sa_type=NAME, index=True)
    scope: str = Field(sa_type=NAME)
    cap_units: int = Field(sa_type=sa.BigInteger)
    spent_units: int = Field(default=0, sa_type=sa.BigInteger)
    reserved_units: int = Field(default=0, sa_type=sa.BigInteger)
    refused: int = 0
    reason: str | None = None  # why the run stopped when this budget refused a call
    updated_at: datetime = _when()


class WorkflowCache(SQLModel, table=True):
    """The response cache (DESIGN §11), shared by every run of the database (migration 11)."""

    __tablename__ = "workflow_cache"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_type=NAME, unique=True)
    model: str = Field(sa_type=NAME)
    request: str
    response: str
    cost_usd: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    hits: int = 0
    created_at: datetime = _when(index=True)
    last_hit_at: datetime | None = _when(optional=True)
