"""Remove API keys and auth headers from text and JSON before they go anywhere."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from ._config import known_secrets
from ._types import compact_json

__all__ = [
    "REDACTED",
    "Scrubber",
    "json_escaped",
    "redact",
    "redact_json",
    "redact_json_text",
    "redact_keys",
    "scrubber",
]

REDACTED = "[REDACTED]"

# Shapes that are secrets whatever their value: auth headers, bearer tokens,
# key= query parameters and the usual key prefixes. Group 1 is what is kept.
_SHAPES = (
    r"((?:authorization|x-api-key|x-goog-api-key|api-key)[\"']?\s*[:=]\s*[\"']?)"
    r"(?:bearer\s+)?[^\s\"',;&}]+",
    r"(bearer\s+)[a-z0-9._~+/=-]{4,}",
    r"([?&](?:key|api_key|apikey|access_token)=)[^&\s\"'#]+",
    r"()\b(?:sk|rk|pk)-(?:[a-z0-9_-]+-)?[a-z0-9_-]{16,}",
    r"()\bAIza[0-9a-z_-]{30,}",
)
_PATTERNS = tuple(re.compile(shape, re.IGNORECASE) for shape in _SHAPES)
# Every shape contains one of these (lower-cased): a cheap test before any regex runs.
_TRIGGERS = (
    "authorization",
    "api-key",
    "bearer",
    "key=",
    "access_token=",
    "sk-",
    "rk-",
    "pk-",
    "aiza",
)


# The triggers searched for in one pass each: "k-" stands for "sk-", "rk-" and "pk-", "="
# (a search for one character, the fastest) for "key=" and "access_token="; each is looked
# for only where its stand-in was found. A text has a trigger exactly when ``_has_shape``
# says so (every trigger holds its stand-in): ~1.3 us less a call for a 450-character
# answer than nine searches (tested against them).
_SEARCHED = (
    ("authorization", ()),
    ("bearer", ()),
    ("aiza", ()),
    ("api-key", ()),
    ("k-", ("sk-", "rk-", "pk-")),
    ("=", ("key=", "access_token=")),
)


def _has_shape(text: str) -> bool:
    lowered = text.lower()
    for searched, triggers in _SEARCHED:
        if searched in lowered:
            if not triggers:
                return True
            for trigger in triggers:
                if trigger in lowered:
                    return True
    return False


# The text between the '"' of a plain answer's encoding as the key scrub encodes it
# (``json.dumps``' default separators): {"role": "assistant", "content": ""}.
_MESSAGE_PIECES = ("{", "role", ": ", "assistant", ", ", "content", ": ", "}")


# Every character the compact encoding writes outside a JSON string: numbers (digits, sign,
# point, exponent; NaN, Infinity), true, false, null and the punctuation.
_OUTSIDE_STRINGS = frozenset("0123456789+-.eEInfinityNaNtruefalsenull{}[],:")
# Each trigger has a character that no text outside a string has, lower-cased, and no '"':
# a trigger found in an encoding lies inside one of its strings (tested).


def _inside_strings(secret: str) -> bool:
    """Whether every match of ``secret`` in a JSON encoding lies inside one string's
    encoded characters: it has no '"' or '\\' and a character that no text outside a
    string has."""
    return '"' not in secret and "\\" not in secret and not set(secret) <= _OUTSIDE_STRINGS


def json_escaped(secret: str) -> str:
    """How a JSON encoding of this package (``ensure_ascii=False``: ``compact_json``, the
    stores' encoder, ``json.dumps(..., ensure_ascii=False)``) writes ``secret`` inside a
    string: '"', '\\' and the control characters escaped, each the same wherever it
    stands (JSON escapes a character at a time), so a string holding the secret is
    written holding this text."""
    return json.dumps(secret, ensure_ascii=False)[1:-1]


def _alternation(secrets: set[str]) -> re.Pattern[str] | None:
    ordered = sorted(secrets, key=len, reverse=True)  # the longest of overlapping ones
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED


class Scrubber:
    """Redaction for one set of known secrets (compiled once, reused per call)."""

    def __init__(self, secrets: frozenset[str]) -> None:
        ordered = sorted(secrets, key=len, reverse=True)
        escaped = {json_escaped(s) for s in ordered}
        # In JSON text (an encoding searched or scrubbed as text) a key with a '"', a '\\'
        # or a control character is written escaped: searched for as written there, and
        # as a string holding it escaped is (a traceback's repr of it, or its JSON). In
        # other text (answers, messages, error snippets that may hold a body), as either.
        held = {json_escaped(e) for e in escaped | {repr(s)[1:-1] for s in ordered}}
        self._json_secrets = _alternation(escaped | held)
        self._secrets = (
            self._json_secrets if escaped == set(ordered) else _alternation(escaped | secrets)
        )
        # No key has a '"' (so none spans two JSON strings), and none is found in the fixed
        # text of a plain answer's message, ``{"role": "assistant", "content": "..."}``: its
        # keys are the ones in its content (``_complete._message_keys``).
        self.plain_keys = all('"' not in s for s in ordered) and not any(
            s in piece for s in ordered for piece in _MESSAGE_PIECES
        )
        # Whether a JSON text as received may be checked instead of the value's compact
        # encoding (``json_encoded``'s ``received``).
        self._received_ok = all(map(_inside_strings, ordered))

    @property
    def has_secrets(self) -> bool:
        """Whether any key value is known (else :meth:`keys` changes nothing)."""
        return self._secrets is not None

    def keys(self, text: str) -> str:
        """Only the known key values replaced (for model output, where an ``api_key=...``
        in a code sample is content, not a secret)."""
        if self._secrets is None or not text:
            return text
        return self._secrets.sub(REDACTED, text)

    def keys_json(self, text: str) -> str:
        """:meth:`keys` of a JSON text: the keys as the encoding writes them (escaped) are
        replaced, so it stays JSON that decodes to the value with the keys replaced."""
        if self._json_secrets is None or not text:
            return text
        return self._json_secrets.sub(REDACTED, text)

    def text(self, text: str) -> str:
        """Known key values and every secret-shaped token replaced."""
        return self._shapes(self.keys(text))

    def json_text(self, text: str) -> str:
        """:meth:`text` of a JSON text (:meth:`keys_json`, then the shapes)."""
        return self._shapes(self.keys_json(text))

    @staticmethod
    def _shapes(text: str) -> str:
        if not text or not _has_shape(text):
            return text
        for shape in _PATTERNS:
            text = shape.sub(_keep_prefix, text)
        return text

    def json(self, value: Any) -> Any:
        """A JSON value with :meth:`text` applied to every string (keys too); returned as
        is when nothing in it needs redacting (the common case), else a copy."""
        return self.json_encoded(value)[0]

    def json_encoded(self, value: Any, received: str | None = None) -> tuple[Any, str | None]:
        """:meth:`json`, and the value's compact JSON (``ensure_ascii=False``, separators
        ``(",", ":")``, as the replay store writes it) when it is returned as is: the
        check's encoding, for the caller to store instead of encoding it again. ``None``
        when the value was redacted or is not plain JSON.

        ``received``: the JSON text ``value`` was decoded from (a response body), checked
        and returned instead of encoding ``value`` when it has no ``\\u`` and no ``\\/``
        escape: then every string of the value, keys too, is written in it exactly as the
        compact encoding writes it. That encoding writes a character as is but for '"',
        '\\' and the control characters, and escapes those as JSON's short escapes
        (``\\"``, ``\\\\``, ``\\n``, ``\\t``...) where it has one, else as ``\\u``;
        a text without ``\\u`` nor ``\\/`` can write them no other way (an answer's
        newlines are the common case). A known key (``_inside_strings``) or a trigger found
        in the compact encoding lies inside one of its strings, so it is found in
        ``received`` too; nothing found there, the compact encoding's check would find
        nothing either, and the value is returned as is, with ``received``, which decodes
        to the same value. Anything found: the check of the compact encoding, as without
        it. Tested in tests/unit/test_redact_received.py.
        """
        if (
            received is not None
            and self._received_ok
            and "\\u" not in received
            and "\\/" not in received
            and (self._json_secrets is None or self._json_secrets.search(received) is None)
            and not _has_shape(received)
        ):
            return value, received
        try:
            flat: str | None = compact_json(value)
            text = flat
        except (TypeError, ValueError):
            flat, text = None, json.dumps(value, ensure_ascii=False, default=str)
        assert text is not None
        found = self._json_secrets
        has_secret = found is not None and found.search(text) is not None
        if not has_secret and not _has_shape(text):
            return value, flat
        return self._walk(value), None

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self._walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v) for v in value]
        return value


@lru_cache(maxsize=8)
def _scrubber(secrets: frozenset[str]) -> Scrubber:
    return Scrubber(secrets)


def scrubber() -> Scrubber:
    """The scrubber for the keys configured or present in the environment right now."""
    return _scrubber(known_secrets())


def redact(text: str) -> str:
    """``text`` with every configured key value and auth-looking token replaced."""
    return scrubber().text(text)


def redact_json_text(text: str) -> str:
    """:func:`redact` of a JSON text: the keys found as the encoding writes them."""
    return scrubber().json_text(text)


def redact_keys(text: str) -> str:
    """``text`` with only the configured key values replaced."""
    return scrubber().keys(text)


def redact_json(value: Any) -> Any:
    """A JSON value with :func:`redact` applied to every string."""
    return scrubber().json(value)
