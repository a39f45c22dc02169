"""The runtime: a pure scheduler (``_scheduler``) and the in-process driver (``_driver``)
that applies its decisions: attempts (``_attempt``), LLM calls with replay (``_calls``),
group commit (``_commit``), the run's lease (``_lease``), events (``_announce``)."""

from ._context import Context
from ._driver import active_run, active_runs
from ._lease import DEFAULT_LEASE_TTL
from ._start import execute_run
from ._submit import Following, SubmittedRun, follow_submitted, submit_run
from ._tools import ToolResult, ToolRun
from ._workers_notice import WorkersNotice, keep_workers_notice

__all__ = [
    "DEFAULT_LEASE_TTL",
    "Context",
    "Following",
    "SubmittedRun",
    "ToolResult",
    "ToolRun",
    "WorkersNotice",
    "active_run",
    "active_runs",
    "execute_run",
    "follow_submitted",
    "keep_workers_notice",
    "submit_run",
]
