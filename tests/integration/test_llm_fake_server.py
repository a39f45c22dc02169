"""The fake provider started standalone, as the runtime's subprocess tests use it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from baton_nb.llm import LLMRequest, complete, configure, reset_configuration
from tests.fakes.plugin import provider_config
from tests.fakes.provider_server import FakeUsage, RemoteFakeProvider, Reply

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the server in a real subprocess


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def standalone() -> Iterator[RemoteFakeProvider]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.provider_server", "--port", "0", "--latency", "0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        yield RemoteFakeProvider(base_url)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


@pytest.mark.anyio
async def test_standalone_server_is_scriptable(
    standalone: RemoteFakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_configuration()
    try:
        configure(providers=provider_config(standalone.base_url))
        standalone.configure(usage=FakeUsage(input=5, output=3), text="remote")
        standalone.script(Reply(status=400, message="nope"))
        with pytest.raises(Exception, match="nope"):
            await complete(LLMRequest("openai/gpt-4o-mini", ({"role": "user", "content": "x"},)))
        c = await complete(LLMRequest("openai/gpt-4o-mini", ({"role": "user", "content": "x"},)))
        assert (c.text, c.usage.input_tokens, c.usage.output_tokens) == ("remote", 5, 3)
        requests = standalone.requests
        assert [r.path for r in requests] == ["/v1/chat/completions"] * 2
        assert requests[0].json["messages"] == [{"role": "user", "content": "x"}]
        assert standalone.stats()["requests"] == 2
        standalone.reset()
        assert standalone.requests == []
    finally:
        reset_configuration()


def test_unknown_route_is_404(standalone: RemoteFakeProvider) -> None:
    response = httpx.post(f"{standalone.base_url}/nope", json={})
    assert response.status_code == 404
