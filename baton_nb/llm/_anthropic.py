"""Anthropic Messages API."""

from __future__ import annotations

import json
from typing import Any

from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import OutputKind, Tool, ToolChoiceMode, parse_data_url, unsupported
from ._schema import anthropic_schema
from ._types import FinishReason, LLMRequest, ToolCall, assistant_message
from ._wire import HttpCall, Parsed, as_int, auto_detail_only, cut_off, object_arguments

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


MIN_BUDGET = 1024
_STOP = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.REFUSAL,
}
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def parse_message(body: dict[str, Any]) -> Parsed:
    """An Anthropic message: text, tool_use blocks, thinking, refusal, stop reason, usage."""
    blocks = [b for b in body.get("content") or () if isinstance(b, dict)]
    text = _text_of(blocks)
    calls = tuple(
        ToolCall.from_arguments(str(b.get("id") or ""), str(b.get("name") or ""), b.get("input"))
        for b in blocks
        if b.get("type") == "tool_use"
    )
    thinking = [b for b in blocks if b.get("type") in ("thinking", "redacted_thinking")]
    reasoning = "".join(str(b.get("thinking") or "") for b in thinking) or None
    stop = body.get("stop_reason")
    refusal = None
    if stop == "refusal":
        details = body.get("stop_details")
        details = details if isinstance(details, dict) else {}
        refusal = str(
            details.get("explanation") or text or "the model refused (stop_reason 'refusal')"
        )
    usage = body.get("usage")
    return Parsed(
        text,
        parse_usage(usage),
        body,
        None,
        tool_calls=calls,
        refusal=refusal,
        finish_reason=None if stop is None else _STOP.get(str(stop), FinishReason.STOP),
        reasoning=reasoning,
        message=assistant_message(text, calls, thinking),
    )


class _AnthropicStream:
    """Events assembled into the message they stand for (content blocks by index)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, list[str]] = {}
        self.delta: dict[str, Any] = {}
        self.stopped = False

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        kind = data.get("type") or event
        if kind == "message_start":
            self.message = dict(data.get("message") or {})
            self.usage.update(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[int(data.get("index") or 0)] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            self._feed_delta(int(data.get("index") or 0), data.get("delta") or {})
        elif kind == "message_delta":
            self.delta.update(data.get("delta") or {})
            # message_delta usage is cumulative: it overrides message_start's fields.
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True

    def _feed_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = str(block.get("text") or "") + str(delta.get("text") or "")
        elif kind == "input_json_delta":
            self.partial_json.setdefault(index, []).append(str(delta.get("partial_json") or ""))
        elif kind == "thinking_delta":
            block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking") or "")
        elif kind == "signature_delta":
            block["signature"] = str(delta.get("signature") or "")

    def done(self) -> None:
        self.stopped = True

    def result(self) -> Parsed:
        if not (self.stopped or self.delta.get("stop_reason")):
            raise cut_off("message_stop")
        content = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            if index in self.partial_json:
                text = "".join(self.partial_json[index])
                try:
                    block["input"] = json.loads(text) if text.strip() else {}
                except ValueError:
                    raise cut_off(
                        f"the end of tool call {block.get('name')!r}'s arguments"
                    ) from None
            content.append(block)
        raw = {**self.message, **self.delta, "content": content}
        if self.usage:
            raw["usage"] = dict(self.usage)
        return parse_message(raw)


def _image_block(part: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any]:
    image = part["image_url"]
    auto_detail_only(image, endpoint, model)
    url = str(image["url"])
    data = parse_data_url(url)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    if data.media_type not in _IMAGE_TYPES:
        raise unsupported(
            endpoint.name, model, f"images of type {data.media_type}", "send JPEG, PNG, GIF or WebP"
        )
    source = {"type": "base64", "media_type": data.media_type, "data": data.data}
    return {"type": "image", "source": source}


def _blocks(content: Any, endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if part["type"] == "text":
            block = {"type": "text", "text": str(part.get("text") or "")}
        elif part["type"] == "image_url":
            block = _image_block(part, endpoint, model)
        else:
            raise unsupported(endpoint.name, model, f"content parts of type {part['type']!r}")
        if "cache_control" in part:  # a prompt-cache breakpoint, on any block
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _tool_use(call: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any]:
    parsed = object_arguments(call, endpoint, model, "tool_use input")
    return {"type": "tool_use", "id": parsed.id, "name": parsed.name, "input": parsed.arguments}


def _assistant(message: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any] | None:
    """The assistant turn; ``None`` for one with nothing in it (an empty answer), which the
    API refuses ("all messages must have non-empty content except for the optional final
    assistant message")."""
    calls = message.get("tool_calls") or []
    thinking = [dict(b) for b in message.get("thinking_blocks") or ()]
    content = message.get("content")
    if not calls and not thinking and isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    blocks = thinking + _blocks(content, endpoint, model)
    blocks += [_tool_use(call, endpoint, model) for call in calls]
    return {"role": "assistant", "content": blocks} if blocks else None


def _tool_result(message: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any]:
    content = message.get("content")
    result: Any = content if isinstance(content, str) else _blocks(content, endpoint, model)
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": result}


def _system_blocks(content: Any, endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return [{"type": "text", "text": content or ""}]
    blocks = _blocks(content, endpoint, model)
    if any(b["type"] != "text" for b in blocks):
        raise unsupported(endpoint.name, model, "images in system messages")
    return blocks


def _system(messages: list[list[dict[str, Any]]]) -> str | list[dict[str, Any]] | None:
    """The system prompt: one text (each message's parts joined, messages apart), or the
    text blocks themselves when one carries a ``cache_control`` breakpoint, which a text
    would lose (the usual place to cache a long system prompt)."""
    if not messages:
        return None
    blocks = [b for m in messages for b in m]
    if any("cache_control" in b for b in blocks):
        return [b for b in blocks if b["text"]]  # the API refuses empty text blocks
    return "\n\n".join("".join(b["text"] for b in m) for m in messages)


def _messages(
    request: LLMRequest, endpoint: Endpoint, model: str
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """System prompt and messages; tool results go into user turns, first in them."""
    system: list[list[dict[str, Any]]] = []
    out: list[dict[str, Any]] = []
    for message in request.messages:
        role = message["role"]
        if role in ("system", "developer"):
            system.append(_system_blocks(message.get("content"), endpoint, model))
        elif role == "assistant":
            turn = _assistant(message, endpoint, model)
            if turn is not None:
                out.append(turn)
        elif role == "tool":
            result = _tool_result(message, endpoint, model)
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        elif out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
            out[-1]["content"] += _blocks(message.get("content"), endpoint, model)
        else:
            content = message.get("content")
            if not isinstance(content, str):
                content = _blocks(content, endpoint, model)
            out.append({"role": "user", "content": content})
    return _system(system), out


def _thinking(request: LLMRequest, endpoint: Endpoint, model: str) -> dict[str, Any] | None:
    reasoning = request.reasoning
    if reasoning is None:
        return None
    budget = reasoning.thinking_budget()
    if budget is None:
        raise unsupported(
            endpoint.name,
            model,
            "a reasoning summary without a thinking budget",
            "Anthropic thinks only with a budget: give an effort or budget_tokens too, "
            "e.g. reasoning={'effort': 'low', 'summary': 'auto'}",
        )
    if budget == 0:
        return {"type": "disabled"}
    if budget < MIN_BUDGET:
        raise unsupported(
            endpoint.name,
            model,
            f"a thinking budget of {budget} tokens",
            f"the minimum is {MIN_BUDGET}",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _tool_choice(request: LLMRequest, thinking: bool, endpoint: Endpoint, model: str) -> Any:
    choice = request.tool_choice
    if choice is None:
        return None
    if thinking and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION):
        raise unsupported(
            endpoint.name,
            model,
            f"tool_choice={choice.to_openai()!r} with extended thinking",
            "use tool_choice='auto' or turn reasoning off",
        )
    if choice.mode is ToolChoiceMode.FUNCTION:
        return {"type": "tool", "name": choice.name}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice.mode.value]}


def _output_config(request: LLMRequest, endpoint: Endpoint, model: str) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.kind is OutputKind.TEXT:
        return None
    if fmt.kind is OutputKind.JSON_OBJECT:
        raise unsupported(
            endpoint.name,
            model,
            "JSON mode without a schema (response_format json_object)",
            "pass a JSON Schema or a pydantic model as response_format",
        )
    schema = anthropic_schema(fmt.schema or {})
    return {"format": {"type": "json_schema", "schema": schema}}


def _tool(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        spec["description"] = tool.description
    spec["input_schema"] = dict(tool.parameters)
    if tool.strict is not None:
        spec["strict"] = tool.strict
    return spec


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
        system, messages = _messages(request, endpoint, model)
        body: dict[str, Any] = {**endpoint.body_defaults, "model": model, "messages": messages}
        thinking = _thinking(request, endpoint, model)
        budget = int(thinking.get("budget_tokens") or 0) if thinking else 0
        max_tokens = request.max_tokens or endpoint.default_max_tokens + budget
        if budget and max_tokens <= budget:
            raise unsupported(
                endpoint.name,
                model,
                f"max_tokens={max_tokens} with a thinking budget of {budget}",
                "max_tokens must be larger than the budget (it includes the thinking)",
            )
        body["max_tokens"] = max_tokens
        if system is not None:
            body["system"] = system
        if request.temperature is not None:
            if budget and request.temperature != 1:
                raise unsupported(
                    endpoint.name,
                    model,
                    f"temperature={request.temperature:g} with extended thinking",
                    "leave temperature unset (or 1) when reasoning is on",
                )
            body["temperature"] = request.temperature
        if thinking is not None:
            body["thinking"] = thinking
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        choice = _tool_choice(request, bool(budget), endpoint, model)
        if choice is not None:
            body["tool_choice"] = choice
        output = _output_config(request, endpoint, model)
        if output is not None:
            body["output_config"] = output
        if request.stream:
            body["stream"] = True
        body.update(request.extra)
        base = endpoint.base_url.rstrip("/")
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        return HttpCall(url, headers, body)

    def parse(self, body: dict[str, Any]) -> Parsed:
        return parse_message(body)

    def stream_state(self) -> _AnthropicStream:
        return _AnthropicStream()
