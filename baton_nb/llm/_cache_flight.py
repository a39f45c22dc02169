"""Single-flight for the response cache (DESIGN §11): identical cacheable calls in flight
together in this process are paid once.

The first call of a cache key (in one database) leads: it looks the key up and, on a miss,
is sent. An identical call that comes while it is in flight waits for it to end, then
looks the cache up again: the leader's answer is there (a hit: cost 0, recorded as cached
with what it saved). If the leader failed or was cancelled, nothing was stored: one
waiting call leads the next try (an error is never shared), the others wait for it. A
call waits as long as the leader works, with no cap of its own: a leader may rightly take
longer than its request's timeout (retries, a stream whose timeout bounds each chunk, a
wait for budget room), and a waiter that stopped waiting would pay for the same answer
again. A waiter cancelled (its step's timeout, the run's end) stops waiting at once.

Per process and per event loop: calls of other processes (workers) on the same database
are not waited for, nor a leader left in another loop (one abandoned unclosed, after a
KeyboardInterrupt out of ``run_until_complete``: its call will never end), which a new
loop of the same thread would otherwise wait for for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel

__all__ = ["single_flight"]

# (event loop, database URL, cache key) -> set when the call that leads it has ended. The
# key holds the loop itself (asyncio's loop, trio's token), not its id: an id is reused
# once its loop is gone, and a new loop would then find the old one's flights.
_FLIGHTS: dict[tuple[object, str, str], anyio.Event] = {}


@asynccontextmanager
async def single_flight(db_url: str, digest: str) -> AsyncIterator[None]:
    """Enter once no identical call (same ``digest`` in the database ``db_url``) is in
    flight here, leading it: the body looks the cache up, then sends on a miss. A call
    waits for the leader to end, however long it takes (cancelling it stops the wait)."""
    token = anyio.lowlevel.current_token()
    # anyio >= 4.11 wraps the loop in an EventLoopToken; earlier ones return the loop itself
    slot = (getattr(token, "native_token", token), db_url, digest)
    # The leader ended: answered (the next leader finds its answer stored), or failed or
    # was cancelled: the first waiter to run leads the next try, the others wait again.
    while (flight := _FLIGHTS.get(slot)) is not None:
        await flight.wait()
    done = _FLIGHTS[slot] = anyio.Event()
    try:
        yield
    finally:
        del _FLIGHTS[slot]
        done.set()
