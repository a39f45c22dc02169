"""Progress outside a kernel: one tqdm line on stderr, refreshed at most 10 times a second.

``[ingest]  45%|████▌     | 18/40 completed [00:03]  1 discarded · 2 executing · 1.2k tok · $0.01``

On a stream that is not a terminal (a log file, a pipe) a line rewritten in place with
carriage returns would pile up on one line: there the same line is written whole, once per
tenth of the steps completed, and the final one once when the run ends. A Jupyter kernel's
own output streams are no terminal either (``isatty()`` is False) but the notebook renders
carriage returns: there (``display="text"`` in a notebook) the line is rewritten in place.
"""

from __future__ import annotations

import io
import sys
from typing import TextIO

from tqdm import tqdm

from .._money import fmt_money, plural
from .._run import Run
from .._runview import cache_savings, spend_state, status_text
from ._throttle import Throttle

__all__ = ["TextProgress"]

_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} completed [{elapsed}]  {postfix}"


def spend_texts(run: Run) -> list[str]:
    """The budget and the cache (DESIGN §11) in the text progress line."""
    out = []
    spend = spend_state(run)
    if spend is not None:
        reached = " · budget reached" if spend.reason else ""
        out.append(f"budget: {spend.text()}{reached}")
    cached, saved = cache_savings(run)
    if cached:
        out.append(f"{plural(cached, 'call')} cached (${fmt_money(saved)} saved)")
    return out


def _tokens(n: int) -> str:
    if n < 1000:
        return str(n)
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.1f}M"


class TextProgress:
    """A terminal progress bar for one run (``display="text"``, or auto outside a kernel)."""

    def __init__(self, run: Run, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.run = run
        self.stream = stream or sys.stderr
        # Not a terminal nor a kernel's output: whole lines (``_line``), the bar drawn nowhere.
        self.lines = not (_is_terminal(self.stream) or _is_kernel_stream(self.stream))
        self._tenths = 0  # of the steps completed, the last written as a line
        self.bar = tqdm(
            total=self._count()[1],
            desc=f"[{run.workflow}]",
            unit="step",
            file=io.StringIO() if self.lines else self.stream,
            bar_format=_FORMAT,
            dynamic_ncols=True,
            mininterval=0,
            leave=True,
        )
        self._throttle = Throttle(self.refresh, interval)
        self._remove = run.follow(self._on_step, self.close)  # no event built for it
        self._closed = False
        self.refresh()

    def postfix(self) -> str:
        parts = []
        others = self.run.counts().others()
        if others:
            parts.append(others)
        parts.append(f"{_tokens(self.run.tokens.total_tokens)} tok")
        parts.append(self.run.cost_text())
        parts.extend(spend_texts(self.run))
        if self.run.notice:
            parts.append(self.run.notice)
        if self.run.done:
            parts.append(status_text(self.run))
        return " · ".join(parts)

    def _count(self) -> tuple[int, int]:
        counts = self.run.counts()
        return counts.completed, counts.total

    def refresh(self) -> None:
        self.bar.n, self.bar.total = self._count()
        extra = self.postfix().replace("{", "{{").replace("}", "}}")
        self.bar.bar_format = _FORMAT.replace("{postfix}", extra)
        if self.lines:
            self._line()
        else:
            self.bar.refresh()

    def _line(self) -> None:
        """A whole line when a new tenth of the steps has completed, and when the run ends
        (once: ``close`` refreshes once)."""
        done, total = self.bar.n, self.bar.total
        tenths = done * 10 // total if total else 0
        if self._closed or (self._tenths < tenths < 10 and not self.run.done):
            self._tenths = tenths
            self.stream.write(f"{self.bar}\n")
            self.stream.flush()

    def _on_step(self, _name: str) -> None:
        self._throttle.poke()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remove()
        self._throttle.close()
        self.refresh()
        self.bar.close()


def _is_kernel_stream(stream: TextIO) -> bool:
    """A Jupyter kernel's stdout or stderr (ipykernel's ``OutStream``), whose carriage
    returns the notebook renders as a line rewritten in place; never imported for it."""
    iostream = sys.modules.get("ipykernel.iostream")
    out_stream = getattr(iostream, "OutStream", None)
    return isinstance(out_stream, type) and isinstance(stream, out_stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
