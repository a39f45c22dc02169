"""API keys never appear in reprs, errors, raw responses or logs."""

from __future__ import annotations

import logging
import traceback

import pytest

from baton_nb._errors import ProviderError
from baton_nb.llm import LLMRequest, complete, configure, redact_secrets
from baton_nb.llm._config import resolve_endpoint
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, Reply

MSGS = ({"role": "user", "content": "hi"},)
MODELS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _assert_clean(text: str) -> None:
    for key in DUMMY_KEYS.values():
        assert key not in text


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_keys_echoed_in_responses_are_redacted(
    fake_providers: FakeProviderServer,
    model: str,
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = DUMMY_KEYS[model.split("/")[0]]
    fake_providers.text = f"the key is {key}"
    fake_providers.script(Reply(status=500, message=f"bad key {key}"))
    with caplog.at_level(logging.DEBUG):
        c = await complete(LLMRequest(model, MSGS, stream=stream))
    _assert_clean(repr(c) + c.to_json() + caplog.text)
    assert "[REDACTED]" in str(c.raw)
    assert c.text == "the key is [REDACTED]"
    # the request really carried the key
    assert key in str(fake_providers.requests[-1].headers)


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
async def test_errors_and_tracebacks_hold_no_key(
    fake_providers: FakeProviderServer, model: str
) -> None:
    configure(max_retries=0)
    key = DUMMY_KEYS[model.split("/")[0]]
    fake_providers.script(Reply(status=503, message=f"key={key} Authorization: Bearer {key}"))
    with pytest.raises(ProviderError) as info:
        await complete(LLMRequest(model, MSGS))
    err = info.value
    _assert_clean(str(err) + repr(err) + "".join(traceback.format_exception(err)))
    assert err.__cause__ is None and err.__context__ is None


@pytest.mark.anyio
async def test_transport_errors_hold_no_key(fake_providers: FakeProviderServer) -> None:
    configure(
        max_retries=0,
        providers={"dead": {"base_url": "http://127.0.0.1:9/v1", "api_key": "dead-secret-key-1"}},
    )
    with pytest.raises(ProviderError) as info:
        await complete(LLMRequest("dead/m", MSGS))
    err = info.value
    text = str(err) + repr(err) + "".join(traceback.format_exception(err))
    assert "dead-secret-key-1" not in text
    assert err.__cause__ is None and err.__context__ is None


def test_endpoint_and_request_reprs_hold_no_key(fake_providers: FakeProviderServer) -> None:
    for name in ("openai", "anthropic", "gemini", "openrouter"):
        _assert_clean(repr(resolve_endpoint(name)))
    _assert_clean(repr(LLMRequest("openai/gpt-4o", MSGS)))


@pytest.mark.anyio
async def test_key_shaped_content_in_answers_is_kept(fake_providers: FakeProviderServer) -> None:
    code = 'httpx.get(url, headers={"x-api-key": "YOUR_KEY"}) # sk-abcdefghijklmnopqrstuvwxyz'
    fake_providers.text = code
    c = await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    assert c.text == code


def test_redact_secrets_knows_configured_keys(fake_providers: FakeProviderServer) -> None:
    text = " ".join(DUMMY_KEYS.values())
    _assert_clean(redact_secrets(text))
