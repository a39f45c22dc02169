"""The request, completion and limit value types, and the request hash used for replay."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from json.encoder import encode_basestring
from math import isfinite
from types import MappingProxyType
from typing import Any

from baton_nb._errors import ConfigurationError
from baton_nb._usage import USAGE_FIELDS, Usage, usage_values
from baton_nb.pricing._types import CallPricing

from ._jsonenc import one_shot
from ._neutral import (
    Reasoning,
    ResponseFormat,
    Tool,
    ToolChoice,
    freeze_messages,
    to_reasoning,
    to_response_format,
    to_tool_choice,
    to_tools,
)

__all__ = [
    "COMPACT_JSON",
    "Completion",
    "FinishReason",
    "LLMRequest",
    "Limit",
    "ToolCall",
    "compact_json",
    "new_completion",
    "request_hash",
    "split_model",
]


def split_model(model: str) -> tuple[str, str]:
    """Split ``"provider/model"`` into ``(provider, model)`` at the first slash.

    ``"openrouter/meta-llama/llama-3.3-70b-instruct"`` gives
    ``("openrouter", "meta-llama/llama-3.3-70b-instruct")``.
    """
    if not isinstance(model, str):
        raise ConfigurationError(f"model must be a string like 'openai/gpt-4o-mini', got {model!r}")
    return _split_model(model)


@lru_cache(maxsize=1024)
def _split_model(model: str) -> tuple[str, str]:
    """:func:`split_model` of a string, once per model name (two or three times a call)."""
    provider, sep, name = model.partition("/")
    if not sep or not provider.strip() or not name.strip():
        raise ConfigurationError(
            f"model must be written 'provider/model' (e.g. 'openai/gpt-4o-mini', "
            f"'anthropic/claude-haiku-4-5', 'mock/gpt-4o-mini'), got {model!r}"
        )
    return provider.strip().lower(), name.strip()


_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})  # read-only and empty: one for all


@dataclass(frozen=True)
class LLMRequest:
    """One chat-completion call, provider-neutral (the OpenAI Chat Completions shape).

    ``messages`` hold text and image parts (``image_url`` with an https URL, a data
    URL, or bytes), assistant ``tool_calls`` and ``role: "tool"`` results; ``tools``
    are JSON-Schema functions (dicts or Python functions), ``tool_choice`` is
    ``auto | none | required | {"type": "function", ...}``, ``response_format`` a
    pydantic model class, a JSON Schema or an OpenAI ``response_format`` dict,
    ``reasoning`` an effort, a token budget or a dict. Each adapter translates them;
    what a provider cannot do raises ``UnsupportedFeature`` before sending.
    ``extra`` is merged as-is into the provider's JSON body (provider-native names:
    ``top_p``, ``stop``, Gemini ``safetySettings`` …).
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    timeout: float | None = None
    price_as: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    # the response cache (DESIGN §11): None follows the workflow's setting; a salt asks
    # for a fresh answer (it is part of the cache key, never sent)
    cache: bool | None = None
    cache_salt: str | None = None

    def __post_init__(self) -> None:
        split_model(self.model)
        object.__setattr__(self, "messages", freeze_messages(self.messages))
        # What is left at its default is already in its checked form: not converted again
        # (a request is built per call; each conversion and frozen set costs ~0.1-0.3 us).
        if self.extra is not _NO_EXTRA:
            object.__setattr__(self, "extra", MappingProxyType(dict(self.extra or {})))
        if type(self.tools) is not tuple or self.tools or self.tool_choice is not None:
            tools = to_tools(self.tools or None)
            object.__setattr__(self, "tools", tools)
            object.__setattr__(self, "tool_choice", to_tool_choice(self.tool_choice, tools))
        if self.response_format is not None:
            object.__setattr__(self, "response_format", to_response_format(self.response_format))
        if self.reasoning is not None:
            object.__setattr__(self, "reasoning", to_reasoning(self.reasoning))
        if self.temperature is not None:
            object.__setattr__(self, "temperature", float(self.temperature))
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise ConfigurationError(f"max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {self.timeout!r}")

    def neutral_params(self) -> dict[str, Any]:
        """The tools, tool choice, output format and reasoning that are set, as JSON."""
        params: dict[str, Any] = {}
        if self.tools:
            params["tools"] = [t.to_openai() for t in self.tools]
        if self.tool_choice is not None:
            params["tool_choice"] = self.tool_choice.to_openai()
        if self.response_format is not None:
            params["response_format"] = self.response_format.key()
        if self.reasoning is not None:
            params["reasoning"] = self.reasoning.key()
        return params

    @property
    def provider(self) -> str:
        return split_model(self.model)[0]

    @property
    def model_name(self) -> str:
        return split_model(self.model)[1]


def plain_request(
    model: str,
    messages: Any,
    temperature: float | None,
    max_tokens: int | None,
    stream: bool,
    timeout: float | None,
    price_as: str | None,
    cache: bool | None,
    cache_salt: str | None,
) -> LLMRequest:
    """``LLMRequest(...)`` of a call with no ``extra``, tools, tool choice, output
    format nor reasoning (``ctx.complete(prompt=...)``'s usual call): the checks and
    conversions of ``__post_init__``, in its order, then the fields filled in their
    order, without the frozen ``__init__``'s ``object.__setattr__`` per field and the
    defaults' checks (~2-3 us a call). The same object (a test compares it, and the
    errors, with the constructor's)."""
    split_model(model)
    frozen = freeze_messages(messages)
    if temperature is not None:
        temperature = float(temperature)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise ConfigurationError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
    request = _new_object(LLMRequest)
    request.__dict__.update(
        {
            "model": model,
            "messages": frozen,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stream": stream,
            "timeout": timeout,
            "price_as": price_as,
            "extra": _NO_EXTRA,
            "tools": (),
            "tool_choice": None,
            "response_format": None,
            "reasoning": None,
            "cache": cache,
            "cache_salt": cache_salt,
        }
    )
    return request


_HASH_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_hash_json = one_shot(_HASH_JSON)  # the same text, without the per-call set-up


def request_hash(request: LLMRequest) -> str:
    """sha256 hex of the canonical JSON of what determines the answer.

    Covers model, messages, temperature, max_tokens, price_as, extra, and the tools,
    tool choice, output format and reasoning when set (absent ones leave the hash of
    older requests unchanged); not ``stream`` nor ``timeout`` (they change how, not
    what, is asked).
    """
    text = _plain_hash_text(request)
    if text is not None:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "price_as": request.price_as,
        "extra": dict(request.extra),
        **request.neutral_params(),
    }
    try:
        text = _hash_json(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"LLMRequest messages and extra must be JSON-serialisable: {exc}"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain_hash_text(request: LLMRequest) -> str | None:
    """``_hash_json`` of ``request_hash``'s payload, written here for a plain request (no
    ``extra``, tools, tool choice, output format nor reasoning; each message a dict of
    exactly a str ``role`` and a str ``content``; a str model and ``price_as`` or None, an
    int or None ``max_tokens``, a finite float or None ``temperature``): its keys in sorted
    order, each value as the C encoder writes it (a str escaped by the same function, an
    int by ``int.__repr__``, a float by ``float.__repr__``). Building the payload and
    encoding it with sorted keys was ~5 us of a call; this ~1.5. None: anything else,
    encoded by the encoder (a test compares the digests of both over odd values)."""
    if (
        request.extra
        or request.tools
        or request.tool_choice is not None
        or request.response_format is not None
        or request.reasoning is not None
    ):
        return None
    model, price_as = request.model, request.price_as
    temperature, max_tokens = request.temperature, request.max_tokens
    if type(model) is not str:
        return None
    if price_as is None:
        price_text = "null"
    elif type(price_as) is str:
        price_text = _STR(price_as)
    else:
        return None
    if temperature is None:
        temperature_text = "null"
    elif type(temperature) is float and isfinite(temperature):
        temperature_text = float.__repr__(temperature)
    else:
        return None
    if max_tokens is None:
        tokens_text = "null"
    elif type(max_tokens) is int:
        tokens_text = int.__repr__(max_tokens)
    else:
        return None
    parts = []
    for message in request.messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        parts.append(f'{{"content":{_STR(content)},"role":{_STR(role)}}}')
    return (
        f'{{"extra":{{}},"max_tokens":{tokens_text},"messages":[{",".join(parts)}],'
        f'"model":{_STR(model)},"price_as":{price_text},"temperature":{temperature_text}}}'
    )


@dataclass(frozen=True)
class Limit:
    """Per-provider limits, shared by every run in the process (and by all workers
    together, through Postgres, for runs submitted to workers: docs/workers.md).

    ``concurrency``: requests in flight; ``rpm``: requests per minute;
    ``tpm``: tokens per minute (estimated before the call, corrected after).
    """

    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise ConfigurationError(
                    f"Limit.{name} must be a positive int or None, got {value!r}"
                )


class FinishReason(str, Enum):
    """Why the model stopped, the same words for every provider."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    REFUSAL = "refusal"


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for.

    ``arguments`` is the parsed JSON object, ``None`` when the model's arguments are
    not a JSON object (``arguments_json`` keeps them verbatim either way).
    ``extra_content`` carries provider state that must go back with the call (Gemini's
    ``thought_signature``, in the shape Google's OpenAI-compatible API uses).
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    arguments_json: str
    extra_content: Mapping[str, Any] | None = None

    @classmethod
    def from_arguments(
        cls,
        id: str,
        name: str,
        arguments: Any,
        extra_content: Mapping[str, Any] | None = None,
    ) -> ToolCall:
        """From a JSON string (OpenAI) or an already-parsed object (Anthropic, Gemini)."""
        if isinstance(arguments, str):
            text = arguments
            try:
                value = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                value = None
        else:
            value = {} if arguments is None else arguments
            text = json.dumps(value, ensure_ascii=False)
        parsed = value if isinstance(value, dict) else None
        return cls(id, name, parsed, text, extra_content)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-shaped tool call of an assistant message."""
        call: dict[str, Any] = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json},
        }
        if self.extra_content:
            call["extra_content"] = dict(self.extra_content)
        return call

    @classmethod
    def from_dict(cls, call: Mapping[str, Any]) -> ToolCall:
        function = call.get("function") or {}
        return cls.from_arguments(
            str(call.get("id") or ""),
            str(function.get("name") or ""),
            function.get("arguments") or "",
            call.get("extra_content"),
        )


@dataclass(frozen=True)
class Completion:
    """The answer to one :class:`LLMRequest`.

    ``model`` is the requested ``provider/model`` string; ``provider`` the
    canonical provider name (``google/…`` gives ``gemini``). ``cost`` is USD,
    ``None`` when the model's price is unknown (never a silent 0).
    ``estimated`` means the provider reported no usage and tiktoken counted;
    ``replayed`` that the answer came from the replay store, not the network.
    ``tool_calls`` are the functions the model asked for, ``parsed`` the validated
    structured answer (for ``response_format=``), ``refusal`` the model's refusal,
    ``finish_reason`` why it stopped, ``reasoning`` the reasoning summary (thinking
    text) where the provider returns one. ``message`` is the assistant message to
    append to ``messages`` for the next turn (tool calls and any provider state that
    must go back with them included).
    ``pricing`` says how ``cost`` was found: the name priced, the price source
    (``genai-prices 0.2.5``, ``baton_nb override``, ``user file …``, ``reported by
    openrouter``), the matched price entry and the per-request fees within the cost.
    """

    text: str
    model: str
    provider: str
    usage: Usage
    cost: Decimal | None
    latency_ms: float
    raw: dict[str, Any] = field(repr=False)
    estimated: bool = False
    replayed: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: Any = None
    refusal: str | None = None
    finish_reason: FinishReason | None = None
    reasoning: str | None = None
    message: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message", assistant_message(self.text, self.tool_calls))

    pricing: CallPricing | None = None
    # answered from the response cache (DESIGN §11): cost 0, ``saved`` what it cost when paid
    cached: bool = False
    saved: Decimal | None = None

    def keep_raw_json(self, encoded: str) -> None:
        """``raw``'s compact JSON, encoded already (by the secrets check): :meth:`to_json`
        writes it instead of encoding ``raw`` again, while ``raw`` is still that object
        (a ``replace()`` makes a completion without it)."""
        object.__setattr__(self, "_raw_json", (self.raw, encoded))

    def to_json(self) -> str:
        """Serialise exactly (cost as a decimal string) for the replay store.

        ``parsed`` is not stored: it is validated again from ``text`` (with the
        request's ``response_format``) when the completion is replayed. The text is
        ``COMPACT_JSON.encode`` of the dict of the fields below, in this order, written
        field by field (``_json``; a third of the encoder's time a call): the same bytes.
        """
        kept = self.__dict__.get("_raw_json")
        raw = kept[1] if kept is not None and kept[0] is self.raw else compact_json(self.raw)
        cost, finish, pricing = self.cost, self.finish_reason, self.pricing
        calls = self.tool_calls
        tool_calls = compact_json([c.to_dict() for c in calls]) if calls else "[]"
        tail = f',"cached":true,"saved":{_json(_money_text(self.saved))}' if self.cached else ""
        text = _STR(self.text) if type(self.text) is str else _json(self.text)
        message = _message_json(self.message, self.text, text)
        return (
            f'{{"text":{text},"model":{_json(self.model)},'
            f'"provider":{_json(self.provider)},"usage":{_usage_json(self.usage)},'
            f'"cost":{"null" if cost is None else _json(str(cost))},'
            f'"latency_ms":{_json(self.latency_ms)},"raw":{raw},'
            f'"estimated":{_json(self.estimated)},"replayed":{_json(self.replayed)},'
            f'"tool_calls":{tool_calls},"refusal":{_json(self.refusal)},'
            f'"finish_reason":{"null" if finish is None else _json(finish.value)},'
            f'"reasoning":{_json(self.reasoning)},"message":{message},'
            f'"pricing":{"null" if pricing is None else _pricing_json(pricing)}{tail}}}'
        )

    @classmethod
    def from_json(cls, s: str) -> Completion:
        """A stored completion; rows written before tool calls existed load with none."""
        data = json.loads(s)
        cost = data.get("cost")
        finish = data.get("finish_reason")
        pricing = data.get("pricing")  # absent from completions stored before it existed
        return cls(
            text=data["text"],
            model=data["model"],
            provider=data["provider"],
            usage=Usage.from_dict(data.get("usage") or {}),
            cost=None if cost is None else Decimal(cost),
            latency_ms=float(data["latency_ms"]),
            raw=data.get("raw") or {},
            estimated=bool(data.get("estimated", False)),
            replayed=bool(data.get("replayed", False)),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            refusal=data.get("refusal"),
            finish_reason=None if finish is None else FinishReason(finish),
            reasoning=data.get("reasoning"),
            message=data.get("message") or {},
            pricing=CallPricing.from_dict(pricing) if isinstance(pricing, dict) else None,
            cached=bool(data.get("cached", False)),
            saved=None if data.get("saved") is None else Decimal(data["saved"]),
        )


def new_completion(
    text: str,
    model: str,
    provider: str,
    usage: Usage,
    cost: Decimal | None,
    latency_ms: float,
    raw: dict[str, Any],
    estimated: bool,
    tool_calls: tuple[ToolCall, ...],
    refusal: str | None,
    finish_reason: FinishReason | None,
    reasoning: str | None,
    message: Mapping[str, Any],
    pricing: CallPricing | None,
) -> Completion:
    """``Completion(...)`` of a call's answer (not replayed, not parsed, not cached), made
    by filling its ``__dict__`` in field order: a frozen dataclass's ``__init__`` sets each
    of its 18 fields with ``object.__setattr__`` (~2.5 µs a call, a third of that here).
    The same object (a test compares every field and their order with the constructor's)."""
    completion = _new_object(Completion)
    completion.__dict__.update(
        {
            "text": text,
            "model": model,
            "provider": provider,
            "usage": usage,
            "cost": cost,
            "latency_ms": latency_ms,
            "raw": raw,
            "estimated": estimated,
            "replayed": False,
            "tool_calls": tool_calls,
            "parsed": None,
            "refusal": refusal,
            "finish_reason": finish_reason,
            "reasoning": reasoning,
            "message": message or assistant_message(text, tool_calls),  # __post_init__'s
            "pricing": pricing,
            "cached": False,
            "saved": None,
        }
    )
    return completion


_new_object = object.__new__

# The replay store's JSON: compact, UTF-8. One encoder object (json.dumps with options
# makes one per call).
COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
compact_json = one_shot(COMPACT_JSON)  # ``COMPACT_JSON.encode``, without its per-call set-up
_STR = encode_basestring  # how COMPACT_JSON writes a str (ensure_ascii=False)
# Usage's fields as COMPACT_JSON writes them: each a non-negative int, not a bool (checked
# when a Usage is made), which "%d" writes as the encoder does.
_USAGE_JSON = "{" + ",".join(f'"{name}":%d' for name in USAGE_FIELDS) + "}"


def _json(value: Any) -> str:
    """``COMPACT_JSON.encode(value)``: a str, None, a bool, an int or a finite float written
    here as its C encoder writes it (the str escaped by the same function, the numbers by
    ``int.__repr__`` and ``float.__repr__``), anything else by the encoder."""
    kind = type(value)
    if kind is str:
        return _STR(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and isfinite(value):
        return float.__repr__(value)
    return compact_json(value)


def _usage_json(usage: Usage) -> str:
    return _USAGE_JSON % usage_values(usage)


def _message_json(message: Mapping[str, Any], text: Any = None, text_json: str = "") -> str:
    """``COMPACT_JSON.encode(dict(message))``; a plain answer's ``{"role": ..., "content":
    ...}`` written here (its content's encoding ``text_json`` when the content is ``text``,
    the completion's text, encoded already)."""
    if len(message) == 2 and tuple(message) == ("role", "content"):
        role = message["role"]
        if type(role) is str:
            content = message["content"]
            encoded = text_json if content is text and text_json else _json(content)
            return f'{{"role":{_STR(role)},"content":{encoded}}}'
    return compact_json(dict(message))


_PRICING_JSON: dict[tuple[Any, ...], str] = {}  # a few pricings per model: cleared at 256


def _pricing_json(pricing: CallPricing) -> str:
    """``COMPACT_JSON.encode(pricing.to_dict())``, once per pricing. Keyed by the fees' text,
    not by the pricing (its ``Decimal`` fees compare equal as numbers: ``0`` and ``0.0``)."""
    fees = pricing.fees
    text_of_fees = None if fees is None else str(fees)
    key = (pricing.priced_as, pricing.source, pricing.model, text_of_fees, pricing.batch)
    text = _PRICING_JSON.get(key)
    if text is None:
        if len(_PRICING_JSON) >= 256:
            _PRICING_JSON.clear()
        text = _PRICING_JSON[key] = COMPACT_JSON.encode(pricing.to_dict())
    return text


def _money_text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def assistant_message(
    text: str,
    tool_calls: Sequence[ToolCall] = (),
    thinking_blocks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The neutral assistant message for a reply (OpenAI shape; ``thinking_blocks`` is the
    Anthropic thinking that must precede its tool calls when the history goes back)."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = [c.to_dict() for c in tool_calls]
    if thinking_blocks:
        message["thinking_blocks"] = [dict(b) for b in thinking_blocks]
    if message["content"] is None and not tool_calls:
        message["content"] = ""
    return message
