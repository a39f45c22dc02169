"""The most a request can be billed for, read from the request body that will be sent.

A budget reserves a call's worst case before sending it (``runtime/_spend.py``). The output
side is taken from the body the provider's adapter builds, the one ``complete()`` sends,
so it cannot drift from the adapters: the output cap as sent (Anthropic's default
``max_tokens`` plus a thinking budget included) times the number of choices asked for
(OpenAI's ``n``, Gemini's ``candidateCount``, from ``extra=``). The prompt side counts each
image part at the most its provider documents for one image (tiktoken sees none of it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import Endpoint
from ._mock import IMAGE_TOKENS as MOCK_IMAGE_TOKENS  # what the mock bills per image
from ._types import LLMRequest

__all__ = ["Ceiling", "ceiling", "image_parts", "image_tokens"]

# Tokens one image can be billed at, at most (the documented worst case: a size is not
# read from the image; detail "high", which "auto" may pick).
#
# OpenAI, "Images and vision", Calculating costs
# (https://platform.openai.com/docs/guides/images-vision#calculating-costs):
# - tile models: fitted in 2048x2048, then the short side scaled to 768, 512-px tiles:
#   at most 4 x 2 = 8 tiles; tokens = base + 8 x per tile;
# - patch models: 32-px patches capped at 1,536, times the model's multiplier.
_OPENAI_TILES = {  # model: (base, per tile)
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o1-pro": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
    "gpt-5-chat-latest": (70, 140),
    "computer-use-preview": (65, 129),
}
_OPENAI_PATCHES = {  # model: multiplier of the 1,536 patches
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
}
OPENAI_IMAGE_MAX = {
    **{m: base + 8 * tile for m, (base, tile) in _OPENAI_TILES.items()},
    **{m: math.ceil(1536 * k) for m, k in _OPENAI_PATCHES.items()},
}
# Anthropic, "Vision" (https://docs.claude.com/en/docs/build-with-claude/vision): an image
# costs about width x height / 750 tokens, and one over ~1,600 tokens (or 1,568 px on its
# long edge) is first scaled down: ~1,600 at most (the prompt's 20 % margin covers "~").
ANTHROPIC_IMAGE_MAX = 1600
# Gemini, "Media resolution" and "Image understanding"
# (https://ai.google.dev/gemini-api/docs/media-resolution): Gemini 3 counts an image at
# 1,120 tokens by default and 2,240 at most (ultra high, per part); Gemini 2.x counts 258
# tokens per 768-px tile. Counted: nine tiles (2,322), above both.
GEMINI_IMAGE_MAX = 9 * 258


def image_tokens(kind: str, price_name: str) -> int:
    """The most one image costs in prompt tokens, for an endpoint of ``kind`` calling the
    model priced as ``price_name`` (an OpenAI-compatible router's ``anthropic/claude-...``
    counts as Anthropic's). A model of no known accounting counts at the largest figure."""
    if kind == "mock":
        return MOCK_IMAGE_TOKENS
    name = price_name.rsplit("/", 1)[-1].lower()
    if kind == "anthropic" or name.startswith("claude"):
        return ANTHROPIC_IMAGE_MAX
    if kind == "gemini" or name.startswith("gemini"):
        return GEMINI_IMAGE_MAX
    known = [m for m in OPENAI_IMAGE_MAX if name == m or name.startswith(m + "-")]
    if known:  # the longest: gpt-4o-mini-2024-07-18 is gpt-4o-mini's, not gpt-4o's
        return OPENAI_IMAGE_MAX[max(known, key=len)]
    return max(ANTHROPIC_IMAGE_MAX, GEMINI_IMAGE_MAX, *OPENAI_IMAGE_MAX.values())


def image_parts(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many image parts the messages hold."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, Mapping) and part.get("type") == "image_url"
    )


@dataclass(frozen=True)
class Ceiling:
    """A request's billable maximum, but its text prompt (counted by the caller)."""

    images: int  # image parts
    image_tokens: int  # their prompt tokens, at most
    output_tokens: int | None  # per choice, as sent; None: the request sets no cap
    choices: int  # answers billed (n / candidateCount)

    @property
    def total_output(self) -> int | None:
        return None if self.output_tokens is None else self.output_tokens * self.choices

    def describe(self) -> str:
        """``'3 x 1,000 output tokens, 1 image at 1,600 input tokens'``-style words."""
        out = f"{self.output_tokens:,} output tokens"
        if self.choices > 1:
            out = f"{self.choices} choices x {out}"
        if self.images:
            each = self.image_tokens // self.images
            out += f", {self.images} image{'s' if self.images > 1 else ''} at {each:,} tokens"
        return out


def ceiling(endpoint: Endpoint, model: str, request: LLMRequest, price_name: str) -> Ceiling:
    """The output cap and choices of the body ``complete()`` sends for ``request``
    (``UnsupportedFeature`` as sending would), and its images at their documented most."""
    images = image_parts(request.messages)
    per_image = image_tokens(endpoint.kind, price_name)
    if endpoint.kind == "mock":  # answers once, cut at max_tokens
        return Ceiling(images, images * per_image, request.max_tokens, 1)
    from ._complete import adapter_for

    body = adapter_for(endpoint).build(endpoint, model, request).body
    output, choices = _output_of(endpoint, body)
    return Ceiling(images, images * per_image, output, choices)


def _count(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(0, math.ceil(value))


def _output_of(endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[int | None, int]:
    """The output tokens one answer may be billed for, and how many answers."""
    kind = endpoint.kind
    if kind == "anthropic":  # max_tokens includes the thinking budget
        return _count(body.get("max_tokens"), None), 1
    if kind == "responses":  # max_output_tokens includes the reasoning tokens
        return _count(body.get("max_output_tokens"), None), 1
    if kind == "gemini":
        config = body.get("generationConfig")
        config = config if isinstance(config, Mapping) else {}
        output = _count(config.get("maxOutputTokens"), None)
        thinking = config.get("thinkingConfig")
        budget = _count(thinking.get("thinkingBudget"), 0) if isinstance(thinking, Mapping) else 0
        # Thinking is billed as output (Gemini pricing: "output price, including thinking
        # tokens"). The API reference calls maxOutputTokens the cap of a candidate; whether
        # it holds the thoughts too is not stated (observed so on Gemini 2.5/3:
        # googleapis/python-genai#2062), so an explicit thinking budget counts on top.
        if output is not None and budget:
            output += budget
        return output, _count(config.get("candidateCount"), 1) or 1
    # OpenAI chat completions: max_completion_tokens (or the older max_tokens, the field
    # some compatible servers take) includes the reasoning tokens; both sent: the larger
    fields = {endpoint.max_tokens_field, "max_completion_tokens", "max_tokens"}
    caps = [_count(body.get(f), None) for f in fields]
    output = max((c for c in caps if c is not None), default=None)
    return output, _count(body.get("n"), 1) or 1
