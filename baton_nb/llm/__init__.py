"""The LLM provider layer: one ``complete()`` over OpenAI(-compatible), Anthropic, Gemini
and an offline ``mock/`` provider, with normalised usage, cost, limits and in-call retries.

A leaf: imports only ``baton_nb._usage``, ``baton_nb._errors`` and ``baton_nb.pricing``.
"""

from __future__ import annotations

from ._client import aclose
from ._complete import complete
from ._config import configure, known_providers, reset_configuration
from ._neutral import Reasoning, ResponseFormat, Tool, ToolChoice
from ._redact import redact as redact_secrets
from ._tokens import estimate_tokens
from ._types import (
    Completion,
    FinishReason,
    Limit,
    LLMRequest,
    ToolCall,
    request_hash,
    split_model,
)

__all__ = [
    "Completion",
    "FinishReason",
    "LLMRequest",
    "Limit",
    "Reasoning",
    "ResponseFormat",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "aclose",
    "complete",
    "configure",
    "estimate_tokens",
    "known_providers",
    "redact_secrets",
    "request_hash",
    "reset_configuration",
    "split_model",
]
