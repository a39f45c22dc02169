"""Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from baton_nb._usage import Usage

from ._config import Endpoint
from ._types import LLMRequest
from ._wire import HttpCall, Parsed, as_int

__all__ = ["GeminiAdapter", "parse_usage"]


def parse_usage(meta: Any) -> Usage | None:
    """Thoughts are output tokens (and reasoning); cached content is part of the prompt."""
    if not isinstance(meta, dict) or not meta:
        return None
    thoughts = as_int(meta.get("thoughtsTokenCount"))
    prompt = as_int(meta.get("promptTokenCount")) + as_int(meta.get("toolUsePromptTokenCount"))
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=min(prompt, as_int(meta.get("cachedContentTokenCount"))),
        output_tokens=as_int(meta.get("candidatesTokenCount")) + thoughts,
        reasoning_tokens=thoughts,
    )


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        out: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                out.append({"text": str(part.get("text") or "")})
            elif isinstance(part, dict):
                out.append(dict(part))
            else:
                out.append({"text": str(part)})
        return out
    return [{"text": str(content or "")}]


def _candidate_text(body: dict[str, Any]) -> str:
    candidates = body.get("candidates") or [{}]
    parts = (candidates[0].get("content") or {}).get("parts") or []
    return "".join(
        str(p.get("text") or "") for p in parts if isinstance(p, dict) and not p.get("thought")
    )


class _GeminiStream:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.last: dict[str, Any] = {}
        self.usage: Any = None

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        self.parts.append(_candidate_text(data))
        self.last = data
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]

    def result(self) -> Parsed:
        text = "".join(self.parts)
        raw = dict(self.last)
        candidates = [dict(c) for c in raw.get("candidates") or [{}]]
        content = dict(candidates[0].get("content") or {"role": "model"})
        content["parts"] = [{"text": text}]
        candidates[0]["content"] = content
        raw["candidates"] = candidates
        if self.usage is not None:
            raw["usageMetadata"] = self.usage
        return Parsed(text, parse_usage(self.usage), raw)


class GeminiAdapter:
    """``POST {base_url}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["x-goog-api-key"] = endpoint.api_key
        system = [m for m in request.messages if m["role"] == "system"]
        contents = [
            {"role": "model" if m["role"] == "assistant" else "user", "parts": _parts(m["content"])}
            for m in request.messages
            if m["role"] != "system"
        ]
        body: dict[str, Any] = {**endpoint.body_defaults, "contents": contents}
        if system:
            body["systemInstruction"] = {
                "parts": [p for m in system for p in _parts(m.get("content"))]
            }
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        extra = dict(request.extra)
        config.update(extra.pop("generationConfig", None) or {})
        if config:
            body["generationConfig"] = config
        body.update(extra)
        return HttpCall(self._url(endpoint, model, request.stream), headers, body)

    @staticmethod
    def _url(endpoint: Endpoint, model: str, stream: bool) -> str:
        base = endpoint.base_url.rstrip("/")
        if not base.rsplit("/", 1)[-1].startswith("v1"):
            base += "/v1beta"
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        name = model.removeprefix("models/")
        return f"{base}/models/{quote(name, safe='.-_')}:{method}"

    def parse(self, body: dict[str, Any]) -> Parsed:
        return Parsed(_candidate_text(body), parse_usage(body.get("usageMetadata")), body)

    def stream_state(self) -> _GeminiStream:
        return _GeminiStream()
