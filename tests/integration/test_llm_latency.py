"""A call's latency_ms is the provider's: the shared HTTP client (aiohttp imported, the SSL
context loaded) is made before the latency clock starts, not inside the first call."""

from __future__ import annotations

import pytest

from baton_nb.llm import LLMRequest, _complete, aclose, complete
from baton_nb.llm._client import shared_now
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio
HI = ({"role": "user", "content": "hi"},)


async def test_the_first_call_starts_its_clock_once_the_client_is_made(
    fake_providers: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aclose()  # this loop's next call makes a new client
    assert shared_now() is None
    client_made_at_each_read: list[bool] = []
    real = _complete._clock

    def clock() -> float:
        client_made_at_each_read.append(shared_now() is not None)
        return real()

    monkeypatch.setattr(_complete, "_clock", clock)
    for _ in range(2):
        completion = await complete(LLMRequest("openai/gpt-4o-mini", HI, max_tokens=5))
        assert completion.latency_ms >= 0
    assert fake_providers.request_count == 2
    # started and stopped, twice: the client existed whenever the clock was read
    assert client_made_at_each_read == [True] * 4
