"""One shared httpx client per event loop, closed by aclose() or at loop shutdown."""

from __future__ import annotations

import asyncio
import gc
import warnings

import anyio
import httpx
import pytest

from baton_nb.llm import LLMRequest, aclose, complete, configure
from baton_nb.llm._client import get_client
from tests.fakes.provider_server import FakeProviderServer, Reply

MSGS = ({"role": "user", "content": "hi"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_one_client_per_loop_and_aclose(fake_providers: FakeProviderServer) -> None:
    first = await get_client()
    await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    assert await get_client() is first
    await aclose()
    assert first.is_closed
    await complete(LLMRequest("openai/gpt-4o-mini", MSGS))  # a new client is made
    assert (await get_client()) is not first
    await aclose()
    await aclose()  # idempotent


def test_client_is_closed_when_its_loop_ends(fake_providers: FakeProviderServer) -> None:
    clients: list[httpx.AsyncClient] = []

    async def run() -> None:
        await complete(LLMRequest("anthropic/claude-haiku-4-5", MSGS, stream=True))
        clients.append(await get_client())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(run())
        anyio.run(run)
        gc.collect()
    assert len(clients) == 2 and clients[0] is not clients[1]
    assert all(c.is_closed for c in clients)
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_requests_carry_client_defaults_and_call_headers(
    fake_providers: FakeProviderServer,
) -> None:
    await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    configure(providers={"local": {"headers": {"User-Agent": "mine/1.0", "X-Title": "bench"}}})
    await complete(LLMRequest("local/some-model", MSGS, price_as="openai/gpt-4o-mini"))
    await aclose()
    plain, custom = fake_providers.requests
    assert plain.headers["user-agent"] == "baton-nb"
    assert plain.headers["accept"] == "*/*"
    assert "gzip" in plain.headers["accept-encoding"]
    assert plain.headers["content-type"] == "application/json"
    assert plain.headers["host"] == fake_providers.base_url.removeprefix("http://")
    assert int(plain.headers["content-length"]) > 0
    assert plain.json["model"] == "gpt-4o-mini"
    assert custom.headers["user-agent"] == "mine/1.0"  # a call's header replaces the default
    assert custom.headers["x-title"] == "bench"


@pytest.mark.anyio
async def test_cookies_set_by_the_provider_are_sent_back(
    fake_providers: FakeProviderServer,
) -> None:
    fake_providers.script(Reply(headers={"set-cookie": "__cf_bm=abc123; Path=/; HttpOnly"}))
    for _ in range(3):
        await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    await aclose()
    first, second, third = fake_providers.requests
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "__cf_bm=abc123"
    assert third.headers["cookie"] == "__cf_bm=abc123"
