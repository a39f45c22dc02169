"""``complete()``: resolve the provider, respect limits, call with retries, count and price."""

from __future__ import annotations

import json
import logging
import time
from json.encoder import encode_basestring as _JSON_STR
from typing import Any

from baton_nb._gc import fewer_collections_begin, fewer_collections_end
from baton_nb._usage import Usage

from ._anthropic import AnthropicAdapter
from ._client import get_client, shared_now
from ._config import Endpoint, default_timeout, resolve_endpoint, retry_settings
from ._cost import cost_now, load_pricing, pricing_loaded
from ._gemini import GeminiAdapter
from ._jsonenc import one_shot
from ._limits import Permit, acquire, limit_for
from ._mock import mock_complete
from ._openai import OpenAIAdapter
from ._output import awith_parsed
from ._redact import Scrubber, scrubber
from ._responses import ResponsesAdapter
from ._retry import with_retries
from ._tokens import aestimate_tokens, aload_encoder
from ._transport import send
from ._types import Completion, LLMRequest, ToolCall, new_completion, split_model
from ._wire import Adapter, Parsed

__all__ = [
    "adapter_for",
    "complete",
    "complete_unparsed",
    "completion_of",
    "pricing_model",
    "usage_of",
]

logger = logging.getLogger("baton_nb.llm")

_clock = time.perf_counter  # the latency clock (tests inject their own)
_UNLIMITED = Permit(None, 0)  # what acquire() yields for a provider without limits
_ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "responses": ResponsesAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
}


def adapter_for(endpoint: Endpoint) -> Adapter:
    """The wire format of a (non-mock) endpoint."""
    return _ADAPTERS[endpoint.kind]


async def usage_of(parsed: Parsed, request: LLMRequest) -> tuple[Usage, bool]:
    """The reported usage, or a tiktoken estimate flagged ``estimated``."""
    if parsed.usage is not None:
        return parsed.usage, False
    usage = Usage(
        input_tokens=await aestimate_tokens(request.messages),
        output_tokens=await aestimate_tokens(parsed.text),
    )
    return usage, True


async def _token_estimate(request: LLMRequest, tpm_limited: bool) -> int:
    """Tokens reserved against a tokens/minute limit: the prompt plus ``max_tokens``."""
    if not tpm_limited:
        return 0
    return await aestimate_tokens(request.messages) + (request.max_tokens or 0)


def pricing_model(endpoint: Endpoint, model: str, request: LLMRequest) -> str:
    """The name the price tables are asked for: ``price_as=``, else the model (``mock/NAME``
    as it is: the tables price it as bn.price does, a price file's mock entry first)."""
    if request.price_as:
        return request.price_as
    if endpoint.price_provider:
        return f"{endpoint.price_provider}/{model}"
    return f"mock/{model}" if endpoint.kind == "mock" else request.model


async def _measured(
    endpoint: Endpoint, model: str, request: LLMRequest, permit: Permit
) -> tuple[Parsed, float, Usage, bool]:
    """The call (with its retries) under ``permit``: response, latency in ms and usage."""
    if endpoint.kind == "mock":
        # The mock counts tokens with tiktoken: its encoding (~150 ms to load the first
        # time) is loaded in a worker thread, before the clock starts. The latency is the
        # call's, not the process's warm-up.
        await aload_encoder()
        started = _clock()
        await permit.attempt()
        parsed = await mock_complete(endpoint, model, request)
    else:  # _call, without a coroutine level of its own
        adapter = _ADAPTERS[endpoint.kind]
        call = adapter.build(endpoint, model, request)  # UnsupportedFeature before any network
        seconds = request.timeout or endpoint.timeout or default_timeout()
        if shared_now() is None:
            # The process's first call makes the shared client (aiohttp imported, the SSL
            # context loaded: 0.1-0.6 s) before the clock starts: the latency is the
            # provider's, not the process's warm-up.
            await get_client()
        started = _clock()

        async def attempt() -> Parsed:
            await permit.attempt()
            return await send(endpoint, adapter, call, stream=request.stream, seconds=seconds)

        parsed = await with_retries(endpoint.name, retry_settings(), attempt)
    latency_ms = (_clock() - started) * 1000.0
    if parsed.usage is not None:  # usage_of's reported usage, without a coroutine
        usage, estimated = parsed.usage, False
    else:
        usage, estimated = await usage_of(parsed, request)
    permit.correct(usage.total_tokens)
    return parsed, latency_ms, usage, estimated


async def complete(request: LLMRequest) -> Completion:
    """Make one LLM call (retrying 429/5xx/timeouts inside) and return its Completion.

    Raises ``ConfigurationError`` before any network use for an unknown
    provider or a missing key, ``UnsupportedFeature`` for what the provider cannot
    do, and ``ProviderError`` when the provider refuses (at once for 4xx, after the
    retries for 429/5xx/timeouts and cut-off streams). With a JSON
    ``response_format``, ``parsed`` holds the validated answer; an answer that fails
    validation raises ``OutputValidationError`` (its ``completion`` is the paid call).

    While any call is in flight (as while a run executes) the process's garbage collector
    makes young collections every 200,000 allocations instead of 700, and full ones after
    1,000 middle ones instead of 10 (``baton_nb/_gc.py``; the thresholds come back when
    the last call ends; a threshold set higher, or a disabled collector, is left alone):
    at the defaults, a fan-out of calls spends a third of its CPU collecting.
    """
    completion = await complete_unparsed(request)
    if request.response_format is None:  # nothing to validate: no coroutine for it
        return completion
    return await awith_parsed(completion, request)


async def complete_unparsed(request: LLMRequest) -> Completion:
    """:func:`complete` without the ``response_format`` validation (``parsed`` is None):
    the runtime records the paid call first, then validates.

    While a call is in flight the collector's young threshold is raised, as while a run
    executes (``baton_nb/_gc.py``: ~0.12-0.15 ms a call of the collector's at 200 in
    flight otherwise), and restored when the last call in flight ends."""
    if not isinstance(request, LLMRequest):
        raise TypeError(f"complete() takes an LLMRequest, got {type(request).__name__}")
    fewer_collections_begin()
    try:
        provider, model = split_model(request.model)
        endpoint = resolve_endpoint(provider)
        limit = limit_for(endpoint.name)
        if limit is None:  # nothing to hold or reserve: no context manager per call
            measured = await _measured(endpoint, model, request, _UNLIMITED)
        else:
            estimate = await _token_estimate(request, bool(limit.tpm))
            async with acquire(endpoint.name, estimate) as permit:
                measured = await _measured(endpoint, model, request, permit)
        parsed, latency_ms, usage, estimated = measured
        logger.debug("%s: %d tokens in %.0f ms", request.model, usage.total_tokens, latency_ms)
        if pricing_loaded():  # completion_of without a coroutine (the tables are loaded)
            return completion_now(endpoint, model, request, parsed, latency_ms, usage, estimated)
        return await completion_of(endpoint, model, request, parsed, latency_ms, usage, estimated)
    finally:
        fewer_collections_end()


async def completion_of(
    endpoint: Endpoint,
    model: str,
    request: LLMRequest,
    parsed: Parsed,
    latency_ms: float,
    usage: Usage,
    estimated: bool,
    *,
    batch: bool = False,
) -> Completion:
    """The ``Completion`` of a parsed answer: priced (at batch rates for a provider batch's
    answer, ``batch=True``), secrets scrubbed. Shared by direct calls and provider batches."""
    if not pricing_loaded():  # once: then no coroutine per call
        await load_pricing()
    return completion_now(
        endpoint, model, request, parsed, latency_ms, usage, estimated, batch=batch
    )


def completion_now(
    endpoint: Endpoint,
    model: str,
    request: LLMRequest,
    parsed: Parsed,
    latency_ms: float,
    usage: Usage,
    estimated: bool,
    *,
    batch: bool = False,
) -> Completion:
    """:func:`completion_of` once the price tables are loaded (``pricing_loaded``)."""
    # price_as= always wins; else a cost the server reports, where it is trusted
    trusted = endpoint.reported_cost and not request.price_as
    cost, pricing = cost_now(
        pricing_model(endpoint, model, request),
        usage,
        called_as=request.model,
        reported=parsed.reported_cost if trusted else None,
        reported_by=endpoint.name,
        batch=batch,
    )
    scrub = scrubber()
    raw, raw_json = scrub.json_encoded(parsed.raw, parsed.raw_text())
    text = scrub.keys(parsed.text)
    calls = parsed.tool_calls
    completion = new_completion(  # Completion(...) of these fields, without its __init__
        text,
        request.model,
        endpoint.name,
        usage,
        cost,
        latency_ms,
        raw,
        estimated,
        tuple(ToolCall.from_dict(_keys(scrub, c.to_dict())) for c in calls) if calls else (),
        None if parsed.refusal is None else scrub.keys(parsed.refusal),
        parsed.finish_reason,
        None if parsed.reasoning is None else scrub.keys(parsed.reasoning),
        _message_keys(scrub, parsed.message, parsed.text, text),
        pricing,
    )
    if raw_json is not None:
        completion.keep_raw_json(raw_json)
    return completion


_KEYS_JSON = one_shot(json.JSONEncoder(ensure_ascii=False))  # its set-up made once


def _message_keys(scrub: Scrubber, message: dict[str, Any], text: str, scrubbed: str) -> Any:
    """:func:`_keys` of the assistant message, ``scrubbed`` being ``scrub.keys(text)``.
    A plain answer, ``{"role": "assistant", "content": s}`` with nothing in ``s`` that JSON
    escapes, is scrubbed without encoding it: its encoding is then ``s`` itself between
    fixed text, where no known key can match (``Scrubber.plain_keys``), so the keys
    replaced in the encoding are the ones replaced in ``s``, and nothing else."""
    if not scrub.has_secrets:
        return message
    content = message.get("content")
    if (
        scrub.plain_keys
        and type(content) is str
        and len(message) == 2
        and tuple(message) == ("role", "content")  # in this order
        and message["role"] == "assistant"
        and type(message["role"]) is str
        and len(_JSON_STR(content)) == len(content) + 2  # no escapes: written as it is
    ):
        done = scrubbed if content is text else scrub.keys(content)
        return message if done == content else {"role": "assistant", "content": done}
    return _keys(scrub, message)


def _keys(scrub: Scrubber, value: dict[str, Any]) -> dict[str, Any]:
    """Model output (tool arguments, messages) with exact key values replaced, like
    ``text``: secret-shaped content and opaque provider tokens (thought signatures)
    stay as they are, or they could not go back to the provider."""
    if not scrub.has_secrets:  # no key known: nothing to replace
        return value
    flat = _KEYS_JSON(value)
    scrubbed = scrub.keys_json(flat)
    return value if scrubbed == flat else dict(json.loads(scrubbed))
