"""Recorded real responses (tests/data/providers, sources in SOURCES.md) served verbatim by
the fake provider server: tool calls, refusals, reasoning, structured answers, streamed
tool calls, Responses API usage, cut-off streams and body retry hints, for every provider.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from baton_nb import ProviderError
from baton_nb._errors import OutputValidationError
from baton_nb._usage import Usage
from baton_nb.llm import Completion, LLMRequest, complete, configure
from baton_nb.llm._config import RetrySettings, set_retry_settings
from baton_nb.llm._retry import retry_hint_from_body
from baton_nb.llm._types import ToolCall
from tests.fakes.provider_server import FakeProviderServer, Reply

DATA = Path(__file__).resolve().parents[1] / "data" / "providers"
ASK = ({"role": "user", "content": "go"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _json(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _sse(name: str) -> str:
    return (DATA / name).read_text()


async def _served(
    fake: FakeProviderServer, model: str, reply: Reply, stream: bool = False, **kw: Any
) -> Completion:
    fake.script(reply)
    return await complete(LLMRequest(model, ASK, stream=stream, **kw))


class Location(BaseModel):  # openai-python's test model
    city: str
    temperature: float
    units: Literal["c", "f"]


class OrderItem(BaseModel):  # anthropic-sdk-python's test model
    product_name: str
    price: float
    quantity: int


class CityLocation(BaseModel):  # pydantic-ai's test model
    city: str
    country: str


# ------------------------------------------------------------------ OpenAI Chat

EDINBURGH = {"city": "Edinburgh", "country": "GB", "units": "c"}
AAPL = {"ticker": "AAPL", "exchange": "NASDAQ"}


@pytest.mark.anyio
async def test_openai_tool_calls(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers, "openai/gpt-4o", Reply(body=_json("openai_chat_two_tool_calls.json"))
    )
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls] == [
        ("call_fdNz3vOBKYgOIpMdWotB9MjY", "GetWeatherArgs", EDINBURGH),
        ("call_h1DWI1POMJLb0KwIyQHWXD4p", "get_stock_price", AAPL),
    ]
    assert (c.text, c.finish_reason, c.refusal) == ("", "tool_calls", None)
    assert c.message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [t.to_dict() for t in c.tool_calls],
    }


@pytest.mark.anyio
async def test_openai_streamed_tool_calls(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "openai/gpt-4o",
        Reply(sse=_sse("openai_chat_stream_two_tool_calls.sse")),
        stream=True,
    )
    assert [(t.name, t.arguments) for t in c.tool_calls] == [
        ("GetWeatherArgs", EDINBURGH),
        ("get_stock_price", AAPL),
    ]
    assert c.tool_calls[0].id == "call_JMW1whyEaYG438VE1OIflxA2"
    assert c.finish_reason == "tool_calls"
    assert c.raw["choices"][0]["message"]["tool_calls"][1]["function"]["name"] == "get_stock_price"


@pytest.mark.anyio
async def test_streamed_tool_calls_without_an_index(fake_providers: FakeProviderServer) -> None:
    """Gemini's OpenAI-compatible API streams tool calls without ``index``, each parallel
    call in a chunk of its own: two calls, as in the whole answer. They used to merge into
    one (``name`` 'readread', arguments '{...}{...}', the second id)."""
    configure(providers={"gemini-compat": {"kind": "openai", "base_url": fake_providers.base_url}})
    stream = _sse("gemini_openai_stream_parallel_calls.sse")
    chunks = [json.loads(line[6:]) for line in stream.splitlines() if line[6:7] == "{"]
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", ())]
    whole = {
        "object": "chat.completion",
        "model": "gemini-3.8-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
                "finish_reason": "stop",
            }
        ],
        "usage": chunks[-1]["usage"],
    }
    model, price_as = "gemini-compat/gemini-3.8-flash", "google/gemini-3.8-flash"
    streamed = await _served(fake_providers, model, Reply(sse=stream), True, price_as=price_as)
    plain = await _served(fake_providers, model, Reply(body=whole), price_as=price_as)
    assert [(t.id, t.name, (t.arguments or {}).get("path")) for t in streamed.tool_calls] == [
        ("call_297140", "read", "/app/skills/agent-runtime/stage-design/SKILL.md"),
        ("call_297141", "read", "/app/skills/agent-runtime/lesson-plan/SKILL.md"),
    ]
    assert streamed.tool_calls == plain.tool_calls
    signature = {"google": {"thought_signature": "EjQKMgFyyNp8"}}
    assert streamed.tool_calls[0].extra_content == signature
    assert streamed.tool_calls[1].extra_content is None
    assert streamed.usage == plain.usage == Usage(1024, output_tokens=58)
    # the next turn gives the thought signature back, as Google's OpenAI-compatible API
    # requires ("Function call is missing a thought_signature"); it used to be dropped
    history = [
        *ASK,
        dict(streamed.message),
        *({"role": "tool", "tool_call_id": t.id, "content": "..."} for t in streamed.tool_calls),
    ]
    await complete(LLMRequest(model, tuple(history), price_as=price_as))
    sent = fake_providers.requests[-1].json["messages"][1]["tool_calls"]
    assert sent[0]["extra_content"] == signature and "extra_content" not in sent[1]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_refusal(fake_providers: FakeProviderServer, stream: bool) -> None:
    reply = (
        Reply(sse=_sse("openai_chat_stream_refusal.sse"))
        if stream
        else Reply(body=_json("openai_chat_refusal.json"))
    )
    c = await _served(
        fake_providers, "openai/gpt-4o", reply, stream=stream, response_format=Location
    )
    expected = (
        "I'm sorry, I can't assist with that request."
        if stream
        else "I'm very sorry, but I can't assist with that."
    )
    assert (c.refusal, c.text, c.finish_reason, c.parsed) == (expected, "", "refusal", None)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_structured_answer(fake_providers: FakeProviderServer, stream: bool) -> None:
    reply = (
        Reply(sse=_sse("openai_chat_stream_structured.sse"))
        if stream
        else Reply(body=_json("openai_chat_structured.json"))
    )
    c = await _served(
        fake_providers, "openai/gpt-4o", reply, stream=stream, response_format=Location
    )
    assert isinstance(c.parsed, Location) and c.parsed.city == "San Francisco"
    assert c.parsed.units == "f" and c.finish_reason == "stop"


@pytest.mark.anyio
async def test_openai_stream_of_several_choices_is_the_first_choice(
    fake_providers: FakeProviderServer,
) -> None:
    """``n=3`` streamed: the answer is choice 0, as in a whole answer (``choices[0]``); the
    three choices' deltas used to be interleaved into one text that was no JSON at all."""
    reply = Reply(sse=_sse("openai_chat_stream_three_choices.sse"))
    c = await _served(
        fake_providers,
        "openai/gpt-4o-2024-08-06",
        reply,
        stream=True,
        response_format=Location,
        extra={"n": 3},
    )
    assert c.text == '{"city":"San Francisco","temperature":65,"units":"f"}'
    assert c.parsed == Location(city="San Francisco", temperature=65, units="f")
    assert c.finish_reason == "stop" and c.usage == Usage(79, output_tokens=42)
    assert c.raw["choices"][0]["message"]["content"] == c.text


@pytest.mark.anyio
async def test_structured_answer_cut_at_max_tokens_is_a_clear_error(
    fake_providers: FakeProviderServer,
) -> None:
    with pytest.raises(OutputValidationError) as info:
        await _served(
            fake_providers,
            "openai/gpt-4o",
            Reply(body=_json("openai_chat_length.json")),
            response_format=Location,
        )
    assert "does not match Location (the answer was cut off at max_tokens)" in str(info.value)
    paid = info.value.completion
    assert isinstance(paid, Completion) and paid.finish_reason == "length"
    assert paid.usage == Usage(input_tokens=79, output_tokens=1) and paid.cost is not None


@pytest.mark.anyio
async def test_compatible_server_reasoning_content(fake_providers: FakeProviderServer) -> None:
    body = _json("deepseek_chat_reasoning.json")
    c = await _served(
        fake_providers, "local/deepseek-reasoner", Reply(body=body), price_as="gpt-4o-mini"
    )
    assert c.reasoning == body["choices"][0]["message"]["reasoning_content"] and c.reasoning
    assert c.text.startswith("Crossing the street safely")
    assert c.usage.reasoning_tokens == 415 and c.finish_reason == "stop"


# ------------------------------------------------------------------ Anthropic


@pytest.mark.anyio
async def test_anthropic_tool_use(fake_providers: FakeProviderServer) -> None:
    body = _json("anthropic_tool_use.json")
    c = await _served(fake_providers, "anthropic/claude-haiku-4-5", Reply(body=body))
    [block] = [b for b in body["content"] if b["type"] == "tool_use"]
    assert c.tool_calls == (
        ToolCall(block["id"], block["name"], block["input"], json.dumps(block["input"])),
    )
    assert c.text == body["content"][0]["text"] and c.finish_reason == "tool_calls"
    assert c.message["tool_calls"][0]["function"]["name"] == block["name"]


@pytest.mark.anyio
async def test_anthropic_streamed_tool_use(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "anthropic/claude-sonnet-4-0",
        Reply(sse=_sse("anthropic_stream_tool_use.sse")),
        stream=True,
    )
    assert c.text == "I'll check the current weather in Paris for you."
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls] == [
        ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})
    ]
    assert c.finish_reason == "tool_calls"
    assert c.usage == Usage(input_tokens=377, output_tokens=65)


@pytest.mark.anyio
async def test_anthropic_streamed_refusal(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "anthropic/claude-opus-4-7",
        Reply(sse=_sse("anthropic_stream_refusal.sse")),
        stream=True,
    )
    assert c.finish_reason == "refusal"
    assert c.refusal == "This request was refused due to policy."
    assert c.text == ""


@pytest.mark.anyio
async def test_anthropic_streamed_thinking(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "anthropic/claude-sonnet-4-0",
        Reply(sse=_sse("anthropic_stream_thinking.sse")),
        stream=True,
    )
    assert c.reasoning and c.text and c.reasoning not in c.text
    [block] = c.message["thinking_blocks"]
    assert block["type"] == "thinking" and block["thinking"] == c.reasoning
    assert block["signature"]  # goes back with the next turn's history
    assert c.finish_reason == "stop" and c.usage.output_tokens == 282


@pytest.mark.anyio
async def test_anthropic_structured_answer(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "anthropic/claude-sonnet-4-5",
        Reply(body=_json("anthropic_structured.json")),
        response_format=OrderItem,
    )
    assert c.parsed == OrderItem(product_name="Green Tea", price=5.5, quantity=2)


# ------------------------------------------------------------------ Gemini


@pytest.mark.anyio
async def test_gemini_function_call(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers, "gemini/gemini-2.0-flash", Reply(body=_json("gemini_function_call.json"))
    )
    [call] = c.tool_calls
    assert (call.name, call.arguments, call.id) == (
        "get_user_country",
        {},
        "call_0_get_user_country",
    )
    assert c.finish_reason == "tool_calls"


@pytest.mark.anyio
async def test_gemini_streamed_function_call_keeps_its_thought_signature(
    fake_providers: FakeProviderServer,
) -> None:
    c = await _served(
        fake_providers,
        "gemini/gemini-3-pro-preview",
        Reply(sse=_sse("gemini_stream_function_call.sse")),
        stream=True,
    )
    [call] = c.tool_calls
    assert (call.name, call.arguments) == ("get_country", {})
    signature = call.extra_content["google"]["thought_signature"] if call.extra_content else None
    assert signature and signature.startswith("EpwICpkIAXLI2nx")
    assert c.finish_reason == "tool_calls"
    assert c.usage == Usage(input_tokens=29, output_tokens=10 + 202, reasoning_tokens=202)
    # the signature goes back to Gemini with the call
    fake_providers.reset()
    history = [
        *ASK,
        dict(c.message),
        {"role": "tool", "tool_call_id": call.id, "content": "Mexico"},
    ]
    await complete(LLMRequest("gemini/gemini-3-pro-preview", history))
    sent = fake_providers.requests[0].json["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == signature
    assert sent[2]["parts"][0]["functionResponse"] == {
        "name": "get_country",
        "response": {"output": "Mexico"},
    }


@pytest.mark.anyio
async def test_gemini_thoughts_are_the_reasoning(fake_providers: FakeProviderServer) -> None:
    body = _json("gemini_thoughts.json")
    c = await _served(fake_providers, "gemini/gemini-3-pro-preview", Reply(body=body))
    parts = body["candidates"][0]["content"]["parts"]
    assert c.reasoning == "".join(p["text"] for p in parts if p.get("thought"))
    assert c.text == "".join(p["text"] for p in parts if not p.get("thought"))
    assert c.reasoning and c.text and c.usage.reasoning_tokens == 1001


@pytest.mark.anyio
async def test_gemini_structured_answer(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "gemini/gemini-2.0-flash",
        Reply(body=_json("gemini_structured.json")),
        response_format=CityLocation,
    )
    assert c.parsed == CityLocation(city="Mexico City", country="Mexico")


# ------------------------------------------------------------------ Responses API


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("responses_text.json", Usage(14, 0, 0, 50, 0)),
        ("responses_cached.json", Usage(4020, 4012, 0, 5, 0)),
        ("responses_reasoning.json", Usage(81, 0, 0, 1035, 832)),
    ],
)
async def test_responses_usage(fake_providers: FakeProviderServer, name: str, usage: Usage) -> None:
    body = _json(name)
    c = await _served(fake_providers, "openai-responses/gpt-4o-mini", Reply(body=body))
    assert c.usage == usage
    text = body["output"][-1]["content"][0]["text"]
    assert (c.text, c.finish_reason) == (text, "stop")


@pytest.mark.anyio
async def test_responses_priced_as_openai(fake_providers: FakeProviderServer) -> None:
    from baton_nb.pricing import price

    c = await _served(
        fake_providers, "openai-responses/gpt-4o-mini", Reply(body=_json("responses_text.json"))
    )
    assert c.cost == price("openai/gpt-4o-mini", Usage(14, 0, 0, 50, 0)) and c.cost


@pytest.mark.anyio
async def test_responses_function_call(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "openai-responses/gpt-4.1",
        Reply(body=_json("responses_function_call.json")),
    )
    [call] = c.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "call_unLAR8MvFNptuiZK6K6HCy5k",
        "get_current_weather",
        {"location": "Boston, MA", "unit": "celsius"},
    )
    assert c.finish_reason == "tool_calls"


@pytest.mark.anyio
async def test_responses_reasoning_summary(fake_providers: FakeProviderServer) -> None:
    body = _json("responses_reasoning_summary.json")
    c = await _served(fake_providers, "openai-responses/gpt-5", Reply(body=body))
    [reasoning] = [i for i in body["output"] if i["type"] == "reasoning"]
    assert c.reasoning == "\n\n".join(s["text"] for s in reasoning["summary"])
    assert c.text.startswith("Here’s a simple, safe way to cross a street")


@pytest.mark.anyio
async def test_responses_streamed_function_call(fake_providers: FakeProviderServer) -> None:
    c = await _served(
        fake_providers,
        "openai-responses/gpt-5",
        Reply(sse=_sse("responses_stream_function_call.sse")),
        stream=True,
    )
    [call] = c.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "call_CWXgs68YprAjp6t0371hiPOI",
        "final_result",
        {"result": 6666},
    )
    assert c.finish_reason == "tool_calls"
    assert c.usage.reasoning_tokens > 0 and c.usage.output_tokens >= c.usage.reasoning_tokens


# ------------------------------------------------------------------ cut-off streams


def _cut(text: str, before: str) -> str:
    """The recorded stream up to (not including) the first event containing ``before``."""
    frames = text.replace("\r\n", "\n").split("\n\n")
    kept = []
    for frame in frames:
        if before in frame:
            break
        kept.append(frame)
    assert len(kept) < len([f for f in frames if f.strip()]), f"{before!r} not in the stream"
    return "\n\n".join(kept) + "\n\n"


CUTS = [
    ("openai/gpt-4o", "openai_chat_stream_structured.sse", '"finish_reason":"stop"'),
    ("openai-responses/gpt-5", "responses_stream_function_call.sse", "response.completed"),
    ("anthropic/claude-sonnet-4-0", "anthropic_stream_tool_use.sse", "message_delta"),
    ("gemini/gemini-3-pro-preview", "gemini_stream_function_call.sse", '"finishReason"'),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "name", "before"), CUTS)
async def test_cut_off_stream_is_retried_not_returned(
    fake_providers: FakeProviderServer, model: str, name: str, before: str
) -> None:
    full = _sse(name)
    fake_providers.script(Reply(sse=_cut(full, before)), Reply(sse=full))
    c = await complete(LLMRequest(model, ASK, stream=True))
    assert fake_providers.request_count == 2  # the partial answer was not taken
    assert c.finish_reason in ("stop", "tool_calls")


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "name", "before"), CUTS)
async def test_a_stream_that_always_stops_short_fails_as_retryable(
    fake_providers: FakeProviderServer, model: str, name: str, before: str
) -> None:
    set_retry_settings(RetrySettings(max_retries=1, backoff_base=0.0, backoff_cap=0.0))
    cut = _cut(_sse(name), before)
    fake_providers.script(Reply(sse=cut), Reply(sse=cut))
    with pytest.raises(ProviderError) as info:
        await complete(LLMRequest(model, ASK, stream=True))
    assert info.value.retryable and "stream ended before" in str(info.value)
    assert "gave up after 2 attempts" in str(info.value)


@pytest.mark.anyio
async def test_openai_compatible_stream_without_done_but_finished_is_complete(
    fake_providers: FakeProviderServer,
) -> None:
    """Some servers end after the usage chunk without [DONE]; finish + usage is complete."""
    full = _sse("openai_chat_stream_refusal.sse")
    c = await _served(
        fake_providers, "local/m", Reply(sse=_cut(full, "[DONE]")), stream=True, price_as="gpt-4o"
    )
    assert c.finish_reason == "refusal" and fake_providers.request_count == 1


# ------------------------------------------------------------------ retry hints in bodies


def _retry_info(delay: object) -> bytes:
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    return json.dumps({"error": {"details": [detail]}}).encode()


def test_retry_hint_from_a_gemini_body() -> None:
    body = (DATA / "gemini_429_retry_info.json").read_bytes()
    assert retry_hint_from_body(body) == 2.0
    assert retry_hint_from_body(_retry_info("37.5s")) == 37.5
    assert (
        retry_hint_from_body(b"[" + _retry_info({"seconds": 3, "nanos": 500000000}) + b"]") == 3.5
    )
    assert retry_hint_from_body(_retry_info("soon")) is None
    assert retry_hint_from_body(b'{"error": {"message": "slow down"}}') is None
    assert retry_hint_from_body(b"not json") is None


@pytest.mark.anyio
async def test_gemini_retry_delay_is_honoured(fake_providers: FakeProviderServer) -> None:
    # The body asks for 2 s, longer than an in-call wait may last here (max_wait 0.3 s):
    # the call stops at once instead of re-sending early, and hands the hint on, so the
    # step's next attempt waits it out (tests/integration/test_llm_retry_after.py).
    set_retry_settings(
        RetrySettings(max_retries=2, backoff_base=0.01, backoff_cap=0.05, max_wait=0.3)
    )
    fake_providers.script(Reply(status=429, body=_json("gemini_429_retry_info.json")))
    with pytest.raises(ProviderError) as caught:
        await complete(LLMRequest("gemini/gemini-2.5-flash", ASK))
    retry_after = caught.value.retry_after  # what is left of the 2 s asked for
    assert retry_after is not None and 1.0 < retry_after <= 2.0
    assert fake_providers.request_count == 1


@pytest.mark.anyio
async def test_retry_after_header_wins_over_the_body(
    fake_providers: FakeProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    set_retry_settings(
        RetrySettings(max_retries=2, backoff_base=0.01, backoff_cap=0.05, max_wait=5)
    )
    fake_providers.script(
        Reply(
            status=429, headers={"retry-after-ms": "10"}, body=_json("gemini_429_retry_info.json")
        )
    )
    with caplog.at_level(logging.WARNING, logger="baton_nb.llm"):
        await complete(LLMRequest("gemini/gemini-2.5-flash", ASK))
    assert "retry 1/2 in 0.01 s" in caplog.text


# ------------------------------------------------------------------ one shape for all

TOOL_TURNS = [
    ("openai/gpt-4o", Reply(body=_json("openai_chat_two_tool_calls.json")), False),
    ("openai-responses/gpt-4.1", Reply(body=_json("responses_function_call.json")), False),
    ("anthropic/claude-opus-4-5", Reply(body=_json("anthropic_tool_use.json")), False),
    ("gemini/gemini-3-pro-preview", Reply(sse=_sse("gemini_stream_function_call.sse")), True),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "reply", "stream"), TOOL_TURNS)
async def test_every_provider_gives_the_same_tool_turn_and_takes_it_back(
    fake_providers: FakeProviderServer, model: str, reply: Reply, stream: bool
) -> None:
    """Each provider's recorded tool call normalises to the same Completion shape, and its
    ``message`` plus the tool results make a valid next request for that provider."""
    from tests.integration.test_llm_neutral import SCHEMAS, _assert_valid

    c = await _served(fake_providers, model, reply, stream=stream)
    assert c.finish_reason == "tool_calls" and c.tool_calls
    assert all(t.id and t.name and isinstance(t.arguments, dict) for t in c.tool_calls)
    assert c.message["role"] == "assistant"
    assert [call["id"] for call in c.message["tool_calls"]] == [t.id for t in c.tool_calls]

    tools = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        }
        for t in c.tool_calls
    ]
    history = [*ASK, dict(c.message)]
    history += [
        {"role": "tool", "tool_call_id": t.id, "content": f"{t.name}: ok"} for t in c.tool_calls
    ]
    fake_providers.reset()
    await complete(LLMRequest(model, history, tools=tools))
    [sent] = fake_providers.requests
    _assert_valid(SCHEMAS[model.split("/")[0]](), sent.json)
