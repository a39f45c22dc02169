"""Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse``."""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import quote, urlsplit

from baton_nb._errors import ConfigurationError
from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import OutputKind, ToolChoiceMode, parse_data_url, unsupported
from ._schema import gemini_schema
from ._types import FinishReason, LLMRequest, ToolCall
from ._wire import HttpCall, Parsed, as_int, auto_detail_only, cut_off, object_arguments

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


_FINISH = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
}


def _candidate_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = body.get("candidates") or [{}]
    parts = (candidates[0].get("content") or {}).get("parts") or []
    return [p for p in parts if isinstance(p, dict)]


def _finish(body: dict[str, Any], tool_calls: bool) -> FinishReason | None:
    candidates = body.get("candidates") or []
    reason = candidates[0].get("finishReason") if candidates else None
    if reason is None:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        return FinishReason.CONTENT_FILTER if blocked else None
    if tool_calls and reason == "STOP":
        return FinishReason.TOOL_CALLS
    return _FINISH.get(str(reason), FinishReason.STOP)


def parse_message(body: dict[str, Any]) -> Parsed:
    """A generateContent response: text, function calls, thoughts, finish reason, usage."""
    parts = _candidate_parts(body)
    text = "".join(str(p.get("text") or "") for p in parts if not p.get("thought"))
    thoughts = "".join(str(p.get("text") or "") for p in parts if p.get("thought"))
    calls = []
    for index, part in enumerate(parts):
        call = part.get("functionCall")
        if not isinstance(call, dict):
            continue
        name = str(call.get("name") or "")
        signature = part.get("thoughtSignature")
        calls.append(
            ToolCall.from_arguments(
                str(call.get("id") or f"call_{index}_{name}"),
                name,
                call.get("args"),
                {"google": {"thought_signature": signature}} if signature else None,
            )
        )
    return Parsed(
        text,
        parse_usage(body.get("usageMetadata")),
        body,
        tool_calls=tuple(calls),
        finish_reason=_finish(body, bool(calls)),
        reasoning=thoughts or None,
    )


class _GeminiStream:
    """Chunks merged into one response: text runs joined, function calls kept in order."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}
        self.finish: Any = None
        self.usage: Any = None
        self.blocked = False

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        for part in _candidate_parts(data):
            previous = self.parts[-1] if self.parts else None
            mergeable = set(part) <= {"text", "thought"} and "text" in part
            if (
                mergeable
                and previous is not None
                and set(previous) <= {"text", "thought"}
                and bool(previous.get("thought")) == bool(part.get("thought"))
            ):
                previous["text"] = str(previous.get("text") or "") + str(part.get("text") or "")
            else:
                self.parts.append(dict(part))
        candidates = data.get("candidates") or []
        if candidates and candidates[0].get("finishReason"):
            self.finish = candidates[0]["finishReason"]
        if (data.get("promptFeedback") or {}).get("blockReason"):
            self.blocked = True
        self.last = data
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]

    def done(self) -> None:
        """Gemini streams have no [DONE] line; the finish reason ends them."""

    def result(self) -> Parsed:
        if self.finish is None and not self.blocked:
            raise cut_off("a candidate's finishReason")
        raw = dict(self.last)
        candidates = [dict(c) for c in raw.get("candidates") or [{}]]
        content = dict(candidates[0].get("content") or {"role": "model"})
        content["parts"] = self.parts or [{"text": ""}]
        candidates[0]["content"] = content
        if self.finish is not None:
            candidates[0]["finishReason"] = self.finish
        raw["candidates"] = candidates
        if self.usage is not None:
            raw["usageMetadata"] = self.usage
        return parse_message(raw)


def _image(part: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any]:
    image = part["image_url"]
    auto_detail_only(image, endpoint, model)
    url = str(image["url"])
    data = parse_data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data.media_type, "data": data.data}}
    media_type = image.get("media_type") or mimetypes.guess_type(urlsplit(url).path)[0]
    if not media_type:
        raise unsupported(
            endpoint.name,
            model,
            f"an image URL without a known type ({url[:80]})",
            "Gemini's fileData needs the media type: give image_url.media_type, or send "
            "bytes / a data URL",
        )
    return {"fileData": {"mimeType": media_type, "fileUri": url}}


def _parts(content: Any, endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    out: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text":
            out.append({"text": str(part.get("text") or "")})
        elif part["type"] == "image_url":
            out.append(_image(part, endpoint, model))
        else:
            raise unsupported(endpoint.name, model, f"content parts of type {part['type']!r}")
    return out


def _function_call(call: dict[str, Any], endpoint: Endpoint, model: str) -> dict[str, Any]:
    parsed = object_arguments(call, endpoint, model, "functionCall args")
    part: dict[str, Any] = {"functionCall": {"name": parsed.name, "args": parsed.arguments}}
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(
    message: dict[str, Any], names: dict[str, str], endpoint: Endpoint, model: str
) -> dict[str, Any]:
    call_id = message["tool_call_id"]
    name = message.get("name") or names.get(call_id)
    if not name:
        raise ConfigurationError(
            f"tool result for call {call_id!r}: no earlier assistant tool call has that id, "
            "and Gemini needs the function's name (add 'name' to the tool message)"
        )
    parts = _parts(message.get("content"), endpoint, model)
    if any("text" not in p for p in parts):
        raise unsupported(endpoint.name, model, "images in tool results")
    output = "".join(p["text"] for p in parts)
    return {"functionResponse": {"name": name, "response": {"output": output}}}


def _contents(
    request: LLMRequest, endpoint: Endpoint, model: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts and contents; function responses and user text share user turns."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in request.messages:
        role = message["role"]
        if role in ("system", "developer"):
            system += _parts(message.get("content"), endpoint, model)
            continue
        if role == "assistant":
            parts = _parts(message.get("content"), endpoint, model)
            for call in message.get("tool_calls") or ():
                names[call["id"]] = call["function"]["name"]
                parts.append(_function_call(call, endpoint, model))
            contents.append({"role": "model", "parts": parts})
            continue
        if role == "tool":
            parts = [_function_response(message, names, endpoint, model)]
        else:
            parts = _parts(message.get("content"), endpoint, model)
        if contents and contents[-1]["role"] == "user":
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": "user", "parts": parts})
    return system, contents


def _tools(request: LLMRequest, endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    declarations = []
    for tool in request.tools:
        if tool.strict:
            raise unsupported(
                endpoint.name,
                model,
                f"strict tool schemas ({tool.name})",
                "drop 'strict' from the tool (Gemini has no strict mode; check the arguments "
                "the model sends), or call a provider that has it (OpenAI, Anthropic)",
            )
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            declaration["description"] = tool.description
        if tool.parameters.get("properties"):
            declaration["parameters"] = gemini_schema(tool.parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(request: LLMRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}[choice.mode.value]
    config: dict[str, Any] = {"mode": mode}
    if choice.mode is ToolChoiceMode.FUNCTION:
        config["allowedFunctionNames"] = [choice.name]
    return {"functionCallingConfig": config}


def _generation_config(request: LLMRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    fmt = request.response_format
    if fmt is not None and fmt.kind is not OutputKind.TEXT:
        config["responseMimeType"] = "application/json"
        if fmt.kind is OutputKind.JSON_SCHEMA:
            config["responseSchema"] = gemini_schema(fmt.schema or {})
    reasoning = request.reasoning
    if reasoning is not None:
        budget = reasoning.thinking_budget()
        # a summary alone leaves the budget to the model (Gemini 2.5 thinks by default)
        thinking: dict[str, Any] = {} if budget is None else {"thinkingBudget": budget}
        if reasoning.summary is not None:
            thinking["includeThoughts"] = True
        config["thinkingConfig"] = thinking
    return config


def _check_thinking_room(endpoint: Endpoint, model: str, config: dict[str, Any]) -> None:
    """Gemini counts the thinking in ``maxOutputTokens`` (its thoughts are billed as output
    and end the answer with MAX_TOKENS when they reach the cap), as Anthropic counts it in
    ``max_tokens``: a cap at or under the thinking budget leaves the answer no room. Refused
    before sending, as Anthropic refuses it."""
    cap = config.get("maxOutputTokens")
    thinking = config.get("thinkingConfig")
    budget = thinking.get("thinkingBudget") if isinstance(thinking, dict) else None
    if not (isinstance(cap, int) and isinstance(budget, int)) or budget <= 0 or cap > budget:
        return
    raise unsupported(
        endpoint.name,
        model,
        f"max_tokens={cap} with a thinking budget of {budget}",
        "max_tokens must be larger than the budget (Gemini counts the thinking in "
        "maxOutputTokens): raise max_tokens or give a smaller reasoning=",
    )


class GeminiAdapter:
    """``POST {base_url}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["x-goog-api-key"] = endpoint.api_key
        system, contents = _contents(request, endpoint, model)
        body: dict[str, Any] = {**endpoint.body_defaults, "contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        if request.tools:
            body["tools"] = _tools(request, endpoint, model)
        tool_config = _tool_config(request)
        if tool_config is not None:
            body["toolConfig"] = tool_config
        config = _generation_config(request)
        extra = dict(request.extra)
        raw = extra.pop("generationConfig", None) or {}
        config.update(raw)
        if "thinkingConfig" not in raw:  # the library's reasoning= budget; extra= is sent as is
            _check_thinking_room(endpoint, model, config)
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
        return parse_message(body)

    def stream_state(self) -> _GeminiStream:
        return _GeminiStream()
