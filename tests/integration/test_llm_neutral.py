"""One neutral request, four wire formats: the exact bodies sent to the fake provider server,
each checked against its provider's documented request schema (tests/data/providers).

The same request (a system prompt, text + an image as bytes, two tools, an assistant tool
call with its thinking, the tool's result, a pydantic response_format, a reasoning
setting) goes to OpenAI Chat Completions, the Responses API, Anthropic Messages and
Gemini; what a provider cannot do fails before anything is sent.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel

from baton_nb import ConfigurationError
from baton_nb._errors import UnsupportedFeature
from baton_nb.llm import LLMRequest, complete, configure
from tests.fakes.provider_server import FakeProviderServer, Reply

DATA = Path(__file__).resolve().parents[1] / "data" / "providers"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()


class Outfit(BaseModel):
    top: str
    layers: int
    umbrella: bool
    shoes: Literal["boots", "sneakers", "sandals"]


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TIME = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_local_time",
            "description": "Local time in a city.",
            "parameters": TIME,
        },
    },
]
QUESTION = "What should I wear in Paris today? Here is the forecast chart."
ARGS = '{"city": "Paris", "unit": "celsius"}'
THINKING = {
    "type": "thinking",
    "thinking": "I need the weather first.",
    "signature": "EqQBCgIYAhIM",
}
MESSAGES = [
    {"role": "system", "content": "You are a travel assistant."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": PNG}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ARGS},
            }
        ],
        "thinking_blocks": [THINKING],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, light rain"},
]
REASONING = {"effort": "low", "budget_tokens": 2048}
OUTFIT_JSON = '{"top": "rain jacket", "layers": 2, "umbrella": true, "shoes": "boots"}'
OUTFIT = Outfit(top="rain jacket", layers=2, umbrella=True, shoes="boots")
STRICT_OUTFIT = {
    "properties": {
        "top": {"title": "Top", "type": "string"},
        "layers": {"title": "Layers", "type": "integer"},
        "umbrella": {"title": "Umbrella", "type": "boolean"},
        "shoes": {"enum": ["boots", "sneakers", "sandals"], "title": "Shoes", "type": "string"},
    },
    "required": ["top", "layers", "umbrella", "shoes"],
    "title": "Outfit",
    "type": "object",
    "additionalProperties": False,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _request(model: str, **kw: Any) -> LLMRequest:
    options: dict[str, Any] = {
        "tools": TOOLS,
        "tool_choice": "auto",
        "response_format": Outfit,
        "reasoning": REASONING,
    }
    options.update(kw)
    return LLMRequest(model, MESSAGES, **options)


def _discriminated_as_any_of(node: Any) -> Any:
    """OpenAPI's ``discriminator`` picks one ``oneOf`` branch by a property; plain JSON
    Schema has no such rule, so a message that fits two branches (EasyInputMessage and
    InputMessage) would fail ``oneOf``. With a discriminator, ``anyOf`` is the meaning."""
    if isinstance(node, dict):
        out = {k: _discriminated_as_any_of(v) for k, v in node.items()}
        if "discriminator" in out and "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        return out
    if isinstance(node, list):
        return [_discriminated_as_any_of(v) for v in node]
    return node


def _validator(name: str, root: str | None = None) -> jsonschema.Draft202012Validator:
    schema = _discriminated_as_any_of(json.loads((DATA / name).read_text()))
    if root is not None:
        schema = {"$ref": f"#/components/schemas/{root}", **schema}
    return jsonschema.Draft202012Validator(schema)


SCHEMAS = {
    "openai": lambda: _validator("openai_request_schemas.json", "CreateChatCompletionRequest"),
    "openai-responses": lambda: _validator("openai_request_schemas.json", "CreateResponse"),
    "anthropic": lambda: _validator("anthropic_request_schema.json"),
    "gemini": lambda: _validator("gemini_request_schema.json"),
}


def _assert_valid(validator: jsonschema.Draft202012Validator, body: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(body)]
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------ the four bodies


@pytest.mark.anyio
async def test_openai_chat_body(fake_providers: FakeProviderServer) -> None:
    fake_providers.text = OUTFIT_JSON
    c = await complete(_request("openai/gpt-5"))
    assert c.parsed == OUTFIT and c.finish_reason == "stop"
    [r] = fake_providers.requests
    assert r.path == "/v1/chat/completions"
    assert r.json == {
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "You are a travel assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ARGS},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, light rain"},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Outfit", "schema": STRICT_OUTFIT, "strict": True},
        },
        "reasoning_effort": "low",
    }
    _assert_valid(_validator("openai_request_schemas.json", "CreateChatCompletionRequest"), r.json)


@pytest.mark.anyio
async def test_responses_api_body(fake_providers: FakeProviderServer) -> None:
    fake_providers.text = OUTFIT_JSON
    c = await complete(_request("openai-responses/gpt-5"))
    assert c.parsed == OUTFIT and c.finish_reason == "stop"
    [r] = fake_providers.requests
    assert r.path == "/v1/responses"
    assert r.headers["authorization"].startswith("Bearer ")
    responses_tools = [
        {
            "type": "function",
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "parameters": t["function"]["parameters"],
            "strict": False,
        }
        for t in TOOLS
    ]
    assert r.json == {
        "model": "gpt-5",
        "input": [
            {"role": "system", "content": "You are a travel assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": QUESTION},
                    {
                        "type": "input_image",
                        "image_url": f"data:image/png;base64,{PNG_B64}",
                        "detail": "auto",
                    },
                ],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": ARGS,
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C, light rain"},
        ],
        "tools": responses_tools,
        "tool_choice": "auto",
        "text": {
            "format": {
                "type": "json_schema",
                "name": "Outfit",
                "schema": STRICT_OUTFIT,
                "strict": True,
            }
        },
        "reasoning": {"effort": "low"},
    }
    _assert_valid(_validator("openai_request_schemas.json", "CreateResponse"), r.json)


@pytest.mark.anyio
async def test_anthropic_body(fake_providers: FakeProviderServer) -> None:
    fake_providers.text = OUTFIT_JSON
    c = await complete(_request("anthropic/claude-sonnet-4-5"))
    assert c.parsed == OUTFIT and c.finish_reason == "stop"
    [r] = fake_providers.requests
    assert r.path == "/v1/messages"
    anthropic_outfit = {
        "type": "object",
        "title": "Outfit",
        "properties": {
            "top": {"type": "string", "title": "Top"},
            "layers": {"type": "integer", "title": "Layers"},
            "umbrella": {"type": "boolean", "title": "Umbrella"},
            "shoes": {"type": "string", "enum": ["boots", "sneakers", "sandals"], "title": "Shoes"},
        },
        "additionalProperties": False,
        "required": ["top", "layers", "umbrella", "shoes"],
    }
    assert r.json == {
        "model": "claude-sonnet-4-5",
        "system": "You are a travel assistant.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    THINKING,
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris", "unit": "celsius"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C, light rain"}
                ],
            },
        ],
        "max_tokens": 4096 + 2048,  # the default answer budget on top of the thinking budget
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "input_schema": WEATHER,
            },
            {
                "name": "get_local_time",
                "description": "Local time in a city.",
                "input_schema": TIME,
            },
        ],
        "tool_choice": {"type": "auto"},
        "output_config": {"format": {"type": "json_schema", "schema": anthropic_outfit}},
    }
    _assert_valid(_validator("anthropic_request_schema.json"), r.json)


@pytest.mark.anyio
async def test_gemini_body(fake_providers: FakeProviderServer) -> None:
    fake_providers.text = OUTFIT_JSON
    c = await complete(_request("gemini/gemini-3-flash-preview"))
    assert c.parsed == OUTFIT and c.finish_reason == "stop"
    [r] = fake_providers.requests
    assert r.path == "/v1beta/models/gemini-3-flash-preview:generateContent"

    def upper(schema: dict[str, Any]) -> dict[str, Any]:
        props = {k: {**v, "type": v["type"].upper()} for k, v in schema["properties"].items()}
        out = {**schema, "type": "OBJECT", "properties": props}
        if len(props) > 1:
            out["propertyOrdering"] = list(props)
        return out

    outfit = upper({k: v for k, v in STRICT_OUTFIT.items() if k != "additionalProperties"})
    assert r.json == {
        "systemInstruction": {"parts": [{"text": "You are a travel assistant."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": QUESTION},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {
                            "name": "get_weather",
                            "args": {"city": "Paris", "unit": "celsius"},
                        }
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_weather",
                            "response": {"output": "18 C, light rain"},
                        }
                    }
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather in a city.",
                        "parameters": upper(WEATHER),
                    },
                    {
                        "name": "get_local_time",
                        "description": "Local time in a city.",
                        "parameters": upper(TIME),
                    },
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": outfit,
            "thinkingConfig": {"thinkingBudget": 2048},
        },
    }
    _assert_valid(_validator("gemini_request_schema.json"), r.json)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_every_kind_streams_the_neutral_request(
    fake_providers: FakeProviderServer, stream: bool
) -> None:
    for model in (
        "openai/gpt-5",
        "openai-responses/gpt-5",
        "anthropic/claude-sonnet-4-5",
        "gemini/gemini-3-flash-preview",
    ):
        request = _request(model, response_format=None, stream=stream)
        c = await complete(request)
        assert c.text == fake_providers.text
        assert c.finish_reason == "stop"
    bodies = [r.json for r in fake_providers.requests]
    assert bodies[0].get("stream", False) is stream
    assert bodies[1].get("stream", False) is stream


# ------------------------------------------------------------------ small translations


@pytest.mark.anyio
async def test_anthropic_cache_breakpoints_are_kept(fake_providers: FakeProviderServer) -> None:
    """``cache_control`` on a system part (the usual place to cache a long prompt) and on an
    image part reach Anthropic; the system prompt was flattened to a string, which dropped
    its breakpoint, so nothing was ever cached."""
    ephemeral = {"type": "ephemeral"}
    messages = [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "You are a travel assistant."},
                {"type": "text", "text": "A long handbook ...", "cache_control": ephemeral},
            ],
        },
        {"role": "developer", "content": "Answer in French."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": PNG}, "cache_control": ephemeral},
                {"type": "text", "text": QUESTION},
            ],
        },
    ]
    await complete(LLMRequest("anthropic/claude-haiku-4-5", messages))
    (sent,) = fake_providers.requests
    _assert_valid(SCHEMAS["anthropic"](), sent.json)
    assert sent.json["system"] == [
        {"type": "text", "text": "You are a travel assistant."},
        {"type": "text", "text": "A long handbook ...", "cache_control": ephemeral},
        {"type": "text", "text": "Answer in French."},
    ]
    image = sent.json["messages"][0]["content"][0]
    assert image["type"] == "image" and image["cache_control"] == ephemeral


@pytest.mark.parametrize(
    ("base_url", "kept"),
    [
        ("https://api.openai.com/v1", False),
        ("https://my-resource.openai.azure.com/openai/v1", False),
        ("https://api.groq.com/openai/v1", False),
        ("https://generativelanguage.googleapis.com/v1beta/openai", True),
        ("http://127.0.0.1:8000/v1", True),
    ],
)
def test_a_tool_calls_extra_content_goes_only_where_it_is_taken(base_url: str, kept: bool) -> None:
    """Gemini's thought signature rides on a tool call as ``extra_content`` (the shape of
    Google's OpenAI-compatible API, which needs it back); OpenAI, Azure and Groq refuse a
    field they do not know, so it is left out there."""
    from baton_nb.llm._config import Endpoint
    from baton_nb.llm._openai import OpenAIAdapter

    signature = {"google": {"thought_signature": "EjQKMgFyyNp8"}}
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}
    history = [
        MESSAGES[0],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call, "extra_content": signature}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
    ]
    endpoint = Endpoint("compat", "openai", base_url)
    body = OpenAIAdapter().build(endpoint, "m", LLMRequest("compat/m", history)).body
    sent = body["messages"][1]["tool_calls"][0]
    assert sent == ({**call, "extra_content": signature} if kept else call)
    if not kept:
        _assert_valid(SCHEMAS["openai"](), body)


@pytest.mark.anyio
async def test_an_empty_answer_in_the_history_is_left_out_for_anthropic(
    fake_providers: FakeProviderServer,
) -> None:
    """Claude sometimes ends a turn with no content at all; that answer's message, sent back
    as history, was an empty assistant turn, which the Messages API refuses ("all messages
    must have non-empty content except for the optional final assistant message")."""
    model = "anthropic/claude-haiku-4-5"
    empty = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
    fake_providers.script(Reply(body=empty))
    first = await complete(LLMRequest(model, MESSAGES[1:2]))
    assert first.text == "" and first.message == {"role": "assistant", "content": ""}
    again = {"role": "user", "content": "Are you there?"}
    await complete(LLMRequest(model, (*MESSAGES[1:2], dict(first.message), again)))
    sent = fake_providers.requests[-1].json
    _assert_valid(SCHEMAS["anthropic"](), sent)
    [turn] = sent["messages"]  # the two user messages are one user turn now
    assert turn["role"] == "user" and turn["content"][-1] == {
        "type": "text",
        "text": again["content"],
    }


@pytest.mark.anyio
async def test_tool_choice_translations(fake_providers: FakeProviderServer) -> None:
    named = {"type": "function", "function": {"name": "get_local_time"}}
    for choice in ("none", "required", named):
        for model in (
            "openai/gpt-5",
            "openai-responses/gpt-5",
            "anthropic/claude-haiku-4-5",
            "gemini/gemini-2.5-flash",
        ):
            await complete(LLMRequest(model, MESSAGES[:2], tools=TOOLS, tool_choice=choice))
    got = [r.json.get("tool_choice", r.json.get("toolConfig")) for r in fake_providers.requests]
    assert got == [
        "none",
        "none",
        {"type": "none"},
        {"functionCallingConfig": {"mode": "NONE"}},
        "required",
        "required",
        {"type": "any"},
        {"functionCallingConfig": {"mode": "ANY"}},
        named,
        {"type": "function", "name": "get_local_time"},
        {"type": "tool", "name": "get_local_time"},
        {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_local_time"]}},
    ]


@pytest.mark.anyio
async def test_image_urls(fake_providers: FakeProviderServer) -> None:
    url = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    for model in (
        "anthropic/claude-haiku-4-5",
        "gemini/gemini-2.5-flash",
        "openai-responses/gpt-5",
    ):
        await complete(LLMRequest(model, messages))
    anthropic, gemini, responses = (r.json for r in fake_providers.requests)
    assert anthropic["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": url},
    }
    assert gemini["contents"][0]["parts"][1] == {
        "fileData": {"mimeType": "image/jpeg", "fileUri": url}
    }
    assert responses["input"][0]["content"][1] == {
        "type": "input_image",
        "image_url": url,
        "detail": "auto",
    }


@pytest.mark.anyio
async def test_reasoning_effort_only_becomes_a_budget(fake_providers: FakeProviderServer) -> None:
    for model in ("anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"):
        await complete(LLMRequest(model, MESSAGES[:2], reasoning="high"))
    await complete(LLMRequest("gemini/gemini-2.5-flash", MESSAGES[:2], reasoning="none"))
    await complete(
        LLMRequest(
            "openai-responses/o4-mini",
            MESSAGES[:2],
            reasoning={"effort": "medium", "summary": "auto"},
        )
    )
    a, g, off, resp = (r.json for r in fake_providers.requests)
    assert a["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert a["max_tokens"] == 4096 + 4096
    assert g["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 4096}
    assert off["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    assert resp["reasoning"] == {"effort": "medium", "summary": "auto"}


@pytest.mark.anyio
async def test_a_reasoning_summary_alone(fake_providers: FakeProviderServer) -> None:
    """A summary asked for without an effort or budget: Gemini shows its thoughts at the
    model's own budget; Anthropic, which thinks only with a budget, refuses before sending
    (both used to fail with KeyError: 'None')."""
    summary = {"summary": "auto"}
    await complete(LLMRequest("gemini/gemini-2.5-flash", MESSAGES[:2], reasoning=summary))
    (sent,) = fake_providers.requests
    assert sent.json["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    _assert_valid(SCHEMAS["gemini"](), sent.json)
    with pytest.raises(UnsupportedFeature, match="a reasoning summary without a thinking budget"):
        await complete(LLMRequest("anthropic/claude-haiku-4-5", MESSAGES[:2], reasoning=summary))
    with pytest.raises(UnsupportedFeature, match="a reasoning summary without a thinking budget"):
        await complete(LLMRequest("mock/claude-haiku-4-5", MESSAGES[:2], reasoning=summary))
    assert fake_providers.request_count == 1


@pytest.mark.anyio
async def test_json_object_mode(fake_providers: FakeProviderServer) -> None:
    fake_providers.text = '{"a": 1}'
    for model in ("openai/gpt-4o-mini", "openai-responses/gpt-4o-mini", "gemini/gemini-2.5-flash"):
        c = await complete(LLMRequest(model, MESSAGES[:2], response_format={"type": "json_object"}))
        assert c.parsed == {"a": 1}
    o, r, g = (x.json for x in fake_providers.requests)
    assert o["response_format"] == {"type": "json_object"}
    assert r["text"] == {"format": {"type": "json_object"}}
    assert g["generationConfig"] == {"responseMimeType": "application/json"}


# ------------------------------------------------------------------ refused before sending

UNSUPPORTED = [
    (
        "anthropic/claude-haiku-4-5",
        {"response_format": {"type": "json_object"}},
        "JSON mode without a schema",
    ),
    ("openai/gpt-5", {"reasoning": 2048}, "a reasoning token budget"),
    ("openai/gpt-5", {"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning summaries"),
    ("openai-responses/gpt-5", {"reasoning": 2048}, "a reasoning token budget"),
    (
        "anthropic/claude-haiku-4-5",
        {"reasoning": "low", "tools": TOOLS, "tool_choice": "required"},
        "with extended thinking",
    ),
    ("anthropic/claude-haiku-4-5", {"reasoning": 512}, "a thinking budget of 512 tokens"),
    ("anthropic/claude-haiku-4-5", {"reasoning": "high", "max_tokens": 1000}, "max_tokens=1000"),
    ("anthropic/claude-haiku-4-5", {"reasoning": "low", "temperature": 0.2}, "temperature=0.2"),
    # Gemini counts the thinking in maxOutputTokens too: refused as Anthropic refuses it
    ("gemini/gemini-2.5-flash", {"reasoning": "high", "max_tokens": 1000}, "max_tokens=1000"),
    ("gemini/gemini-2.5-flash", {"reasoning": 2048, "max_tokens": 2048}, "budget of 2048"),
    (
        "gemini/gemini-2.5-flash",
        {"tools": [{"type": "function", "function": {**TOOLS[0]["function"], "strict": True}}]},
        "strict tool schemas",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "options", "feature"), UNSUPPORTED)
async def test_unsupported_features_fail_before_sending(
    fake_providers: FakeProviderServer, model: str, options: dict[str, Any], feature: str
) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        await complete(LLMRequest(model, MESSAGES[:2], **options))
    provider, name = model.split("/", 1)
    assert (info.value.provider, info.value.model) == (provider, name)
    assert feature in str(info.value) and f"{model} does not support" in str(info.value)
    # and says what to do instead (docs/providers.md)
    assert str(info.value) != f"{model} does not support {info.value.feature}", str(info.value)
    assert fake_providers.request_count == 0


@pytest.mark.anyio
async def test_bad_parts_fail_before_sending(fake_providers: FakeProviderServer) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(UnsupportedFeature, match="content parts of type 'input_audio'"):
        await complete(
            LLMRequest("anthropic/claude-haiku-4-5", [{"role": "user", "content": [audio]}])
        )
    detail = {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}}
    with pytest.raises(UnsupportedFeature, match="image detail 'high'"):
        await complete(
            LLMRequest("gemini/gemini-2.5-flash", [{"role": "user", "content": [detail]}])
        )
    no_type = {"type": "image_url", "image_url": {"url": "https://example.com/chart"}}
    with pytest.raises(UnsupportedFeature, match="without a known type"):
        await complete(
            LLMRequest("gemini/gemini-2.5-flash", [{"role": "user", "content": [no_type]}])
        )
    with pytest.raises(ConfigurationError, match="not PNG, JPEG, GIF or WebP"):
        LLMRequest(
            "openai/gpt-5",
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": b"%PDF-1.7"}}],
                }
            ],
        )
    with pytest.raises(ConfigurationError, match="tool_call_id"):
        LLMRequest("openai/gpt-5", [{"role": "tool", "content": "x"}])
    with pytest.raises(ConfigurationError, match="not in tools"):
        LLMRequest(
            "openai/gpt-5",
            MESSAGES[:2],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert fake_providers.request_count == 0


@pytest.mark.anyio
async def test_gemini_schema_keywords_it_cannot_take_are_named(
    fake_providers: FakeProviderServer,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}}
    with pytest.raises(ConfigurationError, match="exclusiveMinimum"):
        await complete(LLMRequest("gemini/gemini-2.5-flash", MESSAGES[:2], response_format=schema))
    assert fake_providers.request_count == 0


def test_responses_kind_can_be_configured() -> None:
    configure(
        providers={"azure": {"kind": "responses", "base_url": "http://127.0.0.1:9/openai/v1"}}
    )
    from baton_nb.llm._config import reset_configuration, resolve_endpoint

    try:
        assert resolve_endpoint("azure").kind == "responses"
    finally:
        reset_configuration()


def test_the_schemas_reject_openai_shaped_history() -> None:
    """What baton_nb used to send (OpenAI-shaped tool calls, tool results and image parts
    passed through) is invalid for Anthropic and Gemini: the schemas are strict enough to
    catch it."""
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    old_anthropic = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, image]},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "18 C"},
        ],
    }
    old_gemini = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, image]},
            {"role": "user", "parts": [{"text": "18 C"}]},
        ]
    }
    assert list(SCHEMAS["anthropic"]().iter_errors(old_anthropic))
    assert list(SCHEMAS["gemini"]().iter_errors(old_gemini))


@pytest.mark.anyio
async def test_gemini_raw_generation_config_is_sent_as_given(
    fake_providers: FakeProviderServer,
) -> None:
    """The refusal of a cap at or under the thinking budget is for the library's own
    ``reasoning=``; a raw ``extra={"generationConfig": ...}`` is passed through."""
    config = {"maxOutputTokens": 1024, "thinkingConfig": {"thinkingBudget": 1024}}
    request = LLMRequest(
        "gemini/gemini-2.5-flash", MESSAGES[:2], extra={"generationConfig": config}
    )
    await complete(request)
    assert fake_providers.requests[0].json["generationConfig"] == config
