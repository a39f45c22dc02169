"""The response cache's key (DESIGN §11): the exact request as sent, every default filled in,
never credentials.

The request is built by the provider's own adapter (what would go on the wire: endpoint
URL, model, messages, tools, response format, temperature, seed and every other body
field, the endpoint's body defaults included), then:

- credentials dropped: headers whose name says key, auth, token, secret, cookie or
  signature, and such query parameters of the URL;
- how the answer travels dropped (``stream``, ``stream_options``; a Gemini stream URL is
  the non-streamed one): a streamed call and a plain one share their answer;
- a parameter set to the provider's documented default dropped, so an omitted default and
  its explicit value are one key (``temperature=1`` for OpenAI and Anthropic, ...);
- ``cache_salt`` added: another salt, another key (fresh samples on purpose).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._config import Endpoint, resolve_endpoint
from ._types import LLMRequest, split_model

__all__ = ["CacheKey", "cache_key"]

KEY_VERSION = 1
_SECRET = re.compile(r"key|auth|token|secret|cookie|signature|password", re.IGNORECASE)
_TRANSPORT = frozenset({"stream", "stream_options"})
# Values a provider uses when the field is absent (its API reference): the same request.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "openai": {
        "temperature": 1.0,
        "top_p": 1.0,
        "n": 1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "logprobs": False,
        "parallel_tool_calls": True,
    },
    "responses": {"temperature": 1.0, "top_p": 1.0, "parallel_tool_calls": True},
    "anthropic": {"temperature": 1.0},
    "mock": {"temperature": 1.0},
}


class CacheKey:
    """A request's cache key (sha256 hex) and the canonical JSON it hashes."""

    __slots__ = ("canonical", "digest")

    def __init__(self, canonical: str) -> None:
        self.canonical = canonical
        self.digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"<CacheKey {self.digest[:12]}>"


def cache_key(request: LLMRequest) -> CacheKey:
    """The key of ``request``; raises what sending it would raise (an unknown provider, a
    feature the provider lacks) before any lookup."""
    provider, model = split_model(request.model)
    endpoint = resolve_endpoint(provider)
    plain = replace(request, stream=False, cache=None, cache_salt=None)
    url, headers, body = _as_sent(endpoint, model, plain)
    defaults = _DEFAULTS.get(endpoint.kind, {})
    body = {
        k: v
        for k, v in body.items()
        if k not in _TRANSPORT and not (k in defaults and _same(v, defaults[k]))
    }
    payload = {
        "v": KEY_VERSION,
        "kind": endpoint.kind,
        "url": _without_secrets(url),
        "headers": {k.lower(): v for k, v in headers.items() if not _SECRET.search(k)},
        "body": body,
        "salt": request.cache_salt,
    }
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return CacheKey(canonical)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(value: Any, default: Any) -> bool:
    """``value`` is the default: equal and of the same kind (``1`` and ``1.0`` are one
    temperature; ``True`` is not ``1``)."""
    if _number(value) and _number(default):
        return float(value) == float(default)
    return type(value) is type(default) and bool(value == default)


def _as_sent(
    endpoint: Endpoint, model: str, request: LLMRequest
) -> tuple[str, dict[str, str], dict[str, Any]]:
    if endpoint.kind == "mock":  # offline: no wire format, the request's own fields
        body: dict[str, Any] = {
            "model": model,
            "messages": list(request.messages),
            **({"temperature": request.temperature} if request.temperature is not None else {}),
            **({"max_tokens": request.max_tokens} if request.max_tokens is not None else {}),
            **request.neutral_params(),
            **dict(request.extra),
        }
        return f"mock:{endpoint.name}", {}, body
    from ._complete import adapter_for

    call = adapter_for(endpoint).build(endpoint, model, request)
    return call.url, dict(call.headers), dict(call.body)


def _without_secrets(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in pairs if not _SECRET.search(k)]
    return urlunsplit(parts._replace(query=urlencode(query)))
