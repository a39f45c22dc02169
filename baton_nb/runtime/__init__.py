"""The scheduler: readiness counters, concurrency, retries, timeouts, snooze, cascade,
resume, cancellation, replay of paid LLM calls."""

from ._context import Context
from ._execution import active_run, active_runs
from ._setup import DEFAULT_LEASE_TTL, execute_run
from ._tools import ToolResult, ToolRun

__all__ = [
    "DEFAULT_LEASE_TTL",
    "Context",
    "ToolResult",
    "ToolRun",
    "active_run",
    "active_runs",
    "execute_run",
]
