"""The garbage collector while runs execute or LLM calls are in flight: young collections
rarer (issue 16).

A run keeps a node, its step info, its usage and its call record alive per call, and each
call makes a few hundred short-lived containers. With the default threshold (a young
collection every 700 allocations, a full one every 100 young ones once the heap grew by a
quarter) a 20,000-call run at 1,000 in flight spent about a third of its CPU in the
collector: ~30 full collections, each walking the whole heap; ``llm.complete`` used alone
(no run) spent ~0.12-0.15 ms a call of its ~0.4-0.6 in it at 200 in flight. While any run
executes in this process, or any call of ``llm.complete`` is in flight, the youngest
generation's threshold is ``RUN_THRESHOLD`` (the older ones' unchanged): a young
collection every 50,000 allocations; cyclic garbage waits a little longer for it (objects
without cycles are freed at once, as always). The previous threshold comes back when the
last run or call ends, unless somebody else changed it meanwhile; a threshold set higher,
or collection disabled (``gc.disable()``, threshold 0), is left alone. Threads share the
count (the collector is the process's). A call abandoned while in flight (its event loop
stopped with the call pending, its coroutine never closed) never ends: the raised
threshold then stays for the process's life. That costs only when cyclic garbage is
collected (rarer young collections), never correctness; a cancelled call ends normally.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RUN_THRESHOLD", "fewer_collections", "fewer_collections_begin", "fewer_collections_end"]

RUN_THRESHOLD = 50_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None  # the threshold to restore, if this module set it


def fewer_collections_begin() -> None:
    """One more user of the raised threshold (raised by the first); pair with
    :func:`fewer_collections_end` in a ``finally`` (what :func:`fewer_collections` does,
    without a generator context manager's ~1.5 us: ``complete`` calls it per call)."""
    global _active, _saved
    with _lock:
        if _active == 0:
            current = gc.get_threshold()
            if 0 < current[0] < RUN_THRESHOLD:
                _saved = current
                gc.set_threshold(RUN_THRESHOLD, current[1], current[2])
        _active += 1


def fewer_collections_end() -> None:
    """One user fewer; the last one restores the threshold it found (unless changed since)."""
    global _active, _saved
    with _lock:
        _active -= 1
        if _active == 0 and _saved is not None:
            if gc.get_threshold()[0] == RUN_THRESHOLD:  # nobody changed it meanwhile
                gc.set_threshold(*_saved)
            _saved = None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The block (a run's execution) with rarer young collections (module docstring)."""
    fewer_collections_begin()
    try:
        yield
    finally:
        fewer_collections_end()
