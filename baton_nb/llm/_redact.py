"""Remove API keys and auth headers from text and JSON before they go anywhere."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ._config import known_secrets

__all__ = ["REDACTED", "redact", "redact_json"]

REDACTED = "[REDACTED]"

# Shapes that are secrets whatever their value: auth headers, bearer tokens,
# key= query parameters and the usual key prefixes.
_PATTERNS = (
    re.compile(
        r"(?i)((?:authorization|x-api-key|x-goog-api-key|api-key)\"?'?\s*[:=]\s*\"?'?)"
        r"(?:bearer\s+)?[^\s\"',;&}]+"
    ),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)([?&](?:key|api_key|apikey|access_token)=)[^&\s\"'#]+"),
    re.compile(r"()\b(?:sk|rk|pk)-(?:[A-Za-z0-9_-]+-)?[A-Za-z0-9_-]{16,}"),
    re.compile(r"()\bAIza[0-9A-Za-z_-]{30,}"),
)


@lru_cache(maxsize=8)
def _secrets_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered))


def _apply(text: str, secrets: re.Pattern[str] | None) -> str:
    if not text:
        return text
    if secrets is not None:
        text = secrets.sub(REDACTED, text)
    for shape in _PATTERNS:
        text = shape.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact(text: str) -> str:
    """``text`` with every configured key value and auth-looking token replaced."""
    return _apply(text, _secrets_pattern(frozenset(known_secrets())))


def _walk(value: Any, secrets: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _apply(value, secrets)
    if isinstance(value, dict):
        return {_apply(str(k), secrets): _walk(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, secrets) for v in value]
    return value


def redact_json(value: Any) -> Any:
    """A copy of a JSON value with :func:`redact` applied to every string (keys too)."""
    return _walk(value, _secrets_pattern(frozenset(known_secrets())))
