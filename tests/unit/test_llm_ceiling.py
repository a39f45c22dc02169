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
    assert ceiling(gemini, "gemini-2.5-pro", request, "x").total_output == 3 * (2000 + 1024)

    mock = Endpoint("mock", "mock", "")
    request = _request("mock/gpt-4o", 3, max_tokens=20, extra={"n": 3})
    most = ceiling(mock, "gpt-4o", request, "gpt-4o")  # the mock answers once
    assert (most.total_output, most.image_tokens) == (20, 3 * 85)
