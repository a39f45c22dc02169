"""The OpenAI Responses API (``POST {base_url}/responses``), provider kind ``responses``."""

from __future__ import annotations

from typing import Any

from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import OutputKind, Tool, ToolChoiceMode, unsupported
from ._openai import reported_cost
from ._redact import redact
from ._types import FinishReason, LLMRequest, ToolCall
from ._wire import HttpCall, Parsed, RetryableFailure, as_int, cut_off

__all__ = ["ResponsesAdapter", "parse_usage"]


def parse_usage(usage: Any) -> Usage | None:
    """``input_tokens`` (cached included), ``output_tokens`` (reasoning included)."""
    if not isinstance(usage, dict) or not usage:
        return None
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    output = as_int(usage.get("output_tokens"))
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")),
        cached_input_tokens=as_int(input_details.get("cached_tokens")),
        cache_write_tokens=as_int(input_details.get("cache_write_tokens")),
        output_tokens=output,
        reasoning_tokens=min(output, as_int(output_details.get("reasoning_tokens"))),
    )


def _finish(body: dict[str, Any], refusal: bool, tool_calls: bool) -> FinishReason | None:
    status = body.get("status")
    if status == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        return FinishReason.CONTENT_FILTER if reason == "content_filter" else FinishReason.LENGTH
    if refusal:
        return FinishReason.REFUSAL
    if tool_calls:
        return FinishReason.TOOL_CALLS
    return FinishReason.STOP if status == "completed" else None


def parse_response(body: dict[str, Any]) -> Parsed:
    """A Response object: output_text, refusal, function_call items, reasoning summaries."""
    text: list[str] = []
    refusal: list[str] = []
    summary: list[str] = []
    calls: list[ToolCall] = []
    for item in body.get("output") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusal.append(str(part.get("refusal") or ""))
        elif kind == "function_call":
            calls.append(
                ToolCall.from_arguments(
                    str(item.get("call_id") or item.get("id") or ""),
                    str(item.get("name") or ""),
                    item.get("arguments") or "",
                )
            )
        elif kind == "reasoning":
            summary += [str(s.get("text") or "") for s in item.get("summary") or ()]
    usage = body.get("usage")
    refused = "".join(refusal) or None
    return Parsed(
        "".join(text),
        parse_usage(usage),
        body,
        reported_cost(usage),
        tool_calls=tuple(calls),
        refusal=refused,
        finish_reason=_finish(body, bool(refused), bool(calls)),
        reasoning="\n\n".join(s for s in summary if s) or None,
    )


class _ResponsesStream:
    """Typed events; the terminal event carries the whole response, items fill any gap."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {}
        self.items: dict[int, dict[str, Any]] = {}
        self.ended = False

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        kind = data.get("type") or event
        if kind in ("response.created", "response.in_progress"):
            self.response = dict(data.get("response") or {})
        elif kind == "response.output_item.added" or kind == "response.output_item.done":
            self.items[int(data.get("output_index") or 0)] = dict(data.get("item") or {})
        elif kind == "response.output_text.delta":
            item = self.items.setdefault(int(data.get("output_index") or 0), {"type": "message"})
            content = item.setdefault("content", [])
            if not content:
                content.append({"type": "output_text", "text": ""})
            content[-1]["text"] = str(content[-1].get("text") or "") + str(data.get("delta") or "")
        elif kind == "response.function_call_arguments.delta":
            item = self.items.setdefault(
                int(data.get("output_index") or 0), {"type": "function_call"}
            )
            item["arguments"] = str(item.get("arguments") or "") + str(data.get("delta") or "")
        elif kind in ("response.completed", "response.incomplete"):
            self.response = dict(data.get("response") or {})
            self.ended = True
        elif kind == "response.failed":
            error = (data.get("response") or {}).get("error") or {}
            message = redact(str(error.get("message") or "response.failed"))
            raise RetryableFailure(None, f"stream failed: {message}")

    def done(self) -> None:
        """The Responses API ends with response.completed, not [DONE]."""

    def result(self) -> Parsed:
        if not self.ended:
            raise cut_off("response.completed")
        raw = dict(self.response)
        if not raw.get("output") and self.items:
            raw["output"] = [self.items[i] for i in sorted(self.items)]
        return parse_response(raw)


def _input_parts(content: Any, role: str, endpoint: Endpoint, model: str) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    text_type = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text":
            parts.append({"type": text_type, "text": str(part.get("text") or "")})
        elif part["type"] == "image_url" and role != "assistant":
            image = part["image_url"]
            parts.append(
                {
                    "type": "input_image",
                    "image_url": str(image["url"]),
                    "detail": str(image.get("detail") or "auto"),
                }
            )
        else:
            raise unsupported(
                endpoint.name, model, f"{role} content parts of type {part['type']!r}"
            )
    return parts


def _input(request: LLMRequest, endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in request.messages:
        role = message["role"]
        content = message.get("content")
        if role == "tool":
            output = _input_parts(content, "user", endpoint, model)
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message["tool_call_id"],
                    "output": output,
                }
            )
            continue
        if role != "assistant" or content:
            items.append({"role": role, "content": _input_parts(content, role, endpoint, model)})
        for call in message.get("tool_calls") or ():
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                }
            )
    return items


def _tool(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        spec["description"] = tool.description
    spec["parameters"] = dict(tool.parameters)
    # The Responses API defaults a function to strict; the neutral default is not strict.
    spec["strict"] = bool(tool.strict)
    return spec


def _text_format(request: LLMRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt.kind is not OutputKind.JSON_SCHEMA:
        return {"format": {"type": fmt.kind.value}}
    return {"format": {"type": "json_schema", **fmt.json_schema()}}


def _reasoning(request: LLMRequest, endpoint: Endpoint, model: str) -> dict[str, Any] | None:
    reasoning = request.reasoning
    if reasoning is None:
        return None
    if reasoning.effort is None and reasoning.summary is None:
        raise unsupported(
            endpoint.name,
            model,
            "a reasoning token budget",
            "the Responses API takes an effort: reasoning='low' | 'medium' | 'high'",
        )
    out: dict[str, Any] = {}
    if reasoning.effort is not None:
        out["effort"] = reasoning.effort
    if reasoning.summary is not None:
        out["summary"] = reasoning.summary
    return out


class ResponsesAdapter:
    """``POST {base_url}/responses`` with a Bearer key."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        body: dict[str, Any] = {**endpoint.body_defaults, "model": model}
        body["input"] = _input(request, endpoint, model)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_output_tokens"] = request.max_tokens
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "name": choice.name}
                if choice.mode is ToolChoiceMode.FUNCTION
                else choice.mode.value
            )
        text = _text_format(request)
        if text is not None:
            body["text"] = text
        reasoning = _reasoning(request, endpoint, model)
        if reasoning is not None:
            body["reasoning"] = reasoning
        if request.stream:
            body["stream"] = True
        body.update(request.extra)
        return HttpCall(endpoint.base_url.rstrip("/") + "/responses", headers, body)

    def parse(self, body: dict[str, Any]) -> Parsed:
        return parse_response(body)

    def stream_state(self) -> _ResponsesStream:
        return _ResponsesStream()
