"""OpenAI Chat Completions and every OpenAI-compatible server (vLLM, Ollama, OpenRouter …)."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import OutputKind, unsupported
from ._types import FinishReason, LLMRequest, ToolCall
from ._wire import HttpCall, Parsed, as_int, cut_off, new_parsed

__all__ = ["OpenAIAdapter", "parse_usage"]

# Sums money under a context of its own: the caller's decimal.getcontext() (prec=3 …) must
# not round a cost.
_EXACT = Context(prec=60)


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
    return _EXACT.add(cost, upstream) if byok and upstream is not None else cost


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


_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def finish_reason(reason: Any, refusal: str | None, tool_calls: bool) -> FinishReason | None:
    """OpenAI's ``finish_reason``; a refusal is ``refusal`` whatever the raw reason says."""
    if refusal:
        return FinishReason.REFUSAL
    if reason is None:
        return FinishReason.TOOL_CALLS if tool_calls else None
    return _FINISH.get(str(reason), FinishReason.STOP)


def parse_tool_calls(calls: Any) -> tuple[ToolCall, ...]:
    found = []
    for call in calls or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and call.get("type", "function") == "function":
            found.append(
                ToolCall.from_arguments(
                    str(call.get("id") or ""),
                    str(function.get("name") or ""),
                    function.get("arguments") or "",
                    call.get("extra_content"),
                )
            )
    return tuple(found)


def parse_message(body: dict[str, Any]) -> Parsed:
    """A chat.completion body: text, tool calls, refusal, reasoning, finish reason, usage."""
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    usage = body.get("usage")
    refusal = message.get("refusal") or None
    tool_calls = parse_tool_calls(message.get("tool_calls"))
    # DeepSeek and vLLM say reasoning_content; OpenRouter, Groq and Ollama say reasoning.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return new_parsed(  # Parsed(...) of these fields, without its frozen __init__
        _content_text(message.get("content")),
        parse_usage(usage),
        body,
        reported_cost(usage),
        tool_calls,
        refusal,
        finish_reason(choices[0].get("finish_reason"), refusal, bool(tool_calls)),
        reasoning if isinstance(reasoning, str) and reasoning else None,
    )


class _OpenAIStream:
    """Chunks assembled into the chat.completion body they stand for."""

    def __init__(self) -> None:
        self.first: dict[str, Any] = {}
        self.role = "assistant"
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.last_call: int | None = None  # the slot the latest tool-call delta went to
        self.finish_reason: Any = None
        self.usage: Any = None
        self.finished = False

    def feed(self, event: str | None, data: dict[str, Any]) -> None:
        if not self.first:
            self.first = data
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1: the answer is the first choice, as in a whole answer
            delta = choice.get("delta") or {}
            self.role = delta.get("role") or self.role
            self.text.append(_content_text(delta.get("content")))
            self.refusal.append(str(delta.get("refusal") or ""))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self.reasoning.append(reasoning)
            for call in delta.get("tool_calls") or ():
                self._feed_call(call)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if data.get("usage"):
            self.usage = data["usage"]

    def _feed_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = self._unindexed(call.get("id"))
        self.last_call = index
        slot = self.calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += str(function.get("name") or "")
        slot["function"]["arguments"] += str(function.get("arguments") or "")
        if call.get("extra_content"):
            slot["extra_content"] = call["extra_content"]

    def _unindexed(self, call_id: Any) -> int:
        """The slot of a tool-call delta without an ``index`` (Gemini's OpenAI-compatible
        API sends none, each parallel call in a chunk of its own): a delta with a new id
        starts a call, one without an id continues the latest."""
        last = self.last_call
        if last is not None and (not call_id or self.calls[last]["id"] in ("", call_id)):
            return last
        return max(self.calls, default=-1) + 1

    def done(self) -> None:
        self.finished = True

    def result(self) -> Parsed:
        # [DONE] ends an OpenAI stream; a server that skips it has still finished once
        # the finish reason and the final usage chunk (which comes after it) are in.
        if not (self.finished or (self.finish_reason and self.usage is not None)):
            raise cut_off("its finish reason, usage and [DONE]")
        text = "".join(self.text)
        message: dict[str, Any] = {"role": self.role, "content": text}
        refusal = "".join(self.refusal)
        if refusal:
            message["refusal"] = refusal
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
            message["content"] = text or None
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        raw: dict[str, Any] = {
            "id": self.first.get("id"),
            "object": "chat.completion",
            "created": self.first.get("created"),
            "model": self.first.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            raw["usage"] = self.usage
        return parse_message(raw)


# Servers that refuse a field they do not know ("Unknown parameter"), such as a tool call's
# ``extra_content``: Google's OpenAI-compatible API sends that field (Gemini 3's thought
# signatures) and refuses the next turn without it ("Function call is missing a
# thought_signature"), so every other server gets it back when a call has one.
_STRICT_HOSTS = ("api.openai.com", "openai.azure.com", "api.groq.com")


@lru_cache(maxsize=64)
def _takes_extra_content(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return not any(host == h or host.endswith("." + h) for h in _STRICT_HOSTS)


def _message_out(message: dict[str, Any], extra_content: bool) -> dict[str, Any]:
    """A neutral message as the Chat Completions API takes it: Anthropic's thinking blocks
    off, tool calls' ``extra_content`` off unless the server takes it."""
    out = {k: v for k, v in message.items() if k != "thinking_blocks"}
    if "tool_calls" in out and not extra_content:
        out["tool_calls"] = [
            {k: v for k, v in call.items() if k != "extra_content"} for call in out["tool_calls"]
        ]
    return out


def reasoning_effort(endpoint: Endpoint, model: str, request: LLMRequest) -> str | None:
    """The ``reasoning_effort`` of a Chat Completions call; what it cannot carry is an error."""
    reasoning = request.reasoning
    if reasoning is None:
        return None
    if reasoning.summary is not None:
        raise unsupported(
            endpoint.name,
            model,
            "reasoning summaries over Chat Completions",
            "use the Responses API (provider 'openai-responses') or drop summary=",
        )
    if reasoning.effort is None:
        raise unsupported(
            endpoint.name,
            model,
            "a reasoning token budget",
            "Chat Completions takes an effort: reasoning='low' | 'medium' | 'high' "
            "(or give both, effort for OpenAI and budget_tokens for Anthropic/Gemini)",
        )
    return reasoning.effort


def response_format(request: LLMRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt.kind is not OutputKind.JSON_SCHEMA:
        return {"type": fmt.kind.value}
    return {"type": "json_schema", "json_schema": fmt.json_schema()}


class OpenAIAdapter:
    """``POST {base_url}/chat/completions`` with a Bearer key."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        body: dict[str, Any] = {**endpoint.body_defaults, "model": model}
        extra_content = _takes_extra_content(endpoint.base_url)
        body["messages"] = [_message_out(m, extra_content) for m in request.messages]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[endpoint.max_tokens_field] = request.max_tokens
        if request.tools:
            body["tools"] = [t.to_openai() for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice.to_openai()
        output = response_format(request)
        if output is not None:
            body["response_format"] = output
        effort = reasoning_effort(endpoint, model, request)
        if effort is not None:
            body["reasoning_effort"] = effort
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(request.extra)
        return HttpCall(endpoint.base_url.rstrip("/") + "/chat/completions", headers, body)

    def parse(self, body: dict[str, Any]) -> Parsed:
        return parse_message(body)

    def stream_state(self) -> _OpenAIStream:
        return _OpenAIStream()
