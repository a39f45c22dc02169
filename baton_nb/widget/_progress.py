"""Text progress for runs outside a kernel: one line, redrawn in place, throttled."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .._run import TERMINAL_STATES, Run
from ..events import add_listener, topic_workflow

__all__ = ["TextProgress"]


class TextProgress:
    """``[ingest] 12/40 steps  2 running  1 failed  $0.0123  3.2s`` on stderr."""

    min_interval = 0.1

    def __init__(self, run: Run, stream: TextIO | None = None) -> None:
        self.run = run
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last = 0.0
        self._remove = add_listener(topic_workflow(run.id), self._on_event)
        self._render(force=True)

    def line(self) -> str:
        steps = [s for s in self.run.steps.values() if s.kind != "group"]
        done = sum(1 for s in steps if s.state in TERMINAL_STATES)
        running = sum(1 for s in steps if s.state == "executing")
        failed = sum(1 for s in steps if s.state in ("discarded", "cancelled"))
        elapsed = time.monotonic() - self.started
        parts = [f"[{self.run.workflow}] {done}/{len(steps)} steps"]
        if running:
            parts.append(f"{running} running")
        if failed:
            parts.append(f"{failed} failed")
        parts.append(f"${self.run.cost}")
        parts.append(f"{elapsed:.1f}s")
        if self.run.done:
            parts.append(self.run.status)
        return "  ".join(parts)

    def _on_event(self, _event: Any) -> None:
        self._render()

    def _render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self.stream.write("\r" + self.line().ljust(78))
        self.stream.flush()

    def close(self) -> None:
        self._remove()
        self._render(force=True)
        self.stream.write("\n")
        self.stream.flush()
