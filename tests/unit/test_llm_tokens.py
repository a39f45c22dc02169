"""Offline token estimates and the len/4 fallback."""

from __future__ import annotations

import logging

import pytest

from baton_nb.llm import _tokens, estimate_tokens


def test_text_uses_the_offline_encoding() -> None:
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("") == 0


def test_messages_include_framing() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    assert estimate_tokens(msgs) == 3 + 2 + 3 + 2 + 3
    assert estimate_tokens([]) == 0
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    assert estimate_tokens(parts) == 3 + 2 + 3


def test_fallback_when_tiktoken_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tiktoken

    def boom(name: str) -> None:
        raise RuntimeError("no data")

    monkeypatch.setattr(tiktoken, "get_encoding", boom)
    monkeypatch.setattr(_tokens, "_loaded", False)
    monkeypatch.setattr(_tokens, "_encoder", None)
    with caplog.at_level(logging.WARNING, logger="baton_nb.llm"):
        assert estimate_tokens("x" * 40) == 10
        assert estimate_tokens("abc") == 1
    assert sum("len(text)/4" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(_tokens, "_loaded", False)  # reload the real one for later tests
