"""A budget's worst case is what the request sent can be billed for (``llm/_ceiling.py``),
against the fake provider server answering at that worst: images (each at its provider's
documented maximum), Anthropic's default ``max_tokens`` with a thinking budget, several
choices (``n``, ``candidateCount``) and Gemini's thinking budget. The cap holds. The
prompt is the body sent (``extra=`` system prompts and tools count), an Anthropic cache
write is reserved at its rate, and parts of no known bound (a PDF, audio, video, content
stored at the provider) are refused before sending."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import baton_nb as bn
from baton_nb.llm import configure
from tests.fakes.provider_server import FakeProviderServer, FakeUsage

pytestmark = pytest.mark.anyio
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f0d6e40000000049454e44ae426082"
)


def _one_call(name: str, db_url: str, model: str, **kwargs: Any) -> bn.Workflow:
    wf = bn.Workflow(name, db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=model, **kwargs)).text

    return wf


def _reason(run: bn.Run) -> str:
    assert run.spend is not None and run.spend.reason is not None
    return run.spend.reason


async def test_images_count_at_their_providers_maximum(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    # an image Anthropic bills at ~1,600 tokens: the text alone is ~15 tokens
    fake_providers.usage = FakeUsage(input=1600, output=100)
    fake_providers.latency = 0.2  # every call is in flight when the cap is reached
    budget = Decimal("0.05")
    wf = bn.Workflow(f"budget-images-{unique}", db=db_url)

    @wf.step()
    async def photos(ctx: bn.Context) -> list[int]:
        return list(range(30))

    @wf.step(map_over="photos", max_attempts=1)
    async def caption(ctx: bn.Context) -> str:
        image = {"type": "image_url", "image_url": {"url": PNG}}
        content = [{"type": "text", "text": f"Caption photo {ctx.item}."}, image]
        messages = [{"role": "user", "content": content}]
        answer = await ctx.complete(
            model="anthropic/claude-sonnet-4-5", messages=messages, max_tokens=100
        )
        return answer.text

    run = await wf.run(budget=str(budget), concurrency=30, display=False)
    per_call = bn.price(
        "anthropic/claude-sonnet-4-5", bn.Usage(input_tokens=1600, output_tokens=100)
    )
    assert per_call is not None
    assert run.status == "cancelled"
    assert 0 < fake_providers.request_count < 30
    assert run.spend is not None and run.spend.spent <= budget
    assert per_call * fake_providers.request_count <= budget  # what the server billed
    assert "1 image at 1,600 tokens" in _reason(run)


async def test_anthropic_thinking_without_max_tokens_reserves_what_is_sent(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    # no max_tokens: the adapter sends its default (4,096) plus the thinking budget
    model, kwargs = "anthropic/claude-sonnet-4-5", {"prompt": "Prove it.", "reasoning": "high"}
    refused = await _one_call(f"think-{unique}", db_url, model, **kwargs).run(
        budget="0.0625", display=False
    )
    assert refused.status == "cancelled" and fake_providers.request_count == 0
    assert "8,192 output tokens" in _reason(refused)  # 4,096 + a 4,096 budget

    fake_providers.usage = FakeUsage(input=20, output=8192)  # answers up to what was sent
    budget = Decimal("0.13")
    paid = await _one_call(f"think2-{unique}", db_url, model, **kwargs).run(
        budget=str(budget), display=False
    )
    assert paid.status == "completed", paid.failed_steps
    sent = fake_providers.requests[0].json
    assert sent["max_tokens"] == 8192 and sent["thinking"]["budget_tokens"] == 4096
    assert paid.spend is not None and 0 < paid.spend.spent <= budget


@pytest.mark.parametrize(
    ("model", "kwargs", "output", "said"),
    [
        ("openai/gpt-4o", {"extra": {"n": 3}}, 3 * 1000, "3 choices x 1,000 output tokens"),
        (
            "gemini/gemini-2.5-flash",
            {"extra": {"generationConfig": {"candidateCount": 2}}},
            2 * 1000,
            "2 choices x 1,000 output tokens",
        ),
    ],
    ids=["openai-n", "gemini-candidates"],
)
async def test_choices_and_thinking_multiply_the_output_reserved(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    model: str,
    kwargs: dict[str, Any],
    output: int,
    said: str,
) -> None:
    fake_providers.usage = FakeUsage(input=10, output=output)  # every choice at max_tokens
    worst = bn.price(model, bn.Usage(input_tokens=10, output_tokens=output))
    once = bn.price(model, bn.Usage(input_tokens=100, output_tokens=1000))
    assert worst is not None and once is not None
    wf = _one_call(f"choices-{unique}", db_url, model, prompt="Think.", max_tokens=1000, **kwargs)

    refused = await wf.run(budget=str(once), display=False)  # room for one answer only
    assert refused.status == "cancelled" and fake_providers.request_count == 0
    assert said in _reason(refused)

    budget = worst * 2
    paid = await wf.run(budget=str(budget), display=False, params={"again": 1})
    assert paid.status == "completed", paid.failed_steps
    assert fake_providers.request_count == 1
    assert paid.spend is not None and paid.spend.spent == worst <= budget


async def test_gemini_thinking_is_held_in_its_output_cap(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Gemini's maxOutputTokens holds the thinking (the adapter refuses a cap at or under
    the thinking budget): the cap is reserved once, the budget not added on top."""
    model = "gemini/gemini-2.5-flash"
    fake_providers.usage = FakeUsage(input=10, output=1000, reasoning=500)
    wf = _one_call(
        f"gthink-{unique}",
        db_url,
        model,
        prompt="Think.",
        max_tokens=1000,
        reasoning={"budget_tokens": 500},
    )
    short = bn.price(model, bn.Usage(input_tokens=10, output_tokens=999))
    assert short is not None
    refused = await wf.run(budget=str(short), display=False)
    assert refused.status == "cancelled" and fake_providers.request_count == 0
    assert " 1,000 output tokens" in _reason(refused)
    budget = bn.price(model, bn.Usage(input_tokens=200, output_tokens=1000))
    assert budget is not None
    paid = await wf.run(budget=str(budget), display=False, params={"again": 1})
    assert paid.status == "completed", paid.failed_steps
    sent = fake_providers.requests[0].json["generationConfig"]
    assert sent["maxOutputTokens"] == 1000 and sent["thinkingConfig"]["thinkingBudget"] == 500


BIG = "lorem ipsum dolor sit amet " * 8000  # ~40,000 tokens
TOOL = {"type": "function", "function": {"name": "f", "description": BIG, "parameters": {}}}


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [
        ("anthropic/claude-sonnet-4-5", {"extra": {"system": BIG}}),
        ("gemini/gemini-2.5-pro", {"extra": {"systemInstruction": {"parts": [{"text": BIG}]}}}),
        ("openai/gpt-4o", {"extra": {"tools": [TOOL]}}),
        ("openai/gpt-4o", {"tools": [TOOL]}),
    ],
    ids=["anthropic-extra-system", "gemini-extra-system", "openai-extra-tools", "tools"],
)
async def test_the_whole_body_sent_is_counted(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    model: str,
    kwargs: dict[str, Any],
) -> None:
    """The prompt is counted from the body that will be sent: a system prompt or tools
    given through ``extra=`` (or ``tools=``) count as the messages do."""
    fake_providers.usage = FakeUsage(input=40_000, output=100)  # what the provider bills
    billed = bn.price(model, bn.Usage(input_tokens=40_000, output_tokens=100))
    assert billed is not None
    budget = billed / 2  # no room for it
    wf = _one_call(f"body-{unique}", db_url, model, prompt="hi", max_tokens=100, **kwargs)
    run = await wf.run(budget=str(budget), display=False)
    assert run.status == "cancelled" and fake_providers.request_count == 0
    assert run.spend is not None and run.spend.spent == 0
    reason = _reason(run)
    counted = int(reason.split(" input tokens")[0].rsplit("(", 1)[-1].replace(",", ""))
    assert counted >= 40_000, reason


PDF = "data:application/pdf;base64,JVBERi0xLjQK"


@pytest.mark.parametrize(
    ("model", "content", "extra", "named"),
    [
        (
            "openai/gpt-4o",
            [{"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}}],
            {},
            "a file part (OpenAI 'file'",
        ),
        (
            "openai/gpt-4o-audio-preview",
            [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}],
            {},
            "an audio part ('input_audio')",
        ),
        (
            "gemini/gemini-2.5-pro",
            [
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/v.mp4", "media_type": "video/mp4"},
                }
            ],
            {},
            "a Gemini fileData part of type 'video/mp4'",
        ),
        ("gemini/gemini-2.5-pro", [], {"cachedContent": "cachedContents/x"}, "cachedContent"),
        (
            "local/qwen2-vl",
            [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}],
            {},
            "a video part ('video_url')",
        ),
        (
            "local/qwen2-audio",
            [{"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}}],
            {},
            "an audio part ('audio_url')",
        ),
        (
            "openai/gpt-4o",
            [{"type": "image_url", "image_url": {"url": PDF}}],
            {},
            "a data: URL of type 'application/pdf'",
        ),
        (
            "anthropic/claude-sonnet-4-5",
            [],
            {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
            "a server-side tool ('web_search_20250305'",
        ),
        (
            "openai-responses/gpt-4o",
            [],
            {"tools": [{"type": "web_search"}]},
            "a server-side tool ('web_search'",
        ),
        ("openai/gpt-4o-search-preview", [], {"web_search_options": {}}, "web_search_options"),
        (
            "gemini/gemini-2.5-pro",
            [],
            {"tools": [{"googleSearch": {}}]},
            "a server-side tool ('googleSearch'",
        ),
    ],
    ids=[
        "openai-file",
        "openai-audio",
        "gemini-video",
        "gemini-cached-content",
        "video-url",
        "audio-url",
        "pdf-data-url",
        "anthropic-web-search",
        "responses-web-search",
        "openai-web-search-options",
        "gemini-google-search",
    ],
)
async def test_parts_of_no_known_bound_are_refused_under_a_budget(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    model: str,
    content: list[dict[str, Any]],
    extra: dict[str, Any],
    named: str,
) -> None:
    """A PDF, audio, a video or content stored at the provider: billed by what it holds,
    which nothing bounds before sending. Under a budget such a call is not sent, and the
    error names the part and what to do."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "summarise"}, *content]}]
    wf = _one_call(
        f"unbounded-{unique}", db_url, model, messages=messages, max_tokens=100, extra=extra
    )
    run = await wf.run(budget="5", display=False)
    assert run.status == "failed" and fake_providers.request_count == 0
    error = str(run.steps["ask"].error)
    assert named in error and "without a budget" in error, error


async def test_an_anthropic_cache_write_is_reserved_at_the_write_rate(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A ``cache_control`` breakpoint makes Anthropic bill the prompt it caches at the
    write rate (1.25x the input rate for 5 minutes, 2x for ``ttl: "1h"``): reserved so."""
    model = "anthropic/claude-sonnet-4-5"
    system = {"type": "text", "text": BIG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    messages = [{"role": "system", "content": [system]}, {"role": "user", "content": "hi"}]
    fake_providers.usage = FakeUsage(input=40_000, cache_write=40_000, output=100)
    plain = bn.price(model, bn.Usage(input_tokens=48_000, output_tokens=100))
    assert plain is not None
    wf = _one_call(f"write-{unique}", db_url, model, messages=messages, max_tokens=100)
    refused = await wf.run(budget=str(plain * Decimal("1.2")), display=False)
    assert refused.status == "cancelled" and fake_providers.request_count == 0
    assert "the prompt at the 1h cache-write rate" in _reason(refused)
    budget = plain * 3
    paid = await wf.run(budget=str(budget), display=False, params={"again": 1})
    assert paid.status == "completed", paid.failed_steps
    assert paid.spend is not None and 0 < paid.spend.spent <= budget


async def test_a_dotted_openai_version_counts_its_images_as_its_family(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """gpt-5.1 is a GPT-5: an image counts at GPT-5's figure (or the newer GPT-5 patch
    accounting's, the larger), not at the largest figure of any model (48,169 tokens)."""
    fake_providers.usage = FakeUsage(input=100, output=100)
    content = [
        {"type": "text", "text": "caption"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    messages = [{"role": "user", "content": content}]
    wf = _one_call(f"dotted-{unique}", db_url, "openai/gpt-5.1", messages=messages, max_tokens=100)
    run = await wf.run(budget="0.05", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1


@pytest.mark.parametrize(
    ("model", "endpoint", "figure"),
    [
        # a -mini variant not listed: its family's patch figure (gpt-5-mini), not gpt-5's
        ("openai/gpt-5.1-codex-mini", None, "2,489"),
        # an endpoint's image_tokens= under the documented figure of a known model: the
        # documented one is kept
        ("local/gpt-4o", {"kind": "openai", "image_tokens": 10}, "1,445"),
    ],
    ids=["codex-mini", "configured-below-documented"],
)
async def test_an_image_is_never_counted_under_its_documented_figure(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    model: str,
    endpoint: dict[str, Any] | None,
    figure: str,
) -> None:
    if endpoint is not None:
        configure(providers={"local": {**endpoint, "base_url": f"{fake_providers.base_url}/v1"}})
    content = [
        {"type": "text", "text": "caption"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    messages = [{"role": "user", "content": content}]
    price_as = "openai/gpt-4o" if model.startswith("local/") else None
    wf = _one_call(
        f"figure-{unique}", db_url, model, messages=messages, max_tokens=10, price_as=price_as
    )
    run = await wf.run(budget="0.000001", display=False)
    assert run.status == "cancelled" and fake_providers.request_count == 0
    assert f"1 image at {figure} tokens" in _reason(run)
