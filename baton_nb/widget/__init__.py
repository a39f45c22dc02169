"""Live progress of runs: the DAG widget in a kernel, a text line in a terminal."""

from __future__ import annotations

import sys
from typing import Any

from .._errors import ConfigurationError
from .._run import Run
from ._progress import TextProgress

__all__ = ["TextProgress", "attach", "in_kernel"]


def in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached)."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def attach(run: Run, display: bool | str | None) -> Any:
    """Show progress for ``run``; returns something with ``close()``, or None."""
    if display not in (None, True, False, "text", "widget"):
        raise ConfigurationError(
            f"display must be None (auto), True, False, 'text' or 'widget'; got {display!r}"
        )
    if display is False:
        return None
    if display == "text" or (display is None and not in_kernel()):
        if display is None and not sys.stderr.isatty():
            return None
        return TextProgress(run)
    return TextProgress(run)  # the DAG widget arrives with issue 5
