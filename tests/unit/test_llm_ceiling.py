"""What a request can be billed for at most, read from the body its adapter builds."""

from __future__ import annotations

from typing import Any

import pytest

from baton_nb.llm import LLMRequest
from baton_nb.llm._ceiling import ceiling, image_tokens
from baton_nb.llm._config import Endpoint

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def _request(model: str, images: int = 0, **kwargs: Any) -> LLMRequest:
    content = [{"type": "text", "text": "look"}, *[IMAGE] * images]
    return LLMRequest(model=model, messages=[{"role": "user", "content": content}], **kwargs)


@pytest.mark.parametrize(
    ("kind", "name", "tokens"),
    [
        ("openai", "gpt-4o", 85 + 8 * 170),
        ("openai", "gpt-4o-2024-08-06", 85 + 8 * 170),
        ("openai", "gpt-4o-mini-2024-07-18", 2833 + 8 * 5667),  # not gpt-4o's
        ("responses", "gpt-5", 70 + 8 * 140),
        ("openai", "gpt-5-mini", 2489),  # 1,536 patches x 1.62
        ("openai", "o4-mini", 2642),
        ("openai", "anthropic/claude-sonnet-4-5", 1600),  # a router: its maker's figure
        ("anthropic", "anthropic/claude-sonnet-4-5", 1600),
        ("gemini", "gemini/gemini-2.5-pro", 9 * 258),
        ("mock", "claude-sonnet-4-5", 85),  # what the mock bills
        ("openai", "gpt-unknown-9", 2833 + 8 * 5667),  # not known: the largest figure
        # a dotted version: its family's figure, or the newer GPT-5 patch accounting's
        # (1,536 patches x 1.2), whichever is larger
        ("openai", "gpt-5.1", 1844),
        ("openai", "openai/gpt-5.2-2025-12-11", 1844),
        ("openai", "gpt-5.1-mini", 2489),
        ("openai", "gpt-4.1", 85 + 8 * 170),  # a model of its own, not gpt-4's
        ("openai", "chatgpt-4o-latest", 85 + 8 * 170),  # ChatGPT's GPT-4o
        # a -mini / -nano variant not listed: its family's patch model of that size
        ("openai", "gpt-5-codex-mini", 2489),
        ("openai", "gpt-5.1-codex-mini", 2489),
        ("openai", "gpt-5-codex-nano", 3779),
        ("openai", "o3-mini", 2642),  # no o3 patch model: the largest -mini figure
    ],
)
def test_an_image_counts_at_its_providers_documented_maximum(
    kind: str, name: str, tokens: int
) -> None:
    assert image_tokens(kind, name) == tokens


def test_the_output_cap_and_choices_are_read_from_the_body_sent() -> None:
    openai = Endpoint("openai", "openai", "https://x", max_tokens_field="max_completion_tokens")
    request = _request("openai/gpt-4o", 2, max_tokens=50, extra={"n": 4})
    most = ceiling(openai, "gpt-4o", request, "openai/gpt-4o")
    assert (most.output_tokens, most.choices, most.total_output) == (50, 4, 200)
    assert most.images == 2 and most.image_tokens == 2 * 1445
    assert most.describe() == "4 choices x 50 output tokens, 2 images at 1,445 tokens"
    # a cap given the provider's way, through extra=, counts too
    extra = _request("openai/gpt-4o", extra={"max_completion_tokens": 70})
    assert ceiling(openai, "gpt-4o", extra, "gpt-4o").total_output == 70
    assert ceiling(openai, "gpt-4o", _request("openai/gpt-4o"), "gpt-4o").total_output is None

    anthropic = Endpoint("anthropic", "anthropic", "https://x")
    thinking = _request("anthropic/claude-sonnet-4-5", reasoning={"budget_tokens": 2000})
    assert ceiling(anthropic, "claude-sonnet-4-5", thinking, "x").total_output == 4096 + 2000

    gemini = Endpoint("gemini", "gemini", "https://x")
    request = _request(
        "gemini/gemini-2.5-pro",
        max_tokens=2000,
        reasoning={"budget_tokens": 1024},
        extra={"generationConfig": {"candidateCount": 3}},
    )
    # maxOutputTokens holds the thinking (docs/providers.md): not counted twice
    assert ceiling(gemini, "gemini-2.5-pro", request, "x").total_output == 3 * 2000

    mock = Endpoint("mock", "mock", "")
    request = _request("mock/gpt-4o", 3, max_tokens=20, extra={"n": 3})
    most = ceiling(mock, "gpt-4o", request, "gpt-4o")  # the mock answers once
    assert (most.total_output, most.image_tokens) == (20, 3 * 85)


def test_an_endpoint_can_give_its_own_image_figure() -> None:
    """A vision model behind an OpenAI-compatible server: its provider's figure, given as
    the endpoint's ``image_tokens``, is what a budget reserves per image."""
    assert image_tokens("openai", "llava-v1.6", 2880) == 2880
    # a known model: never under its documented figure, above it if configured so
    assert image_tokens("openai", "gpt-4o", 10) == 1445
    assert image_tokens("openai", "gpt-4o", 5000) == 5000
    local = Endpoint("local", "openai", "http://x", image_tokens=2880)
    most = ceiling(local, "llava-v1.6", _request("local/llava-v1.6", 2, max_tokens=9), "x")
    assert (most.images, most.image_tokens) == (2, 2 * 2880)


def test_the_prompt_is_the_body_sent_without_its_media() -> None:
    """Every text of the body counts (extra= fields included); base64 and file URIs do
    not: images count by their figure, parts of no known bound are named."""
    anthropic = Endpoint("anthropic", "anthropic", "https://x")
    data = "data:image/png;base64," + "A" * 10_000
    image = {"type": "image_url", "image_url": {"url": data}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, image]}]
    request = LLMRequest(
        "anthropic/claude-sonnet-4-5",
        messages,
        max_tokens=9,
        extra={"system": [{"type": "text", "text": "RULES", "cache_control": {"ttl": "1h"}}]},
    )
    most = ceiling(anthropic, "claude-sonnet-4-5", request, "claude-sonnet-4-5")
    assert most.text is not None and "RULES" in most.text and "AAAA" not in most.text
    assert most.images == 1 and most.unbounded == () and most.cache_write == "1h"

    gemini = Endpoint("gemini", "gemini", "https://x")
    audio = {"type": "image_url", "image_url": {"url": "data:audio/wav;base64,UklGRg=="}}
    request = LLMRequest("gemini/gemini-2.5-pro", [{"role": "user", "content": [audio]}])
    most = ceiling(gemini, "gemini-2.5-pro", request, "x")
    assert most.unbounded == ("a Gemini inlineData part of type 'audio/wav'",)


def test_an_image_at_original_detail_counts_at_its_larger_bound() -> None:
    openai = Endpoint("openai", "openai", "https://x")
    image = {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "original"}}
    request = LLMRequest("openai/gpt-5.2", [{"role": "user", "content": [image]}], max_tokens=9)
    assert ceiling(openai, "gpt-5.2", request, "openai/gpt-5.2").image_tokens == 12_000
