"""The scheduler: readiness counters, concurrency, retries, timeouts, snooze, cascade,
resume, cancellation, replay of paid LLM calls."""

from ._context import Context
from ._setup import DEFAULT_LEASE_TTL, execute_run

__all__ = ["DEFAULT_LEASE_TTL", "Context", "execute_run"]
