"""Per-provider limits shared by every run in the process.

Concurrency is a semaphore (one per event loop, since loop-bound primitives
cannot cross loops); requests/minute and tokens/minute are token buckets
that do not depend on any loop. A bucket holds one minute's allowance and
refills continuously; a caller reserves what it needs (the balance may go
negative) and sleeps for the deficit, so waiters are served in arrival
order without polling.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from ._client import loop_key
from ._config import configured_limits, limits_version
from ._types import Limit

__all__ = ["CLOCK", "Clock", "Permit", "TokenBucket", "acquire", "limit_for"]


@dataclass(frozen=True)
class Clock:
    """Where the limits read the time and wait: the real clock, or a test's."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep


CLOCK = Clock()  # limiters made after a change of this (tests) use the new one


class TokenBucket:
    """A per-minute allowance refilled continuously; reservations may overdraw."""

    def __init__(self, per_minute: int, clock: Clock | None = None) -> None:
        self.clock = clock or CLOCK
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = self.clock.now()

    def _refill(self) -> None:
        now = self.clock.now()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, amount: float) -> float:
        """Take ``amount`` (capped at one minute's allowance); return seconds to wait."""
        self._refill()
        self.level -= min(float(amount), self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def adjust(self, delta: float) -> None:
        """Give back (``delta`` > 0) or take more (``delta`` < 0) after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level + delta)


class _ProviderLimiter:
    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.rpm = TokenBucket(limit.rpm, CLOCK) if limit.rpm else None
        self.tpm = TokenBucket(limit.tpm, CLOCK) if limit.tpm else None
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


def _limiter(provider: str) -> _ProviderLimiter | None:
    global _registry, _registry_version
    if limits_version() != _registry_version:
        version, limits = configured_limits()
        _registry = {name: _ProviderLimiter(limit) for name, limit in limits.items()}
        _registry_version = version
    return _registry.get(provider)


def limit_for(provider: str) -> Limit | None:
    limiter = _limiter(provider)
    return limiter.limit if limiter else None


async def _take(bucket: TokenBucket | None, amount: float) -> None:
    if bucket is None or amount <= 0:
        return
    wait = bucket.reserve(amount)
    try:
        if wait > 0:
            await bucket.clock.sleep(wait)
    except BaseException:
        bucket.adjust(min(float(amount), bucket.capacity))
        raise


class Permit:
    """Held while a call runs: one rpm token per HTTP attempt, tpm corrected at the end."""

    def __init__(self, limiter: _ProviderLimiter | None, estimated_tokens: int) -> None:
        self._limiter = limiter
        self._estimated = estimated_tokens

    async def attempt(self) -> None:
        """Wait for a request slot in the requests/minute bucket."""
        if self._limiter is not None:
            await _take(self._limiter.rpm, 1)

    def correct(self, actual_tokens: int) -> None:
        """Replace the token estimate with what the provider reported."""
        if self._limiter is not None and self._limiter.tpm is not None:
            reserved = min(float(self._estimated), self._limiter.tpm.capacity)
            self._limiter.tpm.adjust(reserved - actual_tokens)


@asynccontextmanager
async def acquire(provider: str, estimated_tokens: int) -> AsyncIterator[Permit]:
    """Hold a concurrency slot and reserve ``estimated_tokens`` for ``provider``."""
    limiter = _limiter(provider)
    if limiter is None:
        yield Permit(None, 0)
        return
    semaphore = limiter.semaphore()
    if semaphore is None:
        await _take(limiter.tpm, estimated_tokens)
        yield Permit(limiter, estimated_tokens)
        return
    async with semaphore:
        await _take(limiter.tpm, estimated_tokens)
        yield Permit(limiter, estimated_tokens)
