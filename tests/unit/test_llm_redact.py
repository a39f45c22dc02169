"""Secrets never survive redact_secrets()."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from baton_nb.llm import configure, redact_secrets, reset_configuration
from baton_nb.llm._redact import redact_json


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    reset_configuration()
    yield
    reset_configuration()


def test_configured_and_env_keys_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plainenvsecret42")
    configure(providers={"local": {"base_url": "http://x", "api_key": "my-local-secret"}})
    text = redact_secrets("key plainenvsecret42 and my-local-secret here")
    assert "plainenvsecret42" not in text and "my-local-secret" not in text
    assert text.count("[REDACTED]") == 2


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijkl",
        '{"x-api-key": "zzzzzzzzzzzz"}',
        "x-goog-api-key=qqqqqqqqqqqq",
        "GET https://host/v1beta/models/m:generateContent?alt=sse&key=qqqqqqqqqqqq",
        "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX",
        "AIza" + "SyA0123456789abcdefghijklmnopqrstu",  # built: no key-shaped literal
    ],
)
def test_shapes_are_removed(text: str) -> None:
    out = redact_secrets(text)
    assert "[REDACTED]" in out
    for secret in ("abcdefghijkl", "zzzzzzzzzzzz", "qqqqqqqqqqqq", "ABCDEFGHIJ", "AIzaSyA0"):
        assert secret not in out


def test_plain_text_is_untouched() -> None:
    text = "The key point: sky is blue; tokens=12 and skip-this."
    assert redact_secrets(text) == text


def test_redact_json_walks_everything() -> None:
    configure(providers={"local": {"base_url": "http://x", "api_key": "deep-secret-1"}})
    data = {"a": ["deep-secret-1", {"deep-secret-1": 3}], "n": 1.5, "t": True, "z": None}
    assert redact_json(data) == {
        "a": ["[REDACTED]", {"[REDACTED]": 3}],
        "n": 1.5,
        "t": True,
        "z": None,
    }
