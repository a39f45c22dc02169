"""Durable state behind one typed interface (``RunStore``): SQLite and Postgres through
SQLModel (``SqlStore``), and an in-memory store (``MemoryStore``, ``db="memory://"``).

SQL lives in this package only; everything else asks ``RunStore`` (``_interface``) for
typed rows (``_rows``).
"""

from ._batch_rows import BatchRequestRow, ProviderBatchRow
from ._engine import DEFAULT_URL, resolve_url
from ._interface import (
    BatchWriter,
    ExecutionStore,
    ProviderBatchStore,
    PruneStore,
    ReadStore,
    ReportStore,
    RunStore,
    SpendStore,
)
from ._memory import MemoryStore
from ._migrations import SCHEMA_VERSION
from ._open import SqlStore, Store
from ._rows import (
    NODE_UPDATE_FIELDS,
    PRUNE_TABLES,
    UNANSWERED,
    AttemptRow,
    CallRecord,
    ChangeMarks,
    CompletionRow,
    FanoutChild,
    LogRow,
    NodeRow,
    NodeUpdate,
    RanOn,
    RunChanges,
    RunFilter,
    RunRow,
    RunStopped,
    RunSummaryRow,
    RunUpdate,
    StatAggregate,
    StepWorkerRow,
    WriteBatch,
    utcnow,
)
from ._spend_rows import MONEY_UNIT, RUN_SCOPE, BudgetRow, CacheEntry, CacheStats, as_held
from ._sql_limits import SLOTS_CHANNEL, SqlLimits
from ._sql_workers import (
    DONE_CHANNEL,
    RUNS_CHANNEL,
    TASKS_CHANNEL,
    SqlWorkers,
    open_worker_store,
)
from ._tables import (
    SchemaVersion,
    WorkflowCompletion,
    WorkflowDebugLog,
    WorkflowNode,
    WorkflowRun,
    WorkflowStepStat,
)
from ._worker_rows import (
    ClaimedTask,
    Coordination,
    DoneTask,
    NewTask,
    SubmissionRow,
    WorkerBeat,
    WorkerRow,
)

__all__ = [
    "DEFAULT_URL",
    "DONE_CHANNEL",
    "MONEY_UNIT",
    "NODE_UPDATE_FIELDS",
    "PRUNE_TABLES",
    "RUNS_CHANNEL",
    "RUN_SCOPE",
    "SCHEMA_VERSION",
    "SLOTS_CHANNEL",
    "TASKS_CHANNEL",
    "UNANSWERED",
    "AttemptRow",
    "BatchRequestRow",
    "BatchWriter",
    "BudgetRow",
    "CacheEntry",
    "CacheStats",
    "CallRecord",
    "ChangeMarks",
    "ClaimedTask",
    "CompletionRow",
    "Coordination",
    "DoneTask",
    "ExecutionStore",
    "FanoutChild",
    "LogRow",
    "MemoryStore",
    "NewTask",
    "NodeRow",
    "NodeUpdate",
    "ProviderBatchRow",
    "ProviderBatchStore",
    "PruneStore",
    "RanOn",
    "ReadStore",
    "ReportStore",
    "RunChanges",
    "RunFilter",
    "RunRow",
    "RunStopped",
    "RunStore",
    "RunSummaryRow",
    "RunUpdate",
    "SchemaVersion",
    "SpendStore",
    "SqlLimits",
    "SqlStore",
    "SqlWorkers",
    "StatAggregate",
    "StepWorkerRow",
    "Store",
    "SubmissionRow",
    "WorkerBeat",
    "WorkerRow",
    "WorkflowCompletion",
    "WorkflowDebugLog",
    "WorkflowNode",
    "WorkflowRun",
    "WorkflowStepStat",
    "WriteBatch",
    "as_held",
    "open_worker_store",
    "resolve_url",
    "utcnow",
]
