"""A call's per-call work done once (issue 16, third round), with the same results: replay
and cache keys, endpoint and secrets resolution, scrubbing, the stored completion."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from baton_nb._usage import Usage
from baton_nb.llm import Completion, LLMRequest, configure, request_hash, reset_configuration
from baton_nb.llm._cache_key import cache_key
from baton_nb.llm._complete import completion_of
from baton_nb.llm._config import known_secrets, resolve_endpoint
from baton_nb.llm._redact import REDACTED, scrubber
from baton_nb.llm._types import FinishReason, ToolCall
from baton_nb.llm._wire import Parsed
from baton_nb.pricing import CallPricing


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000000000000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-000000000000000000")
    reset_configuration()
    yield
    reset_configuration()


def test_replay_and_cache_keys_are_the_ones_stored_before() -> None:
    """Digests computed by main at 7621579: keys stored by earlier runs still match."""
    first = LLMRequest(
        model="openai/gpt-4o-mini",
        messages=({"role": "user", "content": "héllo"},),
        temperature=0.2,
        max_tokens=50,
        extra={"top_p": 0.9},
    )
    schema = {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    second = LLMRequest(
        model="anthropic/claude-haiku-4-5",
        messages=({"role": "system", "content": "s"}, {"role": "user", "content": "q"}),
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    for _ in range(2):  # the second time from the kept endpoint
        assert request_hash(first) == (
            "2b01bb699d7ad56ca6db40863cbae478ab8f641d15ab780491ffeb3d7f70fcf3"
        )
        assert cache_key(first).digest == (
            "49b87335a7636881f5a23985ad4a7a5ead26c92547a8c49877ce4e9b0c1ac248"
        )
        assert request_hash(second) == (
            "71e26bb7eab050558e9b1fce5dee6964265f6c147f2f3061de8a38b10b96c205"
        )
        assert cache_key(second).digest == (
            "664d7f2f113b9aa76247df96c329e4eade0c4778831024bd176894a5865678c5"
        )


def test_the_endpoint_follows_configure_the_environment_and_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_endpoint("openai").api_key == "sk-test-0000000000000000000000"
    assert resolve_endpoint("openai") is resolve_endpoint("openai")  # kept
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-1111111111111111111111")
    assert resolve_endpoint("openai").api_key == "sk-test-1111111111111111111111"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_endpoint("openai").base_url == "http://127.0.0.1:9/v1"
    configure(providers={"openai": {"api_key": "sk-conf-2222222222222222", "timeout": 3}})
    endpoint = resolve_endpoint("openai")
    assert (endpoint.api_key, endpoint.timeout) == ("sk-conf-2222222222222222", 3.0)
    reset_configuration()
    assert resolve_endpoint("openai").api_key == "sk-test-1111111111111111111111"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(Exception, match="no API key"):
        resolve_endpoint("openai")


def test_the_endpoint_follows_an_environment_replaced_by_a_plain_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The change check reads os.environ's raw values; a mapping without them is read as is.
    environ = {**os.environ, "OPENAI_API_KEY": "sk-test-4444444444444444444444"}
    monkeypatch.setattr(os, "environ", environ)
    assert resolve_endpoint("openai").api_key == "sk-test-4444444444444444444444"
    environ["OPENAI_API_KEY"] = "sk-test-5555555555555555555555"
    assert resolve_endpoint("openai").api_key == "sk-test-5555555555555555555555"
    assert "sk-test-5555555555555555555555" in known_secrets()


def test_known_secrets_follow_configure_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "sk-test-0000000000000000000000" in known_secrets()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-3333333333333333333333")
    assert "sk-test-3333333333333333333333" in known_secrets()
    assert "sk-test-0000000000000000000000" not in known_secrets()
    configure(providers={"local": {"base_url": "http://x", "api_key_env": "MY_LOCAL_KEY"}})
    assert not any("local-secret" in s for s in known_secrets())
    monkeypatch.setenv("MY_LOCAL_KEY", "my-local-secret-value")
    assert "my-local-secret-value" in known_secrets()
    configure(providers={"other": {"base_url": "http://y", "headers": {"Authorization": "tok9"}}})
    assert "tok9" in known_secrets()
    assert scrubber().keys("a my-local-secret-value b") == f"a {REDACTED} b"
    reset_configuration()
    assert "my-local-secret-value" not in known_secrets()


def _completion(**kw: Any) -> Completion:
    fields: dict[str, Any] = {
        "text": 'ünï "q" \u2028',
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "usage": Usage(input_tokens=3, output_tokens=5),
        "cost": Decimal("0.000001230000000001"),
        "latency_ms": 12.5,
        "raw": {"id": "x", "choices": [{"message": {"content": "ünï"}}], "n": [1.5, None]},
        "tool_calls": (ToolCall.from_arguments("c1", "f", {"a": "é"}),),
        "finish_reason": None,
    }
    fields.update(kw)
    return Completion(**fields)


@pytest.mark.parametrize(
    "kw",
    [{}, {"cost": None}, {"cached": True, "saved": Decimal("0.5")}, {"raw": {}}, {"text": ""}],
)
def test_the_stored_completion_is_the_same_text_with_raw_encoded_once(kw: dict[str, Any]) -> None:
    plain = _completion(**kw)
    kept = _completion(**kw)
    _, encoded = scrubber().json_encoded(kept.raw)
    assert encoded is not None
    kept.keep_raw_json(encoded)
    assert kept.to_json() == plain.to_json()
    assert Completion.from_json(kept.to_json()) == plain
    # a completion made from it with another raw encodes its own
    other = replace(kept, raw={"other": 1})
    assert json.loads(other.to_json())["raw"] == {"other": 1}


def test_a_raw_answer_with_a_secret_is_redacted_and_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = {"echo": "key sk-test-0000000000000000000000", "h": "Authorization: Bearer abcdefgh"}
    value, encoded = scrubber().json_encoded(raw)
    assert encoded is None
    assert "sk-test-0000000000000000000000" not in json.dumps(value)
    assert "abcdefgh" not in json.dumps(value)
    _, clean_encoded = scrubber().json_encoded({"a": "b"})
    assert clean_encoded == '{"a":"b"}'


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_completion_of_scrubs_and_stores_as_before(anyio_backend: str) -> None:
    key = "sk-test-0000000000000000000000"
    endpoint = resolve_endpoint("openai")
    request = LLMRequest(model="openai/gpt-4o-mini", messages=({"role": "user", "content": "q"},))
    for raw in ({"id": "a", "content": "fine"}, {"id": "b", "content": f"leak {key}"}):
        parsed = Parsed(
            text=f"answer {key}",
            raw=raw,
            usage=Usage(input_tokens=1, output_tokens=1),
            tool_calls=(ToolCall.from_arguments("c", "f", {"k": key}),),
            message={"role": "assistant", "content": f"answer {key}"},
        )
        completion = await completion_of(
            endpoint, "gpt-4o-mini", request, parsed, 1.0, parsed.usage or Usage(), False
        )
        stored = completion.to_json()
        assert key not in stored
        assert stored == replace(completion).to_json()  # encoded afresh: the same text
        assert completion.text == f"answer {REDACTED}"


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _stored_as_before(c: Completion) -> str:
    """``Completion.to_json`` as it was written before the sixth round: one encoding of
    the whole dict (the stored text must not change: old code reads new rows)."""
    data = {
        "text": c.text,
        "model": c.model,
        "provider": c.provider,
        "usage": c.usage.to_dict(),
        "cost": None if c.cost is None else str(c.cost),
        "latency_ms": c.latency_ms,
        "raw": c.raw,
        "estimated": c.estimated,
        "replayed": c.replayed,
        "tool_calls": [t.to_dict() for t in c.tool_calls],
        "refusal": c.refusal,
        "finish_reason": None if c.finish_reason is None else c.finish_reason.value,
        "reasoning": c.reasoning,
        "message": dict(c.message),
        "pricing": None if c.pricing is None else c.pricing.to_dict(),
        **({"cached": True, "saved": _text(c.saved)} if c.cached else {}),
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"cost": None, "pricing": None, "tool_calls": ()},
        {"cached": True, "saved": None},
        {"text": '\x00\x1f\t\n\\"/ \ud800 😀 \u2028\u2029', "refusal": "\x7f", "reasoning": "r"},
        {"latency_ms": float("nan")},
        {"latency_ms": float("inf"), "estimated": 1, "replayed": True},
        {"latency_ms": 1e16},
        {"latency_ms": 3, "cost": Decimal("1E+3")},
        {"finish_reason": FinishReason.TOOL_CALLS},
        {"message": {"role": "assistant", "content": None, 1: "int key", "n": [1, {"x": 2.5}]}},
        {"message": {"role": "assistant", "content": "", "extra": {"deep": {"a": [True, None]}}}},
        {"raw": {"big": 10**40, "neg": -0.0, "e": 1e-7, "list": [[], {}], "t": (1, 2)}},
        {"pricing": CallPricing("openai/x", "genai-prices", "x", Decimal("0.01"), batch=True)},
        {"usage": Usage(input_tokens=10**12, output_tokens=7, reasoning_tokens=2)},
        # a plain message whose content is the text (its encoding written once, reused)
        {"tool_calls": ()},
        {"tool_calls": (), "text": '\x00"\\ é \u2028'},
        {"tool_calls": (), "message": {"role": "assistant", "content": "not the text"}},
        {"tool_calls": (), "text": "", "message": {"role": "assistant", "content": ""}},
    ],
)
def test_the_stored_completion_is_the_text_one_encoding_wrote(kw: dict[str, Any]) -> None:
    """The stored JSON, written field by field, is byte for byte what encoding the whole
    dict wrote (odd strings, non-finite floats, int keys, nested values, tuples)."""
    completion = _completion(**kw)
    assert completion.to_json() == _stored_as_before(completion)
    _, encoded = scrubber().json_encoded(completion.raw)
    if encoded is not None:
        completion.keep_raw_json(encoded)
        assert completion.to_json() == _stored_as_before(completion)
    if kw.get("latency_ms") == 3 or "message" in kw:  # readable: what replay loads
        again = Completion.from_json(completion.to_json())
        assert again.text == completion.text and again.cost == completion.cost


def test_pricings_equal_as_numbers_are_stored_as_their_own_text() -> None:
    """Fees of 0 and 0.0 compare equal; each completion stores its own pricing's text."""
    for fees in (Decimal("0"), Decimal("0.0"), None, Decimal("0"), Decimal("1E-9")):
        completion = _completion(pricing=CallPricing("openai/x", "genai-prices", "x", fees))
        assert completion.to_json() == _stored_as_before(completion)
