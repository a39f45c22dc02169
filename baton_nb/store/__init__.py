"""Durable state: SQLModel tables, migrations, SQLite and Postgres engines, the repository."""

from ._engine import DEFAULT_URL, resolve_url
from ._migrations import SCHEMA_VERSION
from ._reporting import FINISHED_STATUSES, PRUNE_TABLES, RunFilter
from ._repository import NODE_FIELDS, Store, WriteBatch, lease_owner_name, loads_list, utcnow
from ._tables import (
    SchemaVersion,
    WorkflowCompletion,
    WorkflowDebugLog,
    WorkflowNode,
    WorkflowRun,
    WorkflowStepStat,
)

__all__ = [
    "DEFAULT_URL",
    "FINISHED_STATUSES",
    "NODE_FIELDS",
    "PRUNE_TABLES",
    "SCHEMA_VERSION",
    "RunFilter",
    "SchemaVersion",
    "Store",
    "WorkflowCompletion",
    "WorkflowDebugLog",
    "WorkflowNode",
    "WorkflowRun",
    "WorkflowStepStat",
    "WriteBatch",
    "lease_owner_name",
    "loads_list",
    "resolve_url",
    "utcnow",
]
