"""Per-provider limits, measured at the fake server.

rpm and tpm are checked on the server's own record of arrival times, on a virtual clock
shared by the limits and the server: minutes pass without waiting them.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import anyio.lowlevel
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


class VirtualClock:
    """Limits' clock for these tests: sleeping moves time on at once (no real waiting).

    Only one task may sleep at a time (the tests hold ``Limit(concurrency=1)``), so the
    time a grant is made is the time its request reaches the server, which records
    ``now()`` too.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def virtual_clock(fake_providers: FakeProviderServer) -> Iterator[VirtualClock]:
    clock = VirtualClock()
    previous = _limits.set_clock(clock)
    fake_providers.clock = clock.now
    try:
        yield clock
    finally:
        _limits.set_clock(previous)


def per_window(times: list[float], weights: list[float] | None = None) -> float:
    """The most requests (or tokens) the server saw in any 60 s window (t - 60, t]."""
    weights = weights or [1.0] * len(times)
    return max(
        sum(w for u, w in zip(times, weights, strict=True) if t - 60.0 < u <= t) for t in times
    )


@pytest.mark.anyio
async def test_no_minute_at_the_server_holds_more_than_rpm(
    fake_providers: FakeProviderServer, virtual_clock: VirtualClock
) -> None:
    configure(limits={"openai": Limit(concurrency=1, rpm=10)})
    await _fan_out("openai/gpt-4o-mini", 35)
    times = [r.received_at for r in fake_providers.requests]
    assert len(times) == 35
    assert per_window(times) == 10  # a full bucket refilling let 20 through in a minute
    # ... and no slower than that: a burst of 10 each minute (plus the margin)
    start = times[0]
    assert [round(t - start, 2) for t in times[::10]] == [0.0, 60.25, 120.5, 180.75]


@pytest.mark.anyio
async def test_no_minute_at_the_server_holds_more_than_tpm(
    fake_providers: FakeProviderServer, virtual_clock: VirtualClock
) -> None:
    # each call reserves its prompt estimate (7) + max_tokens (93) = 100 tokens
    configure(limits={"openai": Limit(concurrency=1, tpm=1000)})
    fake_providers.usage = FakeUsage(input=7, output=93)  # reported == estimated
    await _fan_out("openai/gpt-4o-mini", 25, max_tokens=93)
    seen = fake_providers.requests
    times = [r.received_at for r in seen]
    assert len(times) == 25
    assert per_window(times, [100.0] * len(times)) == 1000
    assert round(times[-1] - times[0], 2) == 120.5  # 10, 10, then 5: two minutes later


@pytest.mark.anyio
async def test_tpm_is_corrected_by_reported_usage(
    fake_providers: FakeProviderServer, virtual_clock: VirtualClock
) -> None:
    configure(limits={"openai": Limit(tpm=6000)})
    fake_providers.usage = FakeUsage(input=8, output=2)  # reported: 10 tokens, reserved 100
    await _fan_out("openai/gpt-4o-mini", 60, max_tokens=93)  # the minute's allowance
    # 60 * 90 tokens came back: 50 more calls go at once instead of over 50 s
    await _fan_out("openai/gpt-4o-mini", 50, max_tokens=93)
    assert fake_providers.request_count == 110
    assert virtual_clock.time == 1000.0  # nobody waited


@pytest.mark.anyio
async def test_cancelled_waiter_gives_its_reservation_back(
    fake_providers: FakeProviderServer,
) -> None:
    configure(limits={"openai": Limit(rpm=60)})
    await _fan_out("openai/gpt-4o-mini", 60)
    with anyio.move_on_after(0.1):
        await _fan_out("openai/gpt-4o-mini", 5)  # would wait 1..5 s
    assert fake_providers.request_count == 60
