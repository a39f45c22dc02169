"""Per-provider limits, measured at the fake server."""

from __future__ import annotations

import time

import anyio
import pytest

from baton_nb.llm import Limit, LLMRequest, complete, configure
from baton_nb.pricing import known_models
from tests.fakes.provider_server import FakeProviderServer, FakeUsage

MSGS = ({"role": "user", "content": "hi"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _fan_out(model: str, n: int, **kw: object) -> list[float]:
    done: list[float] = []

    async def one() -> None:
        await complete(LLMRequest(model, MSGS, **kw))  # type: ignore[arg-type]
        done.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return done


@pytest.mark.anyio
async def test_concurrency_never_above_the_limit(fake_providers: FakeProviderServer) -> None:
    configure(limits={"openai": Limit(concurrency=5)})
    fake_providers.latency = 0.05
    await _fan_out("openai/gpt-4o-mini", 40)
    assert fake_providers.request_count == 40
    assert fake_providers.max_in_flight == 5


@pytest.mark.anyio
async def test_limits_are_per_provider(fake_providers: FakeProviderServer) -> None:
    configure(limits={"anthropic": Limit(concurrency=2)})
    fake_providers.latency = 0.05
    await _fan_out("openai/gpt-4o-mini", 20)
    assert fake_providers.max_in_flight > 2  # openai is unlimited
    fake_providers.reset()
    fake_providers.latency = 0.05
    await _fan_out("anthropic/claude-haiku-4-5", 10)
    assert fake_providers.max_in_flight == 2


@pytest.mark.anyio
async def test_limit_holds_across_event_loops_of_one_run(
    fake_providers: FakeProviderServer,
) -> None:
    configure(limits={"google": Limit(concurrency=3)})  # alias of gemini
    fake_providers.latency = 0.02
    await _fan_out("gemini/gemini-2.5-flash", 12, stream=True)
    assert fake_providers.max_in_flight == 3


@pytest.mark.anyio
async def test_rpm_paces_requests(fake_providers: FakeProviderServer) -> None:
    # the first priced call imports genai-prices (~0.4 s, once per process): not the pacing
    await anyio.to_thread.run_sync(known_models)
    configure(limits={"openai": Limit(rpm=120)})  # 2 per second after a burst of 120
    start = time.perf_counter()
    done = await _fan_out("openai/gpt-4o-mini", 122)
    elapsed = time.perf_counter() - start
    assert 0.95 <= elapsed < 4.0  # the 121st at ~0.5 s, the 122nd at ~1.0 s
    assert sorted(done)[119] - start < 0.5


@pytest.mark.anyio
async def test_tpm_paces_by_estimated_tokens(fake_providers: FakeProviderServer) -> None:
    # 6000 tokens/min = 100/s; each call reserves its prompt estimate (7) + max_tokens (93)
    configure(limits={"openai": Limit(tpm=6000)})
    fake_providers.usage = FakeUsage(input=7, output=93)  # reported == estimated
    start = time.perf_counter()
    await _fan_out("openai/gpt-4o-mini", 61, max_tokens=93)
    assert 0.8 <= time.perf_counter() - start < 2.5  # 60 at once, the 61st a second later


@pytest.mark.anyio
async def test_tpm_is_corrected_by_reported_usage(fake_providers: FakeProviderServer) -> None:
    configure(limits={"openai": Limit(tpm=6000)})
    fake_providers.usage = FakeUsage(input=8, output=2)  # reported: 10 tokens, reserved 100
    with anyio.fail_after(2):
        await _fan_out("openai/gpt-4o-mini", 60, max_tokens=93)  # the minute's allowance
        # 60 * 90 tokens came back: 50 more calls go at once instead of over 50 s
        await _fan_out("openai/gpt-4o-mini", 50, max_tokens=93)


@pytest.mark.anyio
async def test_cancelled_waiter_gives_its_reservation_back(
    fake_providers: FakeProviderServer,
) -> None:
    configure(limits={"openai": Limit(rpm=60)})
    await _fan_out("openai/gpt-4o-mini", 60)
    with anyio.move_on_after(0.1):
        await _fan_out("openai/gpt-4o-mini", 5)  # would wait 1..5 s
    assert fake_providers.request_count == 60
