"""The garbage collector while runs execute: young collections rarer (issue 16).

A run keeps a node, its step info, its usage and its call record alive per call, and each
call makes a few hundred short-lived containers. With the default threshold (a young
collection every 700 allocations, a full one every 100 young ones once the heap grew by a
quarter) a 20,000-call run at 1,000 in flight spent about a third of its CPU in the
collector: ~30 full collections, each walking the whole heap. While any run executes in
this process, the youngest generation's threshold is ``RUN_THRESHOLD`` (the older ones'
unchanged): a young collection every 50,000 allocations; cyclic garbage waits a little
longer for it (objects without cycles are freed at once, as always). The previous
threshold comes back when the last run ends, unless somebody else changed it meanwhile;
a threshold set higher, or collection disabled (``gc.disable()``, threshold 0), is left
alone.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RUN_THRESHOLD", "fewer_collections"]

RUN_THRESHOLD = 50_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None  # the threshold to restore, if this module set it


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The block (a run's execution) with rarer young collections (module docstring)."""
    global _active, _saved
    with _lock:
        if _active == 0:
            current = gc.get_threshold()
            if 0 < current[0] < RUN_THRESHOLD:
                _saved = current
                gc.set_threshold(RUN_THRESHOLD, current[1], current[2])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if gc.get_threshold()[0] == RUN_THRESHOLD:  # nobody changed it meanwhile
                    gc.set_threshold(*_saved)
                _saved = None
