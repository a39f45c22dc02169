"""What a step may return (or raise) besides a result: Snooze and Discard."""

from __future__ import annotations

import math

__all__ = ["Discard", "Snooze"]


class Snooze:
    """``return bn.Snooze(seconds)``: run the step again after ``seconds``.

    A snooze does not use one of the step's attempts.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)  # nan: no time at all; inf: never wakes
            or seconds < 0
        ):
            raise ValueError(f"Snooze needs a finite number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"Snooze({self.seconds:g})"


class Discard(Exception):
    """``return bn.Discard(reason)`` or ``raise bn.Discard(reason)``: fail the step now.

    A discarded step is not retried.
    """

    def __init__(self, reason: str = "discarded") -> None:
        reason = str(reason)  # ``Discard(exc)`` from an except clause: its text
        super().__init__(reason)
        self.reason = reason
