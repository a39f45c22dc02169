"""In-call retries, give-ups and the provider's own error messages."""

from __future__ import annotations

import time
from typing import Any

import pytest

from baton_nb._errors import ProviderError
from baton_nb.llm import LLMRequest, complete, configure
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, Reply

MSGS = ({"role": "user", "content": "hi"},)
MODELS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _req(model: str = "openai/gpt-4o-mini", **kw: Any) -> LLMRequest:
    return LLMRequest(model, MSGS, **kw)


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_429_with_retry_after_then_success(
    fake_providers: FakeProviderServer, model: str, stream: bool
) -> None:
    fake_providers.script(
        Reply(status=429, headers={"retry-after": "0.2"}),
        Reply(status=429, headers={"retry-after": "0"}),
    )
    start = time.perf_counter()
    c = await complete(_req(model, stream=stream))
    assert c.text == fake_providers.text
    assert fake_providers.request_count == 3
    assert time.perf_counter() - start >= 0.2  # Retry-After honoured


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 503, 529, 408, 409])
async def test_transient_statuses_are_retried(
    fake_providers: FakeProviderServer, status: int
) -> None:
    fake_providers.script(Reply(status=status))
    c = await complete(_req())
    assert c.text == fake_providers.text
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_dropped_connection_is_retried(fake_providers: FakeProviderServer) -> None:
    fake_providers.script(Reply(drop=True))
    c = await complete(_req())
    assert c.text == fake_providers.text
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_error_event_mid_stream_is_retried(fake_providers: FakeProviderServer) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_providers.script(Reply(events=[("error", overloaded)]))
    c = await complete(_req("anthropic/claude-haiku-4-5", stream=True))
    assert c.text == fake_providers.text
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_retries_are_bounded_then_retryable_error(
    fake_providers: FakeProviderServer,
) -> None:
    configure(max_retries=2)
    fake_providers.script(*[Reply(status=503, message="upstream overloaded")] * 5)
    with pytest.raises(ProviderError) as info:
        await complete(_req())
    err = info.value
    assert (err.provider, err.status, err.retryable) == ("openai", 503, True)
    assert "upstream overloaded" in str(err) and "gave up after 3 attempts" in str(err)
    assert fake_providers.request_count == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("openai/gpt-4o-mini", "Invalid value for 'temperature'"),
        ("anthropic/claude-haiku-4-5", "max_tokens: must be greater than 0"),
        ("gemini/gemini-2.5-flash", "Invalid JSON payload received."),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_400_fails_at_once_with_the_provider_message(
    fake_providers: FakeProviderServer, model: str, message: str, stream: bool
) -> None:
    fake_providers.script(Reply(status=400, message=message))
    with pytest.raises(ProviderError) as info:
        await complete(_req(model, stream=stream))
    assert info.value.status == 400 and info.value.retryable is False
    assert message in str(info.value)
    assert fake_providers.request_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403, 404, 422])
async def test_other_4xx_fail_at_once(fake_providers: FakeProviderServer, status: int) -> None:
    fake_providers.script(Reply(status=status))
    with pytest.raises(ProviderError) as info:
        await complete(_req())
    assert (info.value.status, info.value.retryable) == (status, False)
    assert fake_providers.request_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
async def test_401_message_contains_no_key(fake_providers: FakeProviderServer, model: str) -> None:
    provider = model.split("/")[0]
    key = DUMMY_KEYS[provider]
    # a provider that echoes the key back in full, in the message and elsewhere
    body = {"error": {"message": f"Incorrect API key provided: {key}.", "key": key}}
    fake_providers.script(Reply(status=401, body=body))
    with pytest.raises(ProviderError) as info:
        await complete(_req(model))
    text = str(info.value) + repr(info.value) + repr(info.value.args)
    assert key not in text
    assert "Incorrect API key provided" in text
    assert "check the API key" in text
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_timeout_is_retried_then_provider_error(
    fake_providers: FakeProviderServer, stream: bool
) -> None:
    configure(max_retries=1)
    fake_providers.latency = 1.0
    with pytest.raises(ProviderError) as info:
        await complete(_req(timeout=0.2, stream=stream))
    err = info.value
    assert (err.status, err.retryable) == (None, True)
    assert "timed out after 0.2 s" in str(err) and "gave up after 2 attempts" in str(err)
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_timeout_then_success(fake_providers: FakeProviderServer) -> None:
    fake_providers.script(Reply(delay=1.0))
    c = await complete(_req(timeout=0.2))
    assert c.text == fake_providers.text
    assert fake_providers.request_count == 2


@pytest.mark.anyio
async def test_connection_refused_says_what_to_check(
    fake_providers: FakeProviderServer,
) -> None:
    configure(max_retries=1, providers={"dead": {"base_url": "http://127.0.0.1:9/v1"}})
    with pytest.raises(ProviderError) as info:
        await complete(_req("dead/m"))
    assert info.value.retryable is True and info.value.status is None
    assert "127.0.0.1:9" in str(info.value) and "base_url" in str(info.value)


@pytest.mark.anyio
async def test_garbage_body_is_a_clear_error(fake_providers: FakeProviderServer) -> None:
    fake_providers.script(Reply(body="<html>oops</html>"))
    with pytest.raises(ProviderError, match="not a JSON object"):
        await complete(_req())


@pytest.mark.anyio
async def test_a_cancel_from_outside_is_not_the_calls_timeout(
    fake_providers: FakeProviderServer,
) -> None:
    """The call's own deadline (asyncio.timeout on asyncio) is a retried timeout; a caller's
    deadline or cancel around it ends the call at once, never turned into a retry."""
    import anyio

    configure(max_retries=3)
    fake_providers.latency = 1.0
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.2):
            await complete(_req(timeout=5.0))
    assert fake_providers.request_count == 1
    with anyio.move_on_after(0.2) as scope:
        await complete(_req(timeout=5.0))
    assert scope.cancelled_caught and fake_providers.request_count == 2
