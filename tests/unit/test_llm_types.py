"""LLMRequest, Completion, Limit, request_hash, split_model."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from baton_nb._errors import ConfigurationError
from baton_nb._usage import Usage
from baton_nb.llm import Completion, Limit, LLMRequest, request_hash, split_model

MSGS = ({"role": "user", "content": "hi"},)


def test_split_model() -> None:
    assert split_model("openai/gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert split_model("openrouter/meta-llama/llama-3.3-70b-instruct") == (
        "openrouter",
        "meta-llama/llama-3.3-70b-instruct",
    )
    assert split_model("Google/gemini-2.5-flash") == ("google", "gemini-2.5-flash")


@pytest.mark.parametrize("bad", ["gpt-4o", "/gpt-4o", "openai/", ""])
def test_split_model_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="provider/model"):
        split_model(bad)


def test_a_request_left_at_its_defaults_holds_the_checked_forms() -> None:
    """Defaults are not converted again (a request is built per call); what a caller gives
    in another form still is: empty tools as a list, extra as None or a dict kept by the
    caller."""
    plain = LLMRequest("openai/gpt-4o", MSGS)
    assert plain.tools == () and plain.tool_choice is None and dict(plain.extra) == {}
    with pytest.raises(TypeError):
        plain.extra["top_p"] = 1  # type: ignore[index]
    assert LLMRequest("openai/gpt-4o", MSGS).extra is not None
    given = LLMRequest("openai/gpt-4o", MSGS, tools=[], extra=None)  # type: ignore[arg-type]
    assert given.tools == () and type(given.tools) is tuple and dict(given.extra) == {}
    caller_extra = {"top_p": 1}
    kept = LLMRequest("openai/gpt-4o", MSGS, extra=caller_extra)
    caller_extra["top_p"] = 2
    assert dict(kept.extra) == {"top_p": 1}
    assert kept == LLMRequest("openai/gpt-4o", MSGS, extra={"top_p": 1})
    assert plain == given and request_hash(plain) == request_hash(given)
    chosen = LLMRequest("openai/gpt-4o", MSGS, tool_choice="none", reasoning="low")
    assert chosen.tool_choice is not None and chosen.tool_choice.to_openai() == "none"
    assert chosen.reasoning is not None and chosen.reasoning.effort == "low"
    with pytest.raises(ConfigurationError, match="needs tools"):
        LLMRequest("openai/gpt-4o", MSGS, tool_choice="auto")


def test_request_normalises_messages_and_extra() -> None:
    req = LLMRequest("openai/gpt-4o", [{"role": "user", "content": "x"}], extra={"top_p": 1})  # type: ignore[arg-type]
    assert isinstance(req.messages, tuple)
    assert dict(req.extra) == {"top_p": 1}
    with pytest.raises(TypeError):
        req.extra["top_p"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": 0}, {"max_tokens": -1}, {"timeout": 0}, {"messages": "hi"}],
)
def test_request_validation(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"model": "openai/gpt-4o", "messages": MSGS, **kwargs}
    with pytest.raises(ConfigurationError):
        LLMRequest(**args)  # type: ignore[arg-type]


def test_request_hash_is_stable_and_ignores_stream_and_timeout() -> None:
    a = LLMRequest("openai/gpt-4o", MSGS, temperature=0, max_tokens=5, extra={"b": 1, "a": 2})
    b = LLMRequest(
        "openai/gpt-4o",
        MSGS,
        temperature=0.0,
        max_tokens=5,
        extra={"a": 2, "b": 1},
        stream=True,
        timeout=3,
    )
    assert request_hash(a) == request_hash(b)
    assert len(request_hash(a)) == 64
    # a pinned value: the canonical form must not drift between versions
    assert request_hash(LLMRequest("mock/m", MSGS)) == request_hash(LLMRequest("mock/m", MSGS))
    expected = (
        __import__("hashlib")
        .sha256(
            json.dumps(
                {
                    "extra": {},
                    "max_tokens": None,
                    "messages": [{"content": "hi", "role": "user"}],
                    "model": "mock/m",
                    "price_as": None,
                    "temperature": None,
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        )
        .hexdigest()
    )
    assert request_hash(LLMRequest("mock/m", MSGS)) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/gpt-4o-mini"},
        {"messages": ({"role": "user", "content": "hi!"},)},
        {"temperature": 0.5},
        {"max_tokens": 6},
        {"price_as": "gpt-4o"},
        {"extra": {"top_p": 0.9}},
    ],
)
def test_request_hash_changes_with_what_is_asked(change: dict[str, object]) -> None:
    base: dict[str, object] = {"model": "openai/gpt-4o", "messages": MSGS, "max_tokens": 5}
    assert request_hash(LLMRequest(**base)) != request_hash(LLMRequest(**{**base, **change}))  # type: ignore[arg-type]


def test_request_hash_rejects_non_json() -> None:
    with pytest.raises(ConfigurationError, match="JSON"):
        request_hash(LLMRequest("openai/gpt-4o", MSGS, extra={"x": object()}))


def _completion(cost: Decimal | None) -> Completion:
    return Completion(
        text="héllo",
        model="anthropic/claude-haiku-4-5",
        provider="anthropic",
        usage=Usage(100, 20, 10, 50, 5),
        cost=cost,
        latency_ms=123.456789012345,
        raw={"id": "msg_1", "nested": [1, 2.5, None, {"k": "v"}]},
        estimated=True,
        replayed=False,
    )


@pytest.mark.parametrize("cost", [Decimal("0.000123450000"), Decimal("1E-12"), None])
def test_completion_json_round_trip(cost: Decimal | None) -> None:
    c = _completion(cost)
    back = Completion.from_json(c.to_json())
    assert back == c
    assert str(back.cost) == str(cost) if cost is not None else back.cost is None


def test_completion_json_keeps_pricing_and_reads_old_rows() -> None:
    from dataclasses import replace

    from baton_nb.pricing import CallPricing

    pricing = CallPricing(
        "anthropic/claude-haiku-4-5", "genai-prices 0.2.5", "anthropic/claude-haiku-4-5",
        Decimal("0.01"),
    )  # fmt: skip
    usage = Usage(100, 20, 10, 50, 5, cache_write_1h_tokens=4, web_search_requests=1)
    c = replace(_completion(Decimal("0.0102871")), pricing=pricing, usage=usage)
    assert Completion.from_json(c.to_json()) == c
    # a completion stored before usage details and pricing existed
    old = json.loads(_completion(Decimal(1)).to_json())
    del old["pricing"]
    for name in ("cache_write_1h_tokens", "web_search_requests"):
        del old["usage"][name]
    back = Completion.from_json(json.dumps(old))
    assert back.pricing is None and back.usage == Usage(100, 20, 10, 50, 5)


def test_completion_repr_hides_raw() -> None:
    assert "nested" not in repr(_completion(None))


@pytest.mark.parametrize("field", ["concurrency", "rpm", "tpm"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limit_validation(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError):
        Limit(**{field: value})  # type: ignore[arg-type]


def test_request_hash_of_a_plain_request_is_unchanged_by_the_neutral_fields() -> None:
    """Computed with the code before tools/response_format/reasoning existed: runs stored
    then still replay their calls."""
    request = LLMRequest(
        "openai/gpt-4o-mini",
        ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}),
        temperature=0,
        max_tokens=20,
        extra={"top_p": 0.5},
    )
    assert request_hash(request) == (
        "1d369a703be47b6b599ea58a3e157386afead151651f1fbcbfa9daf612f46cfc"
    )


def test_request_hash_covers_the_neutral_fields() -> None:
    base = LLMRequest("openai/gpt-4o-mini", ({"role": "user", "content": "hi"},))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    variants = [
        LLMRequest(base.model, base.messages, tools=[tool]),
        LLMRequest(base.model, base.messages, tools=[tool], tool_choice="required"),
        LLMRequest(base.model, base.messages, response_format={"type": "json_object"}),
        LLMRequest(base.model, base.messages, reasoning="low"),
        LLMRequest(base.model, base.messages, reasoning=1024),
    ]
    hashes = {request_hash(r) for r in [base, *variants]}
    assert len(hashes) == 6
