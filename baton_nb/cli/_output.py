"""Printing for ``baton-nb``: a closed or full stdout ends the command cleanly (exit 1)."""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["OutputError", "out", "silence_stdout"]


class OutputError(Exception):
    """Standard output cannot be written (its ``__cause__`` is the ``OSError``)."""


def out(text: str = "") -> None:
    """Print a line to stdout now (flushed, so a broken stdout shows up here)."""
    try:
        print(text, flush=True)
    except OSError as exc:  # BrokenPipeError, ENOSPC (> /dev/full), EIO ...
        raise OutputError(str(exc)) from exc


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again
    ("Exception ignored ... BrokenPipeError"). A no-op when stdout has no file descriptor
    (e.g. captured in tests)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
