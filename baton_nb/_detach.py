"""The short message of a cell stopped while it followed a run on the workers (DESIGN §4):
``wf.run(..., workers=True)`` and ``SubmittedRun.wait()`` interrupted. The run goes on on
the workers; the message says how to follow it again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from ._dburl import safe_url

__all__ = ["detached"]


def detached(run_id: str, db: str, exc: BaseException) -> None:
    """The cell stopped before run ``run_id`` (submitted to ``db``, "" for the default)
    ended: the run goes on on the workers; say how to follow it again. An interrupt
    (DESIGN §4) ends a notebook cell with that message alone, no traceback through the
    library (IPython shows ``_render_traceback_``)."""
    where = f", db={_literal(safe_url(db))}" if db else ""
    # the code on lines of its own, copied and run as is (as the in-process resume line)
    message = (
        f"detached from run {run_id}: it goes on on the workers. Follow it again and wait "
        "for its end (run.cancel() cancels it) with:\n"
        f"run = await bn.SubmittedRun.attach({_literal(run_id)}{where})\n"
        "await run.wait()"
    )
    stopped: BaseException = exc
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) and _in_ipython():
        lines = message.splitlines()
        with contextlib.suppress(AttributeError):  # no __dict__: the message printed
            stopped._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
            return
    print(message)


def _literal(text: str) -> str:
    """``text`` as a Python string literal in double quotes (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None
