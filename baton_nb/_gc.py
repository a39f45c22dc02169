"""The garbage collector while runs execute or LLM calls are in flight: collections
rarer (issue 16).

A run keeps a node, its step info, its usage and its call record alive per call, and each
call makes a few hundred short-lived containers. With the default threshold (a young
collection every 700 allocations, a full one every 100 young ones once the heap grew by a
quarter) a 20,000-call run at 1,000 in flight spent about a third of its CPU in the
collector: ~30 full collections, each walking the whole heap; ``llm.complete`` used alone
(no run) spent ~0.12-0.15 ms a call of its ~0.4-0.6 in it at 200 in flight. While any run
executes in this process, or any call of ``llm.complete`` is in flight, the youngest
generation's threshold is ``RUN_THRESHOLD`` (a young collection every 200,000 net
allocations) and the oldest generation's at least ``RUN_OLDEST`` (a full collection
after 1,000 collections of the middle generation instead of 10: none in a run of
ordinary size); the middle one's is unchanged.

Why those figures (docs/performance.md, "Seventh round"): at 1,000 calls in flight the
calls' own coroutine stacks are ~60,000 live container objects (~17 coroutines a call),
and every young collection walks them all again: at 50,000 (the threshold before) a
20,000-call run made ~18 young collections, ~15 % of its CPU; above the in-flight
population the count rarely reaches the threshold (1-2 collections a run). A full
collection walks the whole heap (the process's imports, the pricing data: 0.1-0.6 s);
one that fell due before a run went off at the run's first young collection, with every
call in flight waiting on it: it now waits for the run's end. Cyclic garbage waits longer
for a collection (objects without cycles are freed at once, as always; the runtime's own
path makes almost none). The previous thresholds come back when the last run or call
ends, unless somebody else changed them meanwhile; a young threshold set higher, or
collection disabled (``gc.disable()``, threshold 0), is left alone (all three). Threads
share the count (the collector is the process's). A call abandoned while in flight (its
event loop stopped with the call pending, its coroutine never closed) never ends: the
raised thresholds then stay for the process's life. That costs only when cyclic garbage
is collected (rarer collections), never correctness; a cancelled call ends normally.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "RUN_OLDEST",
    "RUN_THRESHOLD",
    "fewer_collections",
    "fewer_collections_begin",
    "fewer_collections_end",
]

RUN_THRESHOLD = 200_000
RUN_OLDEST = 1_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None  # the thresholds to restore, if this module set them
_set: tuple[int, int, int] | None = None  # the thresholds it set (while ``_saved``)


def fewer_collections_begin() -> None:
    """One more user of the raised thresholds (raised by the first); pair with
    :func:`fewer_collections_end` in a ``finally`` (what :func:`fewer_collections` does,
    without a generator context manager's ~1.5 us: ``complete`` calls it per call)."""
    global _active, _saved, _set
    with _lock:
        if _active == 0:
            current = gc.get_threshold()
            if 0 < current[0] < RUN_THRESHOLD:
                _saved = current
                _set = (RUN_THRESHOLD, current[1], max(current[2], RUN_OLDEST))
                gc.set_threshold(*_set)
        _active += 1


def fewer_collections_end() -> None:
    """One user fewer; the last one restores the thresholds it found (unless changed since)."""
    global _active, _saved, _set
    with _lock:
        _active -= 1
        if _active == 0 and _saved is not None:
            if gc.get_threshold() == _set:  # nobody changed them meanwhile
                gc.set_threshold(*_saved)
            _saved = _set = None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The block (a run's execution) with rarer collections (module docstring)."""
    fewer_collections_begin()
    try:
        yield
    finally:
        fewer_collections_end()
