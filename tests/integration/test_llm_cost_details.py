"""Usage and cost details of real provider payloads, through the fake server over HTTP:
Anthropic's mixed cache lifetimes, thinking tokens and web searches, OpenRouter's BYOK
cost, a proxy's float cost, and how each call records where its price came from."""

from __future__ import annotations

import decimal
import importlib.metadata
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from baton_nb._usage import Usage
from baton_nb.llm import LLMRequest, complete, configure
from baton_nb.pricing import CallPricing, price
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

RECORDED = Path(__file__).resolve().parents[1] / "fakes" / "recorded"
GENAI = f"genai-prices {importlib.metadata.version('genai-prices')}"
HI = ({"role": "user", "content": "hi"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _sse(path: Path) -> list[tuple[str | None, Any]]:
    """Server-sent events of a recorded stream, as the fake server replays them."""
    events: list[tuple[str | None, Any]] = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event"), fields["data"]))  # the data's JSON text, verbatim
    return events


def _anthropic_body(usage: dict[str, Any], model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello there!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


# ── Anthropic ─────────────────────────────────────────────────────────────────

# The Messages API reference's usage with both cache lifetimes: 11 tokens written to the
# 5-minute cache, 13 to the 1-hour one (cache_creation_input_tokens is their sum).
MIXED_TTL = {
    "input_tokens": 3,
    "cache_creation_input_tokens": 24,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 11, "ephemeral_1h_input_tokens": 13},
    "output_tokens": 7,
    "service_tier": "standard",
}


@pytest.mark.anyio
async def test_anthropic_mixed_cache_lifetimes_each_at_its_rate(
    fake_providers: FakeProviderServer,
) -> None:
    fake_providers.script(Reply(body=_anthropic_body(MIXED_TTL)))
    c = await complete(LLMRequest("anthropic/claude-sonnet-4-5", HI))
    assert c.usage == Usage(
        input_tokens=27, cache_write_tokens=24, cache_write_1h_tokens=13, output_tokens=7
    )
    assert c.usage.cache_write_5m_tokens == 11
    # 3 x $3 + 11 x $3.75 (5 minutes) + 13 x $6 (1 hour) + 7 x $15, per 1M tokens
    assert c.cost == Decimal("0.00023325")
    # not every write at the 1-hour rate (that was 11 % more)
    assert price("anthropic/claude-sonnet-4-5", c.usage, cache_write_ttl="1h") == Decimal(
        "0.000258"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_thinking_tokens_and_web_searches(
    fake_providers: FakeProviderServer, stream: bool
) -> None:
    """The SDK's recorded stream: message_delta updates the counts, adds 3 thinking tokens
    and 1 web search, and leaves the TTL breakdown of message_start stale (10 of 12)."""
    events = _sse(RECORDED / "anthropic_message_delta_fields.sse")
    if stream:
        fake_providers.script(Reply(events=events))
    else:  # the same message, answered whole
        final = json.loads(events[-2][1])["usage"]
        fake_providers.script(Reply(body=_anthropic_body(final)))
    c = await complete(LLMRequest("anthropic/claude-sonnet-4-5", HI, stream=stream))
    assert c.text == "Hello there!"
    assert c.usage == Usage(
        input_tokens=59,
        cached_input_tokens=7,
        cache_write_tokens=12,
        output_tokens=8,
        reasoning_tokens=3,
        web_search_requests=1,
    )
    # 40 x $3 + 7 x $0.30 + 12 x $3.75 + 8 x $15 per 1M tokens, + 1 search at $10 / 1,000
    assert c.cost == Decimal("0.0102871")
    assert c.pricing == CallPricing(
        "anthropic/claude-sonnet-4-5", GENAI, "anthropic/claude-sonnet-4-5", Decimal("0.01")
    )


# ── costs the server reports ─────────────────────────────────────────────────


def _openai_body(usage: str) -> str:
    """An OpenAI-shaped response whose ``usage`` is JSON text (numbers as sent)."""
    return (
        '{"id":"gen-1","object":"chat.completion","created":1,"model":"m","choices":'
        '[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
        f'"usage":{usage}}}'
    )


# OpenRouter's usage accounting (docs: "Usage Accounting"): with BYOK, `cost` is only
# OpenRouter's fee and the upstream provider billed `cost_details.upstream_inference_cost`.
BYOK = (
    '{"prompt_tokens":194,"completion_tokens":2,"total_tokens":196,"cost":0,"is_byok":true,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"cost_details":{"upstream_inference_cost":0.0045},'
    '"completion_tokens_details":{"reasoning_tokens":0}}'
)
NOT_BYOK = (
    '{"prompt_tokens":10427,"completion_tokens":264,"total_tokens":10691,"cost":0.0033789,'
    '"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},'
    '"cost_details":{"upstream_inference_cost":0.0033789,'
    '"upstream_inference_prompt_cost":0.0031281,"upstream_inference_completions_cost":0.0002508},'
    '"completion_tokens_details":{"reasoning_tokens":0}}'
)


def _stream_events(usage: str) -> list[tuple[str | None, Any]]:
    base = '{"id":"gen-1","object":"chat.completion.chunk","model":"m",'
    return [
        (None, base + '"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"}}]}'),
        (None, base + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
        (None, base + f'"choices":[],"usage":{usage}}}'),
        (None, "[DONE]"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("usage", "expected"), [(BYOK, "0.0045"), (NOT_BYOK, "0.0033789")], ids=["byok", "credits"]
)
async def test_openrouter_cost_includes_the_upstream_cost_with_byok(
    fake_providers: FakeProviderServer, usage: str, expected: str, stream: bool
) -> None:
    reply = Reply(events=_stream_events(usage)) if stream else Reply(body=_openai_body(usage))
    fake_providers.script(reply)
    c = await complete(LLMRequest("openrouter/openai/gpt-4o-mini", HI, stream=stream))
    assert c.cost == Decimal(expected)
    assert c.pricing == CallPricing("openrouter/openai/gpt-4o-mini", "reported by openrouter")


# The usage example of OpenRouter's "Usage Accounting" page (a BYOK answer: no is_byok
# field, an upstream cost that differs from `cost`).
DOCS_BYOK = (
    '{"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":0},"cost":0.95,'
    '"cost_details":{"upstream_inference_cost":19},"prompt_tokens":194,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"total_tokens":196}'
)


@pytest.mark.anyio
async def test_a_reported_byok_cost_is_summed_whatever_the_decimal_context(
    fake_providers: FakeProviderServer,
) -> None:
    """OpenRouter's fee plus the upstream cost, exactly, under a caller's prec=3 context
    (it used to come out as 20.0)."""
    fake_providers.script(Reply(body=_openai_body(DOCS_BYOK)))
    with decimal.localcontext(decimal.Context(prec=3)):
        c = await complete(LLMRequest("openrouter/openai/gpt-4o-mini", HI))
    assert c.cost == Decimal("19.95") and str(c.cost) == "19.95"


@pytest.mark.anyio
async def test_price_as_wins_over_a_reported_cost(fake_providers: FakeProviderServer) -> None:
    fake_providers.script(Reply(body=_openai_body(NOT_BYOK)))
    c = await complete(LLMRequest("openrouter/some/model", HI, price_as="openai/gpt-4o-mini"))
    assert c.cost == price("openai/gpt-4o-mini", c.usage)
    assert c.pricing is not None and c.pricing.source == GENAI
    assert c.pricing.model == "openai/gpt-4o-mini"


# A proxy (LiteLLM) adds its own estimate to usage, a float: 0.0001025 in a whole answer,
# 6.1499999999999996e-06 in the usage chunk of the same request streamed.
PROXY = '{"prompt_tokens":150,"completion_tokens":50,"total_tokens":200,"cost":%s}'


@pytest.mark.anyio
async def test_a_proxys_float_cost_is_not_trusted(fake_providers: FakeProviderServer) -> None:
    configure(
        providers={"litellm": {"kind": "openai", "base_url": f"{fake_providers.base_url}/v1"}}
    )
    fake_providers.script(
        Reply(body=_openai_body(PROXY % "0.0001025")),
        Reply(events=_stream_events(PROXY % "6.1499999999999996e-06")),
    )
    whole = await complete(LLMRequest("litellm/gpt-4o-mini", HI, price_as="openai/gpt-4o-mini"))
    streamed = await complete(
        LLMRequest("litellm/gpt-4o-mini", HI, price_as="openai/gpt-4o-mini", stream=True)
    )
    assert whole.usage == streamed.usage == Usage(150, output_tokens=50)
    # 150 x $0.15 + 50 x $0.60 per 1M tokens, streamed or not
    assert whole.cost == streamed.cost == Decimal("0.0000525")
    assert whole.pricing == streamed.pricing
    assert whole.pricing is not None and whole.pricing.source == GENAI


@pytest.mark.anyio
async def test_a_reported_cost_is_used_when_asked_and_kept_exact(
    fake_providers: FakeProviderServer,
) -> None:
    base_url = f"{fake_providers.base_url}/v1"
    configure(
        providers={"litellm": {"kind": "openai", "base_url": base_url, "reported_cost": True}}
    )
    fake_providers.script(
        Reply(body=_openai_body(PROXY % "0.0001025")),
        Reply(events=_stream_events(PROXY % "6.1499999999999996e-06")),
    )
    whole = await complete(LLMRequest("litellm/gpt-4o-mini", HI))
    streamed = await complete(LLMRequest("litellm/gpt-4o-mini", HI, stream=True))
    # the JSON number's digits, never the binary float's 0.000102499999999999996...
    assert whole.cost == Decimal("0.0001025")
    assert streamed.cost == Decimal("0.0000061499999999999996")
    assert whole.pricing == CallPricing("litellm/gpt-4o-mini", "reported by litellm")


def test_reported_cost_option_must_be_a_bool() -> None:
    from baton_nb._errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="reported_cost"):
        configure(providers={"x": {"kind": "openai", "base_url": "http://h", "reported_cost": 1}})


@pytest.mark.anyio
async def test_unknown_model_records_the_name_it_was_priced_as(
    fake_providers: FakeProviderServer,
) -> None:
    fake_providers.usage = FakeUsage(input=10, output=5)
    with pytest.warns(UserWarning):
        c = await complete(LLMRequest("local/my-model", HI))
    assert c.cost is None
    assert c.pricing == CallPricing("local/my-model")
