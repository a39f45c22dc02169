"""OpenAI Chat Completions and every OpenAI-compatible server (vLLM, Ollama, OpenRouter …)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from baton_nb._usage import Usage

from ._config import Endpoint
from ._types import LLMRequest
from ._wire import HttpCall, Parsed, as_int

__all__ = ["OpenAIAdapter", "parse_usage"]


def parse_usage(usage: Any) -> Usage | None:
    """Normalise an OpenAI ``usage`` object (cached and reasoning details included)."""
    if not isinstance(usage, dict) or not usage:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = as_int(prompt_details.get("cached_tokens")) or as_int(
        usage.get("prompt_cache_hit_tokens")
    )
    output = as_int(usage.get("completion_tokens"))
    return Usage(
        input_tokens=as_int(usage.get("prompt_tokens")),
        cached_input_tokens=cached,
        cache_write_tokens=as_int(prompt_details.get("cache_write_tokens")),
        output_tokens=output,
        reasoning_tokens=min(output, as_int(completion_details.get("reasoning_tokens"))),
    )


def reported_cost(usage: Any) -> Decimal | None:
    """The cost a server reports in ``usage.cost`` (USD, OpenRouter's usage accounting) as
    an exact Decimal of its JSON text (the shortest repr of the parsed float, never the
    binary float's expansion). With OpenRouter BYOK (``is_byok``) ``cost`` is only
    OpenRouter's fee: the user also paid ``cost_details.upstream_inference_cost`` to the
    upstream provider, so both are added."""
    if not isinstance(usage, dict):
        return None
    cost = _money(usage.get("cost"))
    if cost is None:
        return None
    details = usage.get("cost_details")
    upstream = _money(details.get("upstream_inference_cost")) if isinstance(details, dict) else None
    byok = usage.get("is_byok")
    if not isinstance(byok, bool):  # older responses: upstream is only reported for BYOK
        byok = upstream is not None and upstream != cost
    return cost + upstream if byok and upstream is not None else cost


def _money(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


class _OpenAIStream:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.first: dict[str, Any] = {}
        self.finish_reason: Any = None
        self.role = "assistant"
        self.usage: Any = None

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        if not self.first:
            self.first = data
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            self.role = delta.get("role") or self.role
            text = _content_text(delta.get("content"))
            if text:
                self.parts.append(text)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if data.get("usage"):
            self.usage = data["usage"]

    def result(self) -> Parsed:
        text = "".join(self.parts)
        raw: dict[str, Any] = {
            "id": self.first.get("id"),
            "object": "chat.completion",
            "created": self.first.get("created"),
            "model": self.first.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": self.role, "content": text},
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.usage is not None:
            raw["usage"] = self.usage
        return Parsed(text, parse_usage(self.usage), raw, reported_cost(self.usage))


class OpenAIAdapter:
    """``POST {base_url}/chat/completions`` with a Bearer key."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        body: dict[str, Any] = {**endpoint.body_defaults, "model": model}
        body["messages"] = [dict(m) for m in request.messages]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[endpoint.max_tokens_field] = request.max_tokens
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(request.extra)
        return HttpCall(endpoint.base_url.rstrip("/") + "/chat/completions", headers, body)

    def parse(self, body: dict[str, Any]) -> Parsed:
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        usage = body.get("usage")
        return Parsed(
            _content_text(message.get("content")), parse_usage(usage), body, reported_cost(usage)
        )

    def stream_state(self) -> _OpenAIStream:
        return _OpenAIStream()
