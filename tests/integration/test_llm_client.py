"""One shared httpx client per event loop, closed by aclose() or at loop shutdown."""

from __future__ import annotations

import asyncio
import gc
import warnings

import anyio
import httpx
import pytest

from baton_nb.llm import LLMRequest, aclose, complete
from baton_nb.llm._client import get_client
from tests.fakes.provider_server import FakeProviderServer

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
