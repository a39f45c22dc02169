"""Single-flight for the response cache (DESIGN §11): identical cacheable calls in flight
together in this process are paid once.

The first call of a cache key (in one database) leads: it looks the key up and, on a miss,
is sent. An identical call that comes while it is in flight waits for it to end, then
looks the cache up again: the leader's answer is there (a hit: cost 0, recorded as cached
with what it saved). If the leader failed or was cancelled, nothing was stored: one
waiting call leads the next try (an error is never shared), the others wait for it. A
call waits at most its request's timeout, then is sent on its own.

Per process and per thread (an event loop): calls of other processes (workers) on the
same database are not waited for.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

__all__ = ["single_flight"]

# (thread, database URL, cache key) -> set when the call that leads it has ended
_FLIGHTS: dict[tuple[int, str, str], anyio.Event] = {}


@asynccontextmanager
async def single_flight(db_url: str, digest: str, wait: Callable[[], float]) -> AsyncIterator[None]:
    """Enter once no identical call (same ``digest`` in the database ``db_url``) is in
    flight here, leading it: the body looks the cache up, then sends on a miss. A call
    waits at most ``wait()`` seconds (its request's timeout), then enters on its own."""
    slot = (threading.get_ident(), db_url, digest)
    if slot in _FLIGHTS:  # an identical call is in flight (the timeout read only then)
        with anyio.move_on_after(wait()):
            # The leader ended: answered (the next leader finds its answer stored), or
            # failed or was cancelled: the first waiter to run leads the next try, the
            # others wait again.
            while (flight := _FLIGHTS.get(slot)) is not None:
                await flight.wait()
        if slot in _FLIGHTS:  # waited its timeout: sent on its own, leading nobody
            yield
            return
    done = _FLIGHTS[slot] = anyio.Event()
    try:
        yield
    finally:
        del _FLIGHTS[slot]
        done.set()
