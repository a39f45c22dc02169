"""Pytest fixtures around the fake provider server.

Enable with ``pytest_plugins = ["tests.fakes.plugin"]`` in the root conftest.

- ``fake_provider``: the running server (one per session), reset around each test.
- ``fake_providers``: the same, with baton_nb.llm configured so every provider
  (openai, openai-responses, anthropic, gemini/google, openrouter, together, groq and a named
  ``local`` endpoint) points at it with the dummy keys of :data:`DUMMY_KEYS`,
  real key env vars hidden, fast retry backoff and batch polling; configuration reset
  afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from baton_nb.llm import configure, reset_configuration
from baton_nb.llm._config import (
    BatchPolling,
    RetrySettings,
    set_batch_polling,
    set_retry_settings,
)
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

__all__ = ["DUMMY_KEYS", "FakeProviderServer", "FakeUsage", "Reply"]

DUMMY_KEYS = {
    "openai": "sk-test-openai-0123456789abcdef",
    "anthropic": "sk-ant-test-0123456789abcdef",
    "gemini": "AIzaTestGeminiKey0123456789abcdef",
    "openrouter": "sk-or-test-0123456789abcdef",
    "together": "tg-test-0123456789abcdef",
    "groq": "gsk-test-0123456789abcdef",
}
KEY_ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "GOOGLE_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "TOGETHER_API_KEY",
    "GROQ_API_KEY",
)
FAST_RETRIES = RetrySettings(max_retries=4, backoff_base=0.01, backoff_cap=0.05, max_wait=2.0)
FAST_BATCH_POLLING = BatchPolling(initial=0.01, maximum=0.05)  # provider batches (DESIGN §12)


@pytest.fixture(scope="session")
def _fake_provider_server() -> Iterator[FakeProviderServer]:
    server = FakeProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_provider(_fake_provider_server: FakeProviderServer) -> Iterator[FakeProviderServer]:
    """The fake provider server (``.base_url``, ``.requests``, ``.script(...)``)."""
    _fake_provider_server.reset()
    yield _fake_provider_server
    _fake_provider_server.reset()


def provider_config(base_url: str) -> dict[str, dict[str, str]]:
    """``configure(providers=...)`` options pointing every provider at ``base_url``."""
    v1 = f"{base_url}/v1"
    return {
        "openai": {"base_url": v1, "api_key": DUMMY_KEYS["openai"]},
        "openai-responses": {"base_url": v1, "api_key": DUMMY_KEYS["openai"]},
        "anthropic": {"base_url": base_url, "api_key": DUMMY_KEYS["anthropic"]},
        "gemini": {"base_url": base_url, "api_key": DUMMY_KEYS["gemini"]},
        "openrouter": {"base_url": v1, "api_key": DUMMY_KEYS["openrouter"]},
        "together": {"base_url": v1, "api_key": DUMMY_KEYS["together"]},
        "groq": {"base_url": v1, "api_key": DUMMY_KEYS["groq"]},
        "local": {"kind": "openai", "base_url": v1},
    }


@pytest.fixture
def fake_providers(
    fake_provider: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeProviderServer]:
    """The fake server with every provider configured to use it (dummy keys, fast retries)."""
    for name in KEY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    reset_configuration()
    configure(providers=provider_config(fake_provider.base_url), timeout=10)
    set_retry_settings(FAST_RETRIES)
    set_batch_polling(FAST_BATCH_POLLING)
    try:
        yield fake_provider
    finally:
        reset_configuration()
