"""The response cache's key (DESIGN §11): the exact request as sent, every default filled in,
never credentials."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from baton_nb.llm import LLMRequest, configure, reset_configuration
from baton_nb.llm._cache_key import cache_key

KEY = "sk-test-cache-key-0123456789"
OTHER_KEY = "sk-test-other-key-9876543210"


@pytest.fixture(autouse=True)
def _endpoints() -> Iterator[None]:
    reset_configuration()
    configure(
        providers={
            "openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": KEY},
            "anthropic": {"base_url": "http://127.0.0.1:9", "api_key": KEY},
            "local": {"kind": "openai", "base_url": "http://127.0.0.1:8/v1", "api_key": KEY},
        }
    )
    yield
    reset_configuration()


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"x": {"type": "integer"}},
    "required": ["x"],
    "additionalProperties": False,
}


BASE: dict[str, Any] = {
    "model": "openai/gpt-4o-mini",
    "messages": ({"role": "user", "content": "hi"},),
    "temperature": 0.0,
    "max_tokens": 50,
}

TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
}


def _key(**changes: Any) -> str:
    return cache_key(LLMRequest(**{**BASE, **changes})).digest


def test_every_field_changes_the_key() -> None:
    base = _key()
    variants = {
        "model": {"model": "openai/gpt-4o"},
        "provider kind": {"model": "anthropic/gpt-4o-mini"},
        "endpoint": {"model": "local/gpt-4o-mini"},
        "messages": {"messages": ({"role": "user", "content": "hi!"},)},
        "system message": {
            "messages": ({"role": "system", "content": "s"}, {"role": "user", "content": "hi"})
        },
        "temperature": {"temperature": 0.5},
        "max_tokens": {"max_tokens": 51},
        "seed": {"extra": {"seed": 1}},
        "top_p": {"extra": {"top_p": 0.5}},
        "stop": {"extra": {"stop": ["x"]}},
        "tools": {"tools": (TOOL,)},
        "tool_choice": {"tools": (TOOL,), "tool_choice": "required"},
        "response_format": {"response_format": {"type": "json_object"}},
        "json schema": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": SCHEMA, "strict": True},
            }
        },
        "reasoning": {"model": "openai/o3-mini", "reasoning": "low"},
        "cache_salt": {"cache_salt": "sample 2"},
    }
    keys = {name: _key(**change) for name, change in variants.items()}
    for name, key in keys.items():
        assert key != base, f"changing {name} left the key as it was"
    assert len(set(keys.values())) == len(keys)
    # tool_choice alone, over the same tools
    assert _key(tools=(TOOL,)) != keys["tool_choice"]
    # reasoning alone, on the same model
    assert _key(model="openai/o3-mini") != keys["reasoning"]


def test_an_omitted_default_and_its_value_are_one_key() -> None:
    assert _key(temperature=None) == _key(temperature=1.0) == _key(temperature=1)
    assert _key() == _key(extra={"top_p": 1}) == _key(extra={"n": 1, "presence_penalty": 0})
    anthropic = {"model": "anthropic/claude-3-5-haiku-latest"}
    assert _key(**anthropic, temperature=None) == _key(**anthropic, temperature=1.0)
    assert _key(temperature=None) != _key(temperature=0.0)


def test_how_it_travels_and_credentials_are_not_in_the_key() -> None:
    base = cache_key(LLMRequest(**BASE))
    assert _key(stream=True) == base.digest
    assert _key(timeout=3.0) == base.digest
    assert _key(price_as="openai/gpt-4o") == base.digest
    assert _key(cache=False) == base.digest
    assert KEY not in base.canonical
    configure(providers={"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": OTHER_KEY}})
    assert _key() == base.digest  # another key, the same request


def test_mock_provider_key() -> None:
    mock = {"model": "mock/gpt-4o-mini"}
    assert _key(**mock) != _key(**mock, temperature=0.3)
    assert _key(**mock, temperature=None) == _key(**mock, temperature=1.0)
