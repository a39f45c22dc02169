"""Anthropic Messages API."""

from __future__ import annotations

from typing import Any

from baton_nb._usage import Usage

from ._config import Endpoint
from ._types import LLMRequest
from ._wire import HttpCall, Parsed, as_int

__all__ = ["AnthropicAdapter", "parse_usage"]


def parse_usage(usage: Any) -> Usage | None:
    """Cache reads and writes are summed into ``input_tokens`` (DESIGN §6); the 1-hour part
    of the cache writes (``cache_creation.ephemeral_1h_input_tokens``), the thinking tokens
    (``output_tokens_details.thinking_tokens``, part of ``output_tokens``) and the web
    searches (``server_tool_use.web_search_requests``) are kept, each charged at its rate."""
    if not isinstance(usage, dict) or not usage:
        return None
    cached = as_int(usage.get("cache_read_input_tokens"))
    written = as_int(usage.get("cache_creation_input_tokens"))
    output = as_int(usage.get("output_tokens"))
    # a stream's message_delta may update the total without its TTL breakdown: clamp
    one_hour = as_int(_field(usage, "cache_creation", "ephemeral_1h_input_tokens"))
    thinking = as_int(_field(usage, "output_tokens_details", "thinking_tokens"))
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")) + cached + written,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        cache_write_1h_tokens=min(written, one_hour),
        reasoning_tokens=min(output, thinking),
        web_search_requests=as_int(_field(usage, "server_tool_use", "web_search_requests")),
    )


def _field(usage: dict[str, Any], group: str, name: str) -> Any:
    detail = usage.get(group)
    return detail.get(name) if isinstance(detail, dict) else None


def _text_of(blocks: Any) -> str:
    if not isinstance(blocks, list):
        return ""
    return "".join(
        str(b.get("text") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )


def _system_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return _text_of(content) if isinstance(content, list) else str(content or "")


def _split_system(request: LLMRequest) -> tuple[str | None, list[dict[str, Any]]]:
    system = [_system_text(m.get("content")) for m in request.messages if m["role"] == "system"]
    messages = [
        {"role": m["role"], "content": m.get("content", "")}
        for m in request.messages
        if m["role"] != "system"
    ]
    return ("\n\n".join(system) if system else None), messages


class _AnthropicStream:
    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.parts: list[str] = []
        self.delta: dict[str, Any] = {}

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        kind = data.get("type") or event
        if kind == "message_start":
            self.message = dict(data.get("message") or {})
            self.usage.update(self.message.get("usage") or {})
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.parts.append(str(delta.get("text") or ""))
        elif kind == "message_delta":
            self.delta.update(data.get("delta") or {})
            # message_delta usage is cumulative: it overrides message_start's fields.
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})

    def result(self) -> Parsed:
        text = "".join(self.parts)
        raw = {**self.message, **self.delta, "content": [{"type": "text", "text": text}]}
        if self.usage:
            raw["usage"] = dict(self.usage)
        return Parsed(text, parse_usage(self.usage), raw)


class AnthropicAdapter:
    """``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {
            "content-type": "application/json",
            "anthropic-version": endpoint.anthropic_version,
            **endpoint.headers,
        }
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        system, messages = _split_system(request)
        body: dict[str, Any] = {**endpoint.body_defaults, "model": model, "messages": messages}
        body["max_tokens"] = request.max_tokens or endpoint.default_max_tokens
        if system is not None:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stream:
            body["stream"] = True
        body.update(request.extra)
        base = endpoint.base_url.rstrip("/")
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        return HttpCall(url, headers, body)

    def parse(self, body: dict[str, Any]) -> Parsed:
        usage = body.get("usage")
        return Parsed(_text_of(body.get("content")), parse_usage(usage), body)

    def stream_state(self) -> _AnthropicStream:
        return _AnthropicStream()
