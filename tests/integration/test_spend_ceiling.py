"""A budget's worst case is what the request sent can be billed for (``llm/_ceiling.py``),
against the fake provider server answering at that worst: images (each at its provider's
documented maximum), Anthropic's default ``max_tokens`` with a thinking budget, several
choices (``n``, ``candidateCount``) and Gemini's thinking budget. The cap holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import baton_nb as bn
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
        (
            "gemini/gemini-2.5-flash",
            {"reasoning": {"budget_tokens": 500}},
            1000 + 500,
            " 1,500 output tokens",
        ),
    ],
    ids=["openai-n", "gemini-candidates", "gemini-thinking"],
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
