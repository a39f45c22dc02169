"""Per-provider limits, measured at the fake server."""

from __future__ import annotations

import anyio
import pytest

from baton_nb.llm import Limit, LLMRequest, _limits, complete, configure
from tests.fakes.provider_server import FakeProviderServer, FakeUsage

MSGS = ({"role": "user", "content": "hi"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _fan_out(model: str, n: int, **kw: object) -> None:
    async def one() -> None:
        await complete(LLMRequest(model, MSGS, **kw))  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)


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


class VirtualTime:
    """The limits' clock in a test: waits are recorded and pass at once (time jumps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    virtual = VirtualTime()
    monkeypatch.setattr(_limits, "CLOCK", _limits.Clock(lambda: virtual.now, virtual.sleep))
    return virtual


@pytest.mark.anyio
async def test_rpm_paces_requests(
    fake_providers: FakeProviderServer, virtual_time: VirtualTime
) -> None:
    configure(limits={"openai": Limit(rpm=120)})  # 2 per second after a burst of 120
    await _fan_out("openai/gpt-4o-mini", 122)
    assert fake_providers.request_count == 122
    # the first 120 at once; the 121st half a second later, the 122nd a second later
    assert len(virtual_time.waits) == 2
    assert virtual_time.now - 1000.0 == pytest.approx(1.0)


@pytest.mark.anyio
async def test_tpm_paces_by_estimated_tokens(
    fake_providers: FakeProviderServer, virtual_time: VirtualTime
) -> None:
    # 6000 tokens/min = 100/s; each call reserves its prompt estimate (7) + max_tokens (93)
    configure(limits={"openai": Limit(tpm=6000)})
    fake_providers.usage = FakeUsage(input=7, output=93)  # reported == estimated
    await _fan_out("openai/gpt-4o-mini", 61, max_tokens=93)
    assert virtual_time.waits == [pytest.approx(1.0)]  # 60 at once, the 61st a second later
    assert virtual_time.now - 1000.0 == pytest.approx(1.0)


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
