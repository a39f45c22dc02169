"""Durations (``7d``, ``24h``) and points in time (``7d`` ago, ISO dates) from users."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .._errors import ConfigurationError

__all__ = ["as_duration", "as_time", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigurationError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 30m, 24h, 7d, 2w"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def as_duration(value: timedelta | str, what: str) -> timedelta:
    """A non-negative timedelta from a timedelta or a string like ``7d``."""
    if isinstance(value, str):
        value = parse_duration(value)
    if not isinstance(value, timedelta):
        raise ConfigurationError(
            f"{what} must be a datetime.timedelta or a string like '7d', got {value!r}"
        )
    if value < timedelta(0):
        raise ConfigurationError(f"{what} must not be negative, got {value}")
    return value


def as_time(value: datetime | timedelta | str | None, what: str) -> datetime | None:
    """An aware UTC datetime from a datetime (naive = local time), a timedelta or
    duration string (that long ago), or an ISO date/time string."""
    if value is None:
        return None
    if isinstance(value, str):
        if _DURATION.match(value):
            value = parse_duration(value)
        else:
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ConfigurationError(
                    f"invalid {what} {value!r}: use a duration like 7d or 24h, or a date "
                    "like 2025-06-14 or 2025-06-14T18:00"
                ) from None
    if isinstance(value, timedelta):
        return datetime.now(timezone.utc) - as_duration(value, what)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    raise ConfigurationError(
        f"{what} must be a datetime, a timedelta or a string like '7d', got {value!r}"
    )
