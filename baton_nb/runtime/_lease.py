"""The lease of a run: one executor at a time, taken over when its holder died.

The holder renews it every third of its time to live; a holder that cannot (another
process took the run over after the lease lapsed) stops executing. ``Lease.held`` says
whether the lease is surely still this process's by its own clock (taken or renewed less
than its time to live ago): a run's coordinator on a worker commits nothing once it is not
(``GroupCommit.fence``), a cheap early exit for one that was stalled past its lease
(paused, swapped out, the machine suspended: ``lease_clock`` counts suspend where it can).
What makes a late commit impossible is in the database: every commit of the run carries
the lease owner (``WriteBatch.owner``, set by ``GroupCommit``) and is written only while
the run's row names it, checked in the commit's own transaction and serialised against a
takeover (docs/workers.md "Failures"); a stall between the clock check and the commit
is covered by that.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial

import anyio

from .._errors import RunLocked
from .._owners import LIVE_OWNERS
from .._owners import holder_is_dead as _holder_is_dead
from ..store import ExecutionStore

__all__ = ["DEFAULT_LEASE_TTL", "Lease", "take_lease"]

DEFAULT_LEASE_TTL = 30.0
# Lease owners of executions alive in this process (``_owners``).
_LIVE_OWNERS = LIVE_OWNERS


def lease_clock() -> Callable[[], float]:
    """Seconds on a clock that also runs while the machine is suspended (a laptop asleep, a
    VM suspended): the event loop's (CLOCK_MONOTONIC on Linux) stops then, and a lease
    that lapsed during the sleep would look held on waking. Linux: CLOCK_BOOTTIME; macOS:
    clock_gettime(CLOCK_MONOTONIC), which counts sleep there; elsewhere ``time.monotonic``
    (whether it counts suspend is up to the platform)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return partial(time.clock_gettime, boottime)
    if sys.platform == "darwin":
        return partial(time.clock_gettime, time.CLOCK_MONOTONIC)
    return time.monotonic


class Lease:
    """This process's claim on runs: ``async with Lease() as lease`` for one execution."""

    def __init__(
        self, ttl: float = DEFAULT_LEASE_TTL, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = False
        self.clock = clock or lease_clock()
        # When the lease lapses, on ``clock``: from the start of the round trip that took
        # or renewed it (the stored expiry was computed before it was sent).
        self.valid_until = math.inf

    def held(self) -> bool:
        """Still this process's lease by its clock, with a tenth of its time to live to
        spare for a commit under way; False once ``lost``. An early exit before a commit;
        the commit itself is checked in the database (``WriteBatch.owner``)."""
        return not self.lost and self.clock() < self.valid_until - self.ttl / 10

    def __enter__(self) -> Lease:
        _LIVE_OWNERS.add(self.owner)
        return self

    def __exit__(self, *exc: object) -> None:
        _LIVE_OWNERS.discard(self.owner)

    async def keep(self, store: ExecutionStore, run_id: str, stopping: anyio.Event) -> None:
        """Renew the lease until ``stopping`` is set; raise ``RunLocked`` if it was lost."""
        while True:
            with anyio.move_on_after(self.ttl / 3):
                await stopping.wait()
            if stopping.is_set():
                return
            sent = self.clock()
            if await store.renew_lease(run_id, self.owner, self.ttl):
                self.valid_until = sent + self.ttl
            else:
                self.lost = True
                raise RunLocked(
                    f"run {run_id} lost its lease (another process took it over); "
                    "this execution stopped"
                )


async def take_lease(
    store: ExecutionStore,
    run_id: str,
    lease: Lease,
    holder: str | None,
    *,
    count_execution: bool = False,
) -> None:
    """Take the run's lease, from a dead holder too; ``RunLocked`` if a live one has it.
    ``count_execution``: count this execution in the run's row as the lease is taken."""
    sent = lease.clock()
    if await store.acquire_lease(run_id, lease.owner, lease.ttl, count_execution=count_execution):
        lease.valid_until = sent + lease.ttl
        return
    sent = lease.clock()
    if (
        holder
        and _holder_is_dead(holder)
        and await store.acquire_lease(
            run_id, lease.owner, lease.ttl, steal_from=holder, count_execution=count_execution
        )
    ):
        lease.valid_until = sent + lease.ttl
        return
    row = await store.get_run(run_id)
    holder = (row.lease_owner if row else None) or holder
    until = row.lease_expires_at if row else None
    raise RunLocked(
        f"run {run_id} is being executed by {holder} (lease until {until}); wait for it to "
        "finish, or for its lease to expire if that process died",
        run_id=run_id,
        owner=holder,
    )
