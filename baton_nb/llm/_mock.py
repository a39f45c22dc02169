"""``mock/<model>``: an offline provider with deterministic answers and exact counts.

The text depends only on the model and the messages, so a re-run gives the
same answer and two models give different ones. Usage is counted with the
same tokenizer as :func:`estimate_tokens`, and the call is priced as
``<model>`` (or ``price_as``), so costs look like the real thing.

It speaks the neutral request too: the request is first translated by the adapter of
the provider the model name belongs to (``claude-*`` Anthropic, ``gemini-*`` Gemini,
others OpenAI), so what that provider cannot do fails here as it would there. With
``tools`` it calls each tool once, in order, one per round (arguments made from the
tool's schema), then answers; with a JSON ``response_format`` it answers JSON that
fits the schema, its strings and numbers taken from the words of the last user message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import anyio

from baton_nb._errors import ProviderError
from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import OutputKind, Tool, ToolChoiceMode
from ._openai import parse_message
from ._tokens import estimate_tokens, message_text
from ._types import LLMRequest
from ._wire import Adapter, Parsed

__all__ = [
    "adapter_check",
    "check_request",
    "mock_body",
    "mock_complete",
    "mock_text",
    "server_refusal",
]

IMAGE_TOKENS = 85  # what the mock charges per image part (OpenAI's low-detail figure)

_OPENERS = (
    "In short",
    "Briefly",
    "To summarise",
    "The key point",
    "Put simply",
    "At a glance",
)
_BODIES = (
    'on "{topic}", it comes down to a few clear ideas: what it is, why it matters, what next.',
    'for "{topic}", the main factors are scope, cost and risk; weigh them in that order.',
    '"{topic}" is best approached step by step, checking each assumption against the data.',
    'the evidence on "{topic}" points one way, though two caveats deserve a closer look.',
    '"{topic}" has a simple core and a long tail of edge cases; start with the core.',
)


def _topic(request: LLMRequest) -> str:
    users = [m for m in request.messages if m.get("role") == "user"]
    text = message_text(users[-1].get("content")) if users else ""
    words = text.split()
    topic = " ".join(words[:8]).strip(" .,:;!?\"'")
    return (topic + (" …" if len(words) > 8 else "")) if topic else "the question"


def mock_text(model: str, request: LLMRequest) -> str:
    """Deterministic, model-flavoured answer to ``request`` (same input, same text)."""
    seed = json.dumps([model, list(request.messages)], sort_keys=True, default=str)
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()
    opener = _OPENERS[int(digest[:8], 16) % len(_OPENERS)]
    body = _BODIES[int(digest[8:16], 16) % len(_BODIES)].format(topic=_topic(request))
    text = f"{opener} ({model}, #{digest[:8]}): {body}"
    if request.max_tokens is not None:
        words = text.split(" ")
        while len(words) > 1 and estimate_tokens(" ".join(words)) > request.max_tokens:
            words.pop()
        text = " ".join(words)
    return text


def _adapter_for(model: str) -> Adapter:
    from ._anthropic import AnthropicAdapter
    from ._gemini import GeminiAdapter
    from ._openai import OpenAIAdapter

    name = model.lower()
    if name.startswith("claude"):
        return AnthropicAdapter()
    if name.startswith("gemini"):
        return GeminiAdapter()
    return OpenAIAdapter()


class _Values:
    """Deterministic values for a JSON Schema, seeded by the request."""

    def __init__(self, seed: str, source_text: str, defs: Mapping[str, Any]) -> None:
        self.seed = seed
        self.words = re.findall(r"[A-Za-z][\w'&.-]*[A-Za-z]|[A-Za-z]", source_text)
        self.names = _proper_names(source_text)
        self.numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", source_text)]
        self.defs = defs

    def _pick(self, path: str, n: int) -> int:
        digest = hashlib.sha256(f"{self.seed}|{path}".encode()).hexdigest()
        return int(digest[:8], 16) % max(1, n)

    def value(self, schema: Mapping[str, Any], path: str) -> Any:
        if "$ref" in schema:
            return self.value(self.defs.get(str(schema["$ref"]).split("/")[-1], {}), path)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
                return self.value(options[0], path)
        if "enum" in schema:
            return schema["enum"][self._pick(path, len(schema["enum"]))]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or "properties" in schema:
            props = schema.get("properties") or {}
            return {k: self.value(v, f"{path}.{k}") for k, v in props.items()}
        if kind == "array":
            count = 1 + self._pick(path + "#", 3)
            item = schema.get("items") or {}
            return [self.value(item, f"{path}[{i}]") for i in range(count)]
        if kind in ("integer", "number"):
            return self._number(schema, path, kind == "integer")
        if kind == "boolean":
            return self._pick(path, 2) == 1
        if kind == "null":
            return None
        return self._string(path)

    def _number(self, schema: Mapping[str, Any], path: str, integer: bool) -> Any:
        if self.numbers:
            number = self.numbers[self._pick(path, len(self.numbers))]
        else:
            number = float(self._pick(path, 100))
        low, high = schema.get("minimum"), schema.get("maximum")
        number = max(number, float(low)) if low is not None else number
        number = min(number, float(high)) if high is not None else number
        return int(number) if integer else number

    def _string(self, path: str) -> str:
        if self.names:
            return self.names[self._pick(path, len(self.names))]
        if not self.words:
            return f"{path.rsplit('.', 1)[-1]}-{self._pick(path, 10_000)}"
        start = self._pick(path, len(self.words))
        return " ".join(self.words[start : start + 1 + self._pick(path + "+", 2)])


def _proper_names(text: str) -> list[str]:
    """Runs of capitalised words ("Cafe Lumiere", "Ada Lovelace"); a lone capitalised
    word opening a sentence ("What", "Total") is not a name."""
    names: list[str] = []
    for sentence in re.split(r"(?<=[.!?:])\s+", text):
        run: list[str] = []
        start = 0
        for i, word in enumerate([*re.findall(r"[\w'&-]+", sentence), ""]):
            if word[:1].isupper() and len(word) > 2:
                start = i if not run else start
                run.append(word)
                continue
            if run and not (start == 0 and len(run) == 1):
                names.append(" ".join(run))
            run = []
    return list(dict.fromkeys(names))


def _last_user_text(request: LLMRequest) -> str:
    users = [m for m in request.messages if m.get("role") == "user"]
    return message_text(users[-1].get("content")) if users else ""


def _calls_since_user(request: LLMRequest) -> list[str]:
    called: list[str] = []
    for message in request.messages:
        if message["role"] == "user":
            called = []
        for call in message.get("tool_calls") or ():
            called.append(call["function"]["name"])
    return called


def _next_tool(request: LLMRequest) -> Tool | None:
    """The tool this round calls: the named one, else the first not yet called."""
    choice = request.tool_choice
    if not request.tools or (choice is not None and choice.mode is ToolChoiceMode.NONE):
        return None
    called = _calls_since_user(request)
    if choice is not None and choice.mode is ToolChoiceMode.FUNCTION:
        named = next(t for t in request.tools if t.name == choice.name)
        return None if named.name in called else named
    pending = [t for t in request.tools if t.name not in called]
    if pending:
        return pending[0]
    required = choice is not None and choice.mode is ToolChoiceMode.REQUIRED
    return request.tools[0] if required else None


def _tool_results(request: LLMRequest) -> str:
    results = [message_text(m.get("content")) for m in request.messages if m["role"] == "tool"]
    return "; ".join(r for r in results if r)


def _seed(model: str, request: LLMRequest) -> str:
    return json.dumps([model, list(request.messages)], sort_keys=True, default=str)


def _answer(model: str, request: LLMRequest) -> dict[str, Any]:
    """The chat.completion ``message`` and ``finish_reason`` the mock gives."""
    seed = _seed(model, request)
    source = _last_user_text(request)
    tool = _next_tool(request)
    if tool is not None:
        values = _Values(seed, source, tool.parameters.get("$defs") or {})
        arguments = values.value(tool.parameters, tool.name)
        call_id = "call_" + hashlib.sha256(f"{seed}|{tool.name}".encode()).hexdigest()[:24]
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": json.dumps(arguments)},
        }
        return {
            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "finish_reason": "tool_calls",
        }
    fmt = request.response_format
    if fmt is not None and fmt.kind is not OutputKind.TEXT:
        schema = fmt.schema or {"type": "object", "properties": {"answer": {"type": "string"}}}
        value = _Values(seed, source, schema.get("$defs") or {}).value(schema, fmt.name)
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = mock_text(model, request)
        results = _tool_results(request)
        if results:
            text = f"{text} Tool results: {results}."
    return {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}


def _input_tokens(request: LLMRequest) -> int:
    images = sum(
        1
        for m in request.messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image_url"
    )
    tools = json.dumps([t.to_openai() for t in request.tools]) if request.tools else ""
    calls = json.dumps([m.get("tool_calls") for m in request.messages if m.get("tool_calls")])
    extra = estimate_tokens(tools) if tools else 0
    extra += estimate_tokens(calls) if calls != "[]" else 0
    return estimate_tokens(request.messages) + extra + IMAGE_TOKENS * images


async def mock_complete(endpoint: Endpoint, model: str, request: LLMRequest) -> Parsed:
    """Answer after ``endpoint.latency`` seconds, without any network."""
    check_request(endpoint, model, request)
    if endpoint.latency > 0:
        await anyio.sleep(endpoint.latency)
    return parse_message(mock_body(model, request))


def adapter_check(endpoint: Endpoint, model: str, request: LLMRequest) -> None:
    """What the adapter of the provider the model's name belongs to refuses before sending
    (``UnsupportedFeature``)."""
    _adapter_for(model).build(endpoint, model, request)


def check_request(endpoint: Endpoint, model: str, request: LLMRequest) -> None:
    """Fail as the provider the model's name belongs to would: what our adapter refuses
    before sending (``UnsupportedFeature``), then what its server refuses with a 400
    (``ProviderError``, not retryable: a real provider's bad request)."""
    adapter_check(endpoint, model, request)
    refused = server_refusal(model, request)
    if refused is not None:
        raise ProviderError(endpoint.name, 400, refused)


# What each provider's server accepts that our adapters pass through as given: the
# temperature range, and (OpenAI's chat API, whose messages are sent as written) the
# content part types; the words are the providers' own 400s, shortened.
_OPENAI_PARTS = frozenset({"text", "image_url", "input_audio", "file", "refusal", "audio"})


def server_refusal(model: str, request: LLMRequest) -> str | None:
    """The 400 the provider's server would answer ``request`` with, or None (a batch
    reports it as that request's error, a direct call raises it)."""
    name = model.lower()
    top = 1.0 if name.startswith("claude") else 2.0
    temperature = request.temperature
    if temperature is not None and not 0 <= temperature <= top:
        return (
            f"invalid temperature {temperature:g}: it must be between 0 and {top:g} "
            "(the mock refuses what the provider would)"
        )
    if name.startswith(("claude", "gemini")):
        return None  # their adapters translate every part, refusing what they cannot
    for message in request.messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _OPENAI_PARTS:
                supported = ", ".join(sorted(_OPENAI_PARTS))
                return (
                    f"Invalid value: {kind!r} for a content part's type; supported values "
                    f"are: {supported} (an image is {{'type': 'image_url', 'image_url': "
                    "{'url': ...}}; the mock refuses what the provider would)"
                )
    return None


def mock_body(model: str, request: LLMRequest) -> dict[str, Any]:
    """The mock's answer as a chat.completion body (its tokenizer loaded: ``aload_encoder``)."""
    answer = _answer(model, request)
    message = answer["message"]
    produced = message.get("content") or json.dumps(message.get("tool_calls"))
    usage = Usage(input_tokens=_input_tokens(request), output_tokens=estimate_tokens(produced))
    digest = hashlib.sha256(produced.encode("utf-8")).hexdigest()[:24]
    raw = {
        "id": f"mock-{digest}",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer["finish_reason"]}],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
    }
    return raw
