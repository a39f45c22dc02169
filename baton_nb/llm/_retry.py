"""In-call retries: Retry-After or jittered exponential backoff, bounded."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from baton_nb._errors import ProviderError

from ._config import RetrySettings
from ._limits import cooldown_remaining, learn_retry_after, wait_for_cooldown
from ._redact import redact
from ._wire import RetryableFailure

__all__ = [
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "is_retryable_status",
    "parse_retry_after",
    "retry_hint_from_body",
]

logger = logging.getLogger("baton_nb.llm")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
T = TypeVar("T")


def is_retryable_status(status: int, headers: Mapping[str, str] | None = None) -> bool:
    """429, 408, 409 and 5xx are worth another try; ``x-should-retry`` overrides."""
    hint = (headers or {}).get("x-should-retry", "").strip().lower()
    if hint in ("true", "false"):
        return hint == "true"
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _duration(value: Any) -> float | None:
    """A protobuf ``Duration``: ``"37s"``, ``"1.5s"`` (JSON) or ``{"seconds", "nanos"}``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict) and ("seconds" in value or "nanos" in value):
        try:
            return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def retry_hint_from_body(content: bytes) -> float | None:
    """Seconds to wait from an error body: Google's ``google.rpc.RetryInfo.retryDelay``
    in ``error.details`` (Gemini's 429 and 503 answers). ``None`` when there is none."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, list) and data:  # some Google endpoints wrap the error in a list
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            seconds = _duration(detail.get("retryDelay"))
            if seconds is not None:
                return max(0.0, seconds)
    return None


def backoff_delay(attempt: int, settings: RetrySettings) -> float:
    """Exponential in ``attempt`` (0-based), capped, with up to 50 % jitter off."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2.0**attempt)
    return ceiling * (0.5 + random.random() / 2)


async def with_retries(
    provider: str,
    settings: RetrySettings,
    attempt_fn: Callable[[], Awaitable[T]],
) -> T:
    """Run ``attempt_fn`` until it succeeds, fails for good, or retries run out.

    A Retry-After (header or body hint) is handed to the provider's limiter, so that no
    request of any call goes to that provider before it has passed; this call waits for
    it too, unless that is longer than ``max_wait``: then it stops at once with a
    retryable ``ProviderError`` whose ``retry_after`` the step's next attempt waits out.
    """
    attempts = settings.max_retries + 1
    last: RetryableFailure | None = None
    for attempt in range(attempts):
        if cooldown_remaining(provider) > 0:  # else nothing to wait for: no coroutine
            await _respect_retry_after(provider, settings, last)
        try:
            return await attempt_fn()
        except RetryableFailure as failure:
            last = failure
            if failure.retry_after is not None:
                learn_retry_after(provider, failure.retry_after)
        if attempt + 1 == attempts:
            break
        if last.retry_after is not None:
            delay = cooldown_remaining(provider)  # waited in _respect_retry_after
        else:
            delay = min(backoff_delay(attempt, settings), settings.max_wait)
        logger.warning(
            "%s: %s; retry %d/%d in %.2f s",
            provider,
            redact(last.message),
            attempt + 1,
            settings.max_retries,
            delay,
        )
        if last.retry_after is None:
            await anyio.sleep(delay)
    assert last is not None
    message = f"{redact(last.message)} (gave up after {attempts} attempt{'s' * (attempts > 1)})"
    hint = cooldown_remaining(provider) if last.retry_after is not None else None
    raise ProviderError(
        provider, last.status, message, retryable=True, retry_after=hint or last.retry_after
    )


async def _respect_retry_after(
    provider: str, settings: RetrySettings, last: RetryableFailure | None
) -> None:
    """Wait out the provider's Retry-After, or refuse to if it is longer than max_wait."""
    remaining = cooldown_remaining(provider)
    if remaining > settings.max_wait:
        said = f": {redact(last.message)}" if last is not None else ""
        raise ProviderError(
            provider,
            last.status if last is not None else 429,
            f"asked to wait {remaining:.3g} s (Retry-After) before the next request{said}",
            retryable=True,
            retry_after=remaining,
        )
    await wait_for_cooldown(provider)
