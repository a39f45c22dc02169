"""``bn.RunSummary``: one line per run for listings (``bn.runs``, ``baton-nb runs``)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .._money import fmt_money, no_math_html
from .._owners import owner_gone
from .._states import RunStatus
from ..store import RunSummaryRow, utcnow
from ._render import text_table

__all__ = ["RunList", "RunSummary", "local_time"]


def local_time(when: datetime | None) -> str:
    """``2025-06-14 18:00:24`` in the machine's local time zone ('' for None)."""
    return "" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


@dataclass
class RunSummary:
    """A run as listed by ``bn.runs()``: status, timing, step counts, calls and cost.

    ``cost`` sums the priced calls (replayed calls not counted twice); when
    ``unpriced_calls`` > 0 some prices were unknown and ``cost`` is a lower bound.
    ``cached_calls``: calls answered from the response cache (cost 0, not in ``calls``).
    ``abandoned``: stored ``running``, but the process executing it is gone (killed: its
    pid no longer exists on this host, or its lease expired); the listing shows it as
    ``abandoned``, and running the workflow again with the same params resumes it.
    """

    id: str
    workflow: str
    status: str
    started: datetime | None
    finished: datetime | None
    steps: int = 0
    steps_completed: int = 0
    failed_steps: list[str] = field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)
    unpriced_calls: int = 0
    replayed_calls: int = 0
    abandoned: bool = False
    cached_calls: int = 0  # answered from the response cache: $0, not in ``calls``

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (None while the run has not finished)."""
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()

    @property
    def cost_complete(self) -> bool:
        return self.unpriced_calls == 0

    def cost_text(self) -> str:
        return fmt_money(self.cost) + ("" if self.cost_complete else "+?")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 (UTC), cost as a decimal string."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "status": self.status,
            "abandoned": self.abandoned,
            "started": None if self.started is None else self.started.isoformat(),
            "finished": None if self.finished is None else self.finished.isoformat(),
            "duration_s": self.duration,
            "steps": self.steps,
            "steps_completed": self.steps_completed,
            "failed_steps": list(self.failed_steps),
            "calls": self.calls,
            "tokens": self.tokens,
            "cost_usd": fmt_money(self.cost),
            "cost_complete": self.cost_complete,
            "replayed_calls": self.replayed_calls,
            "cached_calls": self.cached_calls,
        }

    @classmethod
    def from_row(cls, row: RunSummaryRow) -> RunSummary:
        """From one row of ``RunStore.run_summaries``."""
        return cls(
            id=row.id,
            workflow=row.workflow,
            status=row.status,
            started=row.started_at or row.created_at,
            finished=row.finished_at if row.status is not RunStatus.RUNNING else None,
            steps=row.steps,
            steps_completed=row.steps_completed,
            failed_steps=list(row.failed_steps),
            calls=row.calls,
            tokens=row.input_tokens + row.output_tokens,
            cost=row.cost if row.cost is not None else Decimal(0),
            unpriced_calls=row.unpriced_calls,
            replayed_calls=row.replayed_calls,
            cached_calls=row.cached_calls,
            abandoned=owner_gone(row.status, row.lease_owner, row.lease_expires_at, utcnow()),
        )

    def cells(self) -> list[str]:
        return [
            self.id,
            self.workflow,
            "abandoned" if self.abandoned else self.status,
            local_time(self.started),
            _duration(self.duration),
            f"{self.steps_completed}/{self.steps}",
            str(self.calls),
            str(self.cached_calls),
            self.cost_text(),
        ]


_HEADER = (
    "id",
    "workflow",
    "status",
    "started",
    "duration",
    "completed",
    "calls",
    "cached",
    "cost_usd",
)


class RunList(list[RunSummary]):
    """A list of ``RunSummary`` that shows as a table (newest first)."""

    def __str__(self) -> str:
        if not self:
            return "no runs"
        return text_table(_HEADER, [r.cells() for r in self], left=4)

    def _repr_html_(self) -> str:
        if not self:
            return no_math_html("<p>no runs</p>")
        head = "".join(f"<th>{h}</th>" for h in _HEADER)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r.cells()) + "</tr>"
            for r in self
        )
        return no_math_html(f"<table><tr>{head}</tr>{rows}</table>")

    def to_records(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self]
