"""Which batch API serves a ``provider/model`` (the wire modules, by endpoint kind)."""

from __future__ import annotations

from collections.abc import Callable

from baton_nb._errors import ConfigurationError

from ._batch import BatchApi
from ._config import Endpoint, resolve_endpoint
from ._types import split_model

__all__ = ["batch_api"]

# Builtin endpoints that speak a chat API but no batch API: refused before anything is sent.
_NO_BATCH_API = frozenset({"openrouter", "ollama", "llamacpp", "vllm"})


def batch_api(model: str) -> tuple[Endpoint, str, BatchApi]:
    """The endpoint, model name and batch API of a ``provider/model``; a provider without a
    batch API is a ``ConfigurationError`` naming it (nothing is sent)."""
    provider, name = split_model(model)
    endpoint = resolve_endpoint(provider)
    if endpoint.name in _NO_BATCH_API or endpoint.kind not in _APIS:
        raise ConfigurationError(
            f"{model!r}: provider {endpoint.name!r} has no batch API baton_nb can use "
            "(OpenAI, Anthropic, Gemini and OpenAI-compatible servers with /v1/files and "
            "/v1/batches do); drop batch=True from the step or call another provider"
        )
    return endpoint, name, _APIS[endpoint.kind]()


def _openai() -> BatchApi:
    from ._batch_openai import OpenAIBatches

    return OpenAIBatches()


def _responses() -> BatchApi:
    from ._batch_openai import OpenAIBatches

    return OpenAIBatches(responses=True)


def _anthropic() -> BatchApi:
    from ._batch_anthropic import AnthropicBatches

    return AnthropicBatches()


def _gemini() -> BatchApi:
    from ._batch_gemini import GeminiBatches

    return GeminiBatches()


def _mock() -> BatchApi:
    from ._batch_mock import MockBatches

    return MockBatches()


_APIS: dict[str, Callable[[], BatchApi]] = {
    "openai": _openai,
    "responses": _responses,
    "anthropic": _anthropic,
    "gemini": _gemini,
    "mock": _mock,
}
