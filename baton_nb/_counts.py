"""Steps per state: the one count every view shows (widget, progress line, ``Run`` repr, CLI).

A *step* here is what runs: a plain step or a fan-out child. A fan-out group is not
counted (its children are). The words are the states of DESIGN §3, nothing else: a
``cancelled`` step is never called "failed", an ``executing`` one never "done".
``x/y`` always means *completed* of all steps, never "settled".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SHOWN_ORDER", "StepCounts", "count_steps"]

# The order in which counts are listed: the outcome first, then what is still going on.
SHOWN_ORDER = (
    "completed",
    "discarded",
    "cancelled",
    "executing",
    "retryable",
    "snoozed",
    "pending",
)


class _HasState(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def unstored(self) -> int: ...


@dataclass(frozen=True)
class StepCounts:
    """How many steps are in each state, and how many steps there are."""

    by_state: Mapping[str, int]
    total: int

    def __getitem__(self, state: str) -> int:
        return self.by_state.get(state, 0)

    @property
    def completed(self) -> int:
        return self["completed"]

    def text(self) -> str:
        """``27 completed · 3 discarded · 1 cancelled of 31 steps`` (zero counts left out)."""
        parts = [f"{self[s]:,} {s}" for s in SHOWN_ORDER if self[s]]
        noun = "step" if self.total == 1 else "steps"
        return f"{' · '.join(parts) or 'nothing'} of {self.total:,} {noun}"

    def others(self) -> str:
        """The counts other than ``completed`` and ``pending`` (what ``x/y completed`` leaves
        out): ``3 discarded · 2 executing`` ('' if none)."""
        return " · ".join(f"{self[s]:,} {s}" for s in SHOWN_ORDER[1:-1] if self[s])


def count_steps(steps: Iterable[_HasState]) -> StepCounts:
    """Count ``steps`` (``run.steps.values()``) per state, leaving fan-out groups out (a
    map's items whose children are not stored yet count as pending children)."""
    by_state: dict[str, int] = {}
    total = 0
    for step in steps:
        if step.kind == "group":
            if step.unstored:
                by_state["pending"] = by_state.get("pending", 0) + step.unstored
                total += step.unstored
            continue
        by_state[step.state] = by_state.get(step.state, 0) + 1
        total += 1
    return StepCounts(by_state, total)
