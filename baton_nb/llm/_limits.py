"""Per-provider limits shared by every run in the process (a worker process shares them
with all workers instead: ``share_limits``, ``runtime/_shared_limits.py``).

Concurrency is a semaphore (one per event loop, since loop-bound primitives cannot cross
loops). Requests/minute and tokens/minute are sliding windows that do not depend on any
loop: no 60-second window ever holds more than the limit, which is what a provider that
counts a strict minute checks (a token bucket that starts full and refills lets up to
twice the limit through in a minute). A caller reserves what it needs and is given the
earliest moment that keeps every window within the limit, in arrival order, then sleeps
until then: no polling. A provider's Retry-After is learnt too: no request to it before
the moment it asked for.

Time comes from a ``LimiterClock`` (monotonic seconds and a sleep): tests inject one.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from ._client import loop_key
from ._config import configured_limits, limits_version
from ._types import Limit

__all__ = [
    "MARGIN",
    "WINDOW",
    "Grant",
    "LimiterClock",
    "Permit",
    "SharedLimits",
    "SlidingWindow",
    "acquire",
    "cooldown_remaining",
    "learn_retry_after",
    "limit_for",
    "set_clock",
    "share_limits",
    "wait_for_cooldown",
]

WINDOW = 60.0  # seconds: rpm and tpm are counted over any window this long
# A grant counts a little longer than the window: the provider's clock sees requests a
# network latency later, and that latency varies; two requests sent 60.0 s apart can
# arrive 59.9 s apart and land in one of its windows.
MARGIN = 0.25
_HOLD = WINDOW + MARGIN


class LimiterClock(Protocol):
    """Where limits read the time and wait (monotonic seconds)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


_clock: LimiterClock = _MonotonicClock()


def set_clock(clock: LimiterClock | None) -> LimiterClock:
    """Use ``clock`` for every limit (``None``: the monotonic clock); returns the previous.

    For tests, which move a virtual clock instead of waiting minutes.
    """
    global _clock
    previous = _clock
    _clock = clock if clock is not None else _MonotonicClock()
    return previous


@dataclass(eq=False)
class Grant:
    """A reservation: ``amount`` counted at time ``at`` (``live`` while still counted)."""

    at: float
    amount: float
    live: bool = True


class SlidingWindow:
    """At most ``limit`` units in any ``WINDOW`` seconds, granted in arrival order.

    Grants are kept oldest first with their running total; each counts for ``WINDOW +
    MARGIN`` seconds. A reservation of ``amount`` is granted at the earliest time ``t``
    (not before the previous grant: arrival order) at which the grants still counting at
    ``t`` plus ``amount`` fit in ``limit``. So any grants less than that apart were all
    counted together, and no 60 s window holds more than ``limit``. A grant that stopped
    counting is dropped for good: every later grant comes at ``t`` or after. Each grant
    is added and dropped once.
    """

    def __init__(self, limit: int, hold: float = _HOLD) -> None:
        self.limit = float(limit)
        self.hold = hold
        self._grants: deque[Grant] = deque()
        self._total = 0.0  # amounts of the grants kept
        self._last = -math.inf  # time of the latest grant

    @classmethod
    def plan(
        cls,
        limit: int,
        hold: float,
        grants: Sequence[tuple[float, float]],
        now: float,
        amount: float,
    ) -> tuple[float, float]:
        """The same rule over stored grants (the workers' shared limits): given the grants
        still counting as (at, amount), oldest first, the (at, amount) of the next one."""
        window = cls(limit, hold)
        for at, counted in grants:
            window._grants.append(Grant(at, counted))
            window._total += counted
            window._last = max(window._last, at)
        grant = window.reserve(amount, now)
        return grant.at, grant.amount

    def reserve(self, amount: float, now: float) -> Grant:
        """Count ``amount`` (capped at ``limit``: more could never fit) at the earliest
        time that keeps every window within the limit; ``grant.at - now`` is the wait."""
        amount = min(float(amount), self.limit)
        at = max(now, self._last)
        grants = self._grants
        while grants and (grants[0].at + self.hold <= at or self._total + amount > self.limit):
            oldest = grants.popleft()
            oldest.live = False
            self._total -= oldest.amount
            at = max(at, oldest.at + self.hold)  # no window ending at `at` holds it
        if not grants:
            self._total = 0.0  # no float drift left over from corrections
        grant = Grant(at, amount)
        grants.append(grant)
        self._total += amount
        self._last = at
        return grant

    def correct(self, grant: Grant, amount: float) -> None:
        """The grant turned out to count ``amount`` (reported usage, or 0 if it was never
        used). A grant already out of every future window changes nothing."""
        if grant.live:
            self._total += float(amount) - grant.amount
            grant.amount = float(amount)


class _ProviderLimiter:
    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.rpm = SlidingWindow(limit.rpm) if limit.rpm else None
        self.tpm = SlidingWindow(limit.tpm) if limit.tpm else None
        self._semaphores: weakref.WeakKeyDictionary[Any, anyio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def semaphore(self) -> anyio.Semaphore | None:
        if not self.limit.concurrency:
            return None
        key = loop_key()
        sem = self._semaphores.get(key)
        if sem is None:
            sem = anyio.Semaphore(self.limit.concurrency)
            self._semaphores[key] = sem
        return sem


_registry: dict[str, _ProviderLimiter] = {}
_registry_version = -1
# provider -> clock time before which no request goes to it (its last Retry-After); for
# every provider, limited or not. Forgotten when the configuration changes.
_cooldowns: dict[str, float] = {}


def _limiter(provider: str) -> _ProviderLimiter | None:
    _refresh()
    return _registry.get(provider)


def _refresh() -> None:
    global _registry, _registry_version
    if limits_version() != _registry_version:
        version, limits = configured_limits()
        _registry = {name: _ProviderLimiter(limit) for name, limit in limits.items()}
        _cooldowns.clear()
        _registry_version = version


def limit_for(provider: str) -> Limit | None:
    limiter = _limiter(provider)
    return limiter.limit if limiter else None


def learn_retry_after(provider: str, seconds: float) -> None:
    """The provider asked for ``seconds`` of quiet (Retry-After): no request to it before
    then, from any call of this process."""
    if not (seconds > 0 and math.isfinite(seconds)):
        return
    _refresh()
    until = _clock.now() + seconds
    _cooldowns[provider] = max(until, _cooldowns.get(provider, -math.inf))


def cooldown_remaining(provider: str) -> float:
    """Seconds until ``provider``'s last Retry-After has passed (0 when it has)."""
    _refresh()
    until = _cooldowns.get(provider)
    if until is None:
        return 0.0
    remaining = until - _clock.now()
    if remaining <= 0:
        del _cooldowns[provider]
        return 0.0
    return remaining


async def wait_for_cooldown(provider: str) -> None:
    """Sleep until ``provider``'s Retry-After has passed (at once if it has)."""
    remaining = cooldown_remaining(provider)
    while remaining > 0:  # a later Retry-After may have moved it while this one slept
        await _clock.sleep(remaining)
        remaining = cooldown_remaining(provider)


async def _take(window: SlidingWindow | None, amount: float) -> Grant | None:
    if window is None or amount <= 0:
        return None
    now = _clock.now()
    grant = window.reserve(amount, now)
    try:
        if grant.at > now:
            await _clock.sleep(grant.at - now)
    except BaseException:
        window.correct(grant, 0)  # cancelled while waiting: never sent
        raise
    return grant


class Permit:
    """Held while a call runs: one rpm grant per HTTP attempt, tpm corrected at the end."""

    def __init__(
        self,
        limiter: _ProviderLimiter | None,
        estimated_tokens: int,
        tokens: Grant | None = None,
    ) -> None:
        self._limiter = limiter
        self._estimated = estimated_tokens
        self._tokens = tokens

    async def attempt(self) -> None:
        """Wait for a request slot in the requests/minute window."""
        if self._limiter is not None:
            await _take(self._limiter.rpm, 1)

    def correct(self, actual_tokens: int) -> None:
        """Replace the token estimate with what the provider reported."""
        limiter = self._limiter
        if limiter is not None and limiter.tpm is not None and self._tokens is not None:
            limiter.tpm.correct(self._tokens, actual_tokens)


class SharedLimits(Protocol):
    """Limits held by every process together (the workers, through Postgres): a worker
    sets one with ``share_limits``; in-process runs keep the limiter above."""

    async def reserve(
        self, provider: str, kind: str, limit: int, amount: float
    ) -> tuple[int, float]:
        """Admit ``amount`` to ``provider``'s ``kind`` ('rpm' | 'tpm') sliding window: the
        grant's id and the seconds to wait before using it."""
        ...

    async def correct(self, grant: int, amount: float) -> None: ...

    async def take_slot(self, provider: str, limit: int) -> int:
        """Wait for one of ``limit`` concurrency slots of ``provider``: its id."""
        ...

    async def free_slot(self, slot: int) -> None: ...


_shared: SharedLimits | None = None


def share_limits(shared: SharedLimits | None) -> SharedLimits | None:
    """Hold every ``bn.Limit`` through ``shared`` (``None``: in this process); returns the
    previous. A worker process calls it while it serves."""
    global _shared
    previous = _shared
    _shared = shared
    return previous


async def _take_shared(
    shared: SharedLimits, provider: str, kind: str, limit: int, amount: float
) -> int:
    grant, wait = await shared.reserve(provider, kind, limit, amount)
    try:
        if wait > 0:
            await anyio.sleep(wait)  # the database's clock: real seconds
    except BaseException:
        with anyio.CancelScope(shield=True):
            await shared.correct(grant, 0)  # cancelled while waiting: never sent
        raise
    return grant


class _SharedPermit(Permit):
    """A permit of the shared limits: one rpm grant per HTTP attempt; the tpm correction
    is kept and written when the call lets go of its permit."""

    def __init__(self, shared: SharedLimits, provider: str, limit: Limit) -> None:
        super().__init__(None, 0)
        self._shared = shared
        self._provider = provider
        self._limit = limit
        self.actual_tokens: int | None = None

    async def attempt(self) -> None:
        if self._limit.rpm:
            await _take_shared(self._shared, self._provider, "rpm", self._limit.rpm, 1)

    def correct(self, actual_tokens: int) -> None:
        self.actual_tokens = actual_tokens


@asynccontextmanager
async def _acquire_shared(
    shared: SharedLimits, provider: str, limit: Limit, estimated_tokens: int
) -> AsyncIterator[Permit]:
    slot = await shared.take_slot(provider, limit.concurrency) if limit.concurrency else None
    try:
        tokens = None
        if limit.tpm and estimated_tokens > 0:
            tokens = await _take_shared(shared, provider, "tpm", limit.tpm, estimated_tokens)
        permit = _SharedPermit(shared, provider, limit)
        try:
            yield permit
        finally:
            if tokens is not None and permit.actual_tokens is not None:
                with anyio.CancelScope(shield=True):
                    await shared.correct(tokens, permit.actual_tokens)
    finally:
        if slot is not None:
            with anyio.CancelScope(shield=True):
                await shared.free_slot(slot)


@asynccontextmanager
async def acquire(provider: str, estimated_tokens: int) -> AsyncIterator[Permit]:
    """Hold a concurrency slot and reserve ``estimated_tokens`` for ``provider``."""
    limiter = _limiter(provider)
    if limiter is None:
        yield Permit(None, 0)
        return
    if _shared is not None:
        async with _acquire_shared(_shared, provider, limiter.limit, estimated_tokens) as permit:
            yield permit
        return
    semaphore = limiter.semaphore()
    if semaphore is None:
        grant = await _take(limiter.tpm, estimated_tokens)
        yield Permit(limiter, estimated_tokens, grant)
        return
    async with semaphore:
        grant = await _take(limiter.tpm, estimated_tokens)
        yield Permit(limiter, estimated_tokens, grant)
