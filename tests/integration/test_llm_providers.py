"""Each provider's request shape and usage parsing, against the fake server over real HTTP."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from baton_nb._usage import Usage
from baton_nb.llm import LLMRequest, complete, estimate_tokens
from baton_nb.pricing import price
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

SYSTEM_AND_USER = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another."},
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _req(model: str, **kw: Any) -> LLMRequest:
    return LLMRequest(model, SYSTEM_AND_USER, **kw)


# ------------------------------------------------------------------ request shapes


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_request_shape(fake_providers: FakeProviderServer, stream: bool) -> None:
    c = await complete(
        _req(
            "openai/gpt-4o-mini",
            temperature=0,
            max_tokens=50,
            stream=stream,
            extra={"top_p": 0.5, "stop": ["\n"]},
        )
    )
    [r] = fake_providers.requests
    assert r.path == "/v1/chat/completions"
    assert r.headers["authorization"] == f"Bearer {DUMMY_KEYS['openai']}"
    assert r.headers["content-type"] == "application/json"
    expected: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [dict(m) for m in SYSTEM_AND_USER],
        "temperature": 0.0,
        "max_completion_tokens": 50,
        "top_p": 0.5,
        "stop": ["\n"],
    }
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert r.json == expected
    assert c.text == fake_providers.text
    assert (c.model, c.provider, c.estimated) == ("openai/gpt-4o-mini", "openai", False)
    assert c.raw["choices"][0]["message"]["content"] == fake_providers.text


@pytest.mark.anyio
async def test_compatible_servers_send_max_tokens(fake_providers: FakeProviderServer) -> None:
    for model in ("local/qwen2", "together/meta-llama/Llama-3.3-70B", "groq/llama-3.1-8b"):
        await complete(_req(model, max_tokens=9, price_as="gpt-4o-mini"))
    bodies = [r.json for r in fake_providers.requests]
    assert [b["max_tokens"] for b in bodies] == [9, 9, 9]
    assert [b["model"] for b in bodies] == ["qwen2", "meta-llama/Llama-3.3-70B", "llama-3.1-8b"]
    local, together, groq = fake_providers.requests
    assert "authorization" not in local.headers
    assert together.headers["authorization"] == f"Bearer {DUMMY_KEYS['together']}"
    assert groq.headers["authorization"] == f"Bearer {DUMMY_KEYS['groq']}"


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_request_shape(fake_providers: FakeProviderServer, stream: bool) -> None:
    c = await complete(_req("anthropic/claude-haiku-4-5", temperature=0.2, stream=stream))
    [r] = fake_providers.requests
    assert r.path == "/v1/messages"
    assert r.headers["x-api-key"] == DUMMY_KEYS["anthropic"]
    assert r.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in r.headers
    expected: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "system": "Be brief.",
        "messages": [dict(m) for m in SYSTEM_AND_USER[1:]],
        "max_tokens": 4096,
        "temperature": 0.2,
    }
    if stream:
        expected["stream"] = True
    assert r.json == expected
    assert c.text == fake_providers.text
    assert c.raw["content"] == [{"type": "text", "text": fake_providers.text}]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("prefix", ["gemini", "google"])
async def test_gemini_request_shape(
    fake_providers: FakeProviderServer, stream: bool, prefix: str
) -> None:
    c = await complete(
        _req(
            f"{prefix}/gemini-2.5-flash",
            temperature=1,
            max_tokens=64,
            stream=stream,
            extra={"generationConfig": {"topK": 3}, "safetySettings": []},
        )
    )
    [r] = fake_providers.requests
    method = "streamGenerateContent" if stream else "generateContent"
    assert r.path == f"/v1beta/models/gemini-2.5-flash:{method}"
    assert r.query == ({"alt": "sse"} if stream else {})
    assert "key" not in r.query
    assert r.headers["x-goog-api-key"] == DUMMY_KEYS["gemini"]
    assert r.json == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Name a colour."}]},
            {"role": "model", "parts": [{"text": "Blue."}]},
            {"role": "user", "parts": [{"text": "Another."}]},
        ],
        "generationConfig": {"temperature": 1.0, "maxOutputTokens": 64, "topK": 3},
        "safetySettings": [],
    }
    assert (c.text, c.provider) == (fake_providers.text, "gemini")


# ------------------------------------------------------------------ usage parsing

CACHED = FakeUsage(input=1000, cached=600, cache_write=100, output=300, reasoning=120)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai/gpt-4o-mini", Usage(1000, 600, 0, 300, 120)),
        ("anthropic/claude-haiku-4-5", Usage(1000, 600, 100, 300, 0)),
        ("gemini/gemini-2.5-flash", Usage(1000, 600, 0, 300, 120)),
    ],
)
async def test_usage_normalisation(
    fake_providers: FakeProviderServer, model: str, expected: Usage, stream: bool
) -> None:
    fake_providers.usage = CACHED
    c = await complete(_req(model, stream=stream))
    assert c.usage == expected
    assert c.estimated is False
    assert c.cost == price(model, expected, cache_write_ttl="5m")
    assert c.cost is not None and c.cost > 0


# Response bodies as the providers document them (not rendered by the fake's helpers).
NATIVE: list[tuple[str, dict[str, Any], Usage, str]] = [
    (
        "openai/o3-mini",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "o3-mini-2025-01-31",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 2006,
                "completion_tokens": 300,
                "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 192,
                    "accepted_prediction_tokens": 0,
                },
            },
        },
        Usage(2006, 1920, 0, 300, 192),
        "Hi!",
    ),
    (
        "anthropic/claude-sonnet-4-5",
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": " there"},
            ],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 50,
                "cache_creation_input_tokens": 2000,
                "cache_read_input_tokens": 10000,
                "output_tokens": 503,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 2000,
                    "ephemeral_1h_input_tokens": 0,
                },
            },
        },
        Usage(12050, 10000, 2000, 503, 0),
        "Hello there",
    ),
    (
        "gemini/gemini-2.5-pro",
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "thinking...", "thought": True}, {"text": "Paris."}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 4000,
                "candidatesTokenCount": 12,
                "totalTokenCount": 4412,
                "cachedContentTokenCount": 3000,
                "thoughtsTokenCount": 400,
            },
            "modelVersion": "gemini-2.5-pro",
        },
        Usage(4000, 3000, 0, 412, 400),
        "Paris.",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "body", "usage", "text"), NATIVE)
async def test_native_response_bodies(
    fake_providers: FakeProviderServer, model: str, body: dict[str, Any], usage: Usage, text: str
) -> None:
    fake_providers.script(Reply(body=body))
    c = await complete(_req(model))
    assert (c.text, c.usage) == (text, usage)
    assert c.raw == body
    assert c.cost == price(model, usage)


@pytest.mark.anyio
async def test_anthropic_one_hour_cache_writes_are_priced_as_such(
    fake_providers: FakeProviderServer,
) -> None:
    body = dict(NATIVE[1][1])
    body["usage"] = {
        **body["usage"],
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2000},
    }
    fake_providers.script(Reply(body=body))
    c = await complete(_req("anthropic/claude-sonnet-4-5"))
    assert c.usage.cache_write_1h_tokens == 2000 == c.usage.cache_write_tokens
    assert c.cost == price("anthropic/claude-sonnet-4-5", c.usage, cache_write_ttl="1h")
    five_minutes = replace(c.usage, cache_write_1h_tokens=0)
    assert c.cost != price("anthropic/claude-sonnet-4-5", five_minutes)


@pytest.mark.anyio
async def test_anthropic_stream_usage_from_start_and_delta(
    fake_providers: FakeProviderServer,
) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [],
            "stop_reason": None,
            "usage": {
                "input_tokens": 25,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5,
                "output_tokens": 1,
            },
        },
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", start),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    fake_providers.script(Reply(events=events))
    c = await complete(_req("anthropic/claude-haiku-4-5", stream=True))
    assert c.text == "Hello"
    assert c.usage == Usage(130, 100, 5, 42, 0)
    assert c.raw["stop_reason"] == "end_turn"
    assert c.raw["usage"]["output_tokens"] == 42


@pytest.mark.anyio
async def test_gemini_stream_takes_last_usage(fake_providers: FakeProviderServer) -> None:
    fake_providers.usage = FakeUsage(input=77, output=20, reasoning=5)
    c = await complete(_req("gemini/gemini-2.5-flash", stream=True))
    assert c.usage == Usage(77, 0, 0, 20, 5)
    assert c.raw["usageMetadata"]["thoughtsTokenCount"] == 5
    assert c.raw["candidates"][0]["content"]["parts"] == [{"text": fake_providers.text}]


# ------------------------------------------------------------------ cost sources


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_openrouter_reported_cost_wins(
    fake_providers: FakeProviderServer, stream: bool
) -> None:
    fake_providers.usage = FakeUsage(input=100, output=50, cost=0.00123)
    c = await complete(_req("openrouter/meta-llama/llama-3.3-70b-instruct", stream=stream))
    assert c.cost == Decimal("0.00123")
    [r] = fake_providers.requests
    assert r.json["usage"] == {"include": True}
    assert r.headers["authorization"] == f"Bearer {DUMMY_KEYS['openrouter']}"


@pytest.mark.anyio
async def test_openrouter_without_reported_cost_uses_the_table(
    fake_providers: FakeProviderServer,
) -> None:
    c = await complete(_req("openrouter/meta-llama/llama-3.3-70b-instruct"))
    assert c.cost == price("openrouter/meta-llama/llama-3.3-70b-instruct", c.usage)


@pytest.mark.anyio
async def test_price_as(fake_providers: FakeProviderServer) -> None:
    c = await complete(_req("local/my-finetune", price_as="openai/gpt-4o"))
    assert c.cost == price("openai/gpt-4o", c.usage)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "model", ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_no_usage_is_estimated(
    fake_providers: FakeProviderServer, model: str, stream: bool
) -> None:
    fake_providers.omit_usage = True
    fake_providers.text = "A fairly short answer of several words."
    c = await complete(_req(model, stream=stream))
    assert c.estimated is True
    assert c.usage == Usage(
        input_tokens=estimate_tokens(SYSTEM_AND_USER),
        output_tokens=estimate_tokens(fake_providers.text),
    )
    assert c.cost == price(model, c.usage)


@pytest.mark.anyio
async def test_unreported_usage_of_unknown_local_model(fake_providers: FakeProviderServer) -> None:
    from baton_nb.pricing import UnknownPriceWarning

    fake_providers.omit_usage = True
    with pytest.warns(UnknownPriceWarning):
        c = await complete(_req("local/unknown-model-abc"))
    assert c.cost is None and c.estimated is True


@pytest.mark.anyio
async def test_non_sse_answer_to_a_stream_request(fake_providers: FakeProviderServer) -> None:
    body = NATIVE[0][1]
    fake_providers.script(Reply(body=body))
    c = await complete(_req("openai/o3-mini", stream=True))
    assert c.text == "Hi!" and c.usage == NATIVE[0][2]
