"""A call's own work done once (issue 16, seventh round), with the same results: the JSON
text of the encoders made once, the key scrub of a plain answer without encoding it, the
whole-call deadline without a timer per call."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import fields
from decimal import Decimal
from typing import Any

import pytest

from baton_nb._usage import Usage
from baton_nb.llm import Completion
from baton_nb.llm._complete import _keys, _message_keys
from baton_nb.llm._deadline import start_deadline
from baton_nb.llm._jsonenc import one_shot
from baton_nb.llm._redact import REDACTED, Scrubber
from baton_nb.llm._types import _HASH_JSON, COMPACT_JSON, FinishReason, ToolCall, new_completion
from baton_nb.pricing import CallPricing

pytestmark = pytest.mark.anyio

_ODD: list[Any] = [
    {},
    [],
    "",
    None,
    True,
    0,
    -0.0,
    1e16,
    1e-7,
    10**40,
    -(10**30),
    '\x00\x1f\t\n\\"/ \ud800 \udfff 😀 \u2028\u2029 é',
    {"b": 1, "a": [1, 2.5, None, False, "x"], 3: "int key", 2.5: "float key", True: "bool"},
    {"z": {"y": {"x": [[], {}, (1, 2), ["deep", {"k": "\x7f"}]]}}},
    ("tuple", 1),
    {None: 1, "": ""},
    [{"role": "assistant", "content": "héllo"}],
]


@pytest.mark.parametrize(
    "encoder",
    [
        COMPACT_JSON,
        _HASH_JSON,
        json.JSONEncoder(ensure_ascii=False),
        json.JSONEncoder(),
        json.JSONEncoder(sort_keys=True, skipkeys=True),
        json.JSONEncoder(indent=2),
    ],
)
def test_one_shot_writes_the_encoders_text(encoder: json.JSONEncoder) -> None:
    encode = one_shot(encoder)
    for value in _ODD:
        try:
            expected: Any = encoder.encode(value)
        except TypeError as exc:  # sort_keys over mixed key types
            expected = type(exc)
        if expected is TypeError:
            with pytest.raises(TypeError):
                encode(value)
        else:
            assert encode(value) == expected, value
    for value in (float("nan"), [float("inf")], {"x": -math.inf}):
        if encoder.allow_nan:
            assert encode(value) == encoder.encode(value)
        else:
            with pytest.raises(ValueError):
                encode(value)


def test_one_shot_raises_what_the_encoder_raises() -> None:
    encode = one_shot(COMPACT_JSON)
    with pytest.raises(TypeError):
        encode({"x": object()})
    with pytest.raises(TypeError):
        encode({(1, 2): "tuple key"})
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="Circular reference"):
        encode(cycle)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        COMPACT_JSON.encode(deep)
    with pytest.raises(RecursionError):
        encode(deep)
    assert encode({"after": "errors"}) == '{"after":"errors"}'  # nothing left behind


_TEXTS = [
    "",
    "plain answer",
    "key sk-test-AAAAAAAAAAAAAAAA inside",
    "sk-test-AAAAAAAAAAAAAAAA",
    'quote " then sk-test-AAAAAAAAAAAAAAAA',
    "newline\nsk-test-AAAAAAAAAAAAAAAA",
    "\\sk-test-AAAAAAAAAAAAAAAA",
    "\x1fsk-test-AAAAAAAAAAAAAAAA",
    "u001fabcd nabcd",
    "role assistant content { : , }",
    "é 😀 \u2028 \ud800",
    "two: sk-test-AAAAAAAAAAAAAAAAsk-test-AAAAAAAAAAAAAAAA",
]
_SECRETS = [
    frozenset(),
    frozenset({"sk-test-AAAAAAAAAAAAAAAA"}),
    frozenset({"sk-test-AAAAAAAAAAAAAAAA", "sk-test-AAAA"}),
    frozenset({"nabcd"}),
    frozenset({"u001fabcd"}),
    frozenset({"ssis"}),  # in "assistant": every message encoded and scrubbed
    frozenset({"tent"}),
    frozenset({'t":"'}),
    frozenset({'A"'}),
    frozenset({":", "}"}),
    frozenset({"é 😀"}),
]


@pytest.mark.parametrize("secrets", _SECRETS, ids=repr)
def test_a_plain_answers_message_is_scrubbed_as_its_encoding_was(secrets: frozenset[str]) -> None:
    """``_message_keys`` gives what ``_keys`` (encode, replace, decode) gives, over keys and
    texts that JSON escapes, that meet the message's fixed text, or that span it."""
    scrub = Scrubber(secrets)
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": t} for t in _TEXTS]
    messages += [
        {"role": "user", "content": "sk-test-AAAAAAAAAAAAAAAA"},
        {"role": "assistant", "content": None},
        {"content": "sk-test-AAAAAAAAAAAAAAAA", "role": "assistant"},
        {"role": "assistant", "content": "x", "tool_calls": []},
    ]
    for message in messages:
        text = message["content"] if isinstance(message["content"], str) else ""
        try:
            old = _keys(scrub, message)
        except ValueError:  # a key with a '"' replaced in the encoding (as before)
            with pytest.raises(ValueError):
                _message_keys(scrub, message, text, scrub.keys(text))
            continue
        new = _message_keys(scrub, message, text, scrub.keys(text))
        assert new == old and list(new) == list(old), (message, secrets)
        assert (new is message) == (old is message)
        other = _message_keys(scrub, message, "not the content", "not the content")
        assert other == old


def test_a_known_key_in_a_plain_answer_is_replaced() -> None:
    scrub = Scrubber(frozenset({"sk-test-AAAAAAAAAAAAAAAA"}))
    message = {"role": "assistant", "content": "a sk-test-AAAAAAAAAAAAAAAA b"}
    scrubbed = scrub.keys(message["content"])
    assert _message_keys(scrub, message, message["content"], scrubbed) == {
        "role": "assistant",
        "content": f"a {REDACTED} b",
    }


async def _ends_after(seconds: float, wait: float, log: list[str], name: str) -> None:
    deadline = start_deadline(seconds)
    try:
        await asyncio.sleep(wait)
    except BaseException as exc:
        try:
            deadline.end(exc)
        except TimeoutError:
            log.append(f"{name} timed out")
            raise
        log.append(f"{name} {type(exc).__name__}")
        raise
    deadline.end(None)
    log.append(f"{name} done")


async def test_deadlines_end_the_calls_that_outlive_them_and_only_those() -> None:
    log: list[str] = []
    tasks = [
        asyncio.create_task(_ends_after(0.05, 0.2, log, "slow1")),
        asyncio.create_task(_ends_after(0.05, 0.01, log, "fast")),
        asyncio.create_task(_ends_after(0.05, 0.2, log, "slow2")),
        asyncio.create_task(_ends_after(1.0, 0.1, log, "other length")),
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "TimeoutError",
        "NoneType",
        "TimeoutError",
        "NoneType",
    ]
    assert sorted(log) == ["fast done", "other length done", "slow1 timed out", "slow2 timed out"]
    assert all(t.cancelling() == 0 for t in tasks)  # the expiry's cancel taken back


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    log: list[str] = []
    task = asyncio.create_task(_ends_after(5.0, 5.0, log, "call"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["call CancelledError"]


async def test_a_deadline_in_an_outer_timeout() -> None:
    """An outer ``asyncio.timeout`` that ends first is the outer one's, not ours."""
    log: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await _ends_after(5.0, 5.0, log, "call")
    assert log == ["call CancelledError"]


async def test_a_later_call_after_the_first_ended_still_times_out() -> None:
    """The timer armed for an ended call's deadline is moved to the next one."""
    log: list[str] = []
    await _ends_after(0.05, 0.0, log, "first")
    await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await _ends_after(0.05, 0.5, log, "second")
    assert log == ["first done", "second timed out"]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"message": {}},
        {"message": {}, "text": "", "tool_calls": (ToolCall.from_arguments("c1", "f", "{}"),)},
        {"cost": None, "pricing": None, "refusal": "no", "reasoning": "r", "estimated": True},
        {"finish_reason": FinishReason.LENGTH, "latency_ms": float("nan")},
    ],
)
def test_new_completion_is_the_constructors_completion(kw: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "text": "hi",
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "usage": Usage(input_tokens=3, output_tokens=2),
        "cost": Decimal("0.000001"),
        "latency_ms": 12.5,
        "raw": {"id": "x"},
        "estimated": False,
        "tool_calls": (),
        "refusal": None,
        "finish_reason": FinishReason.STOP,
        "reasoning": None,
        "message": {"role": "assistant", "content": "hi"},
        "pricing": CallPricing("openai/gpt-4o-mini", "genai-prices", "openai/gpt-4o-mini", None),
        **kw,
    }
    made = new_completion(**values)
    expected = Completion(**values)
    assert list(vars(made)) == list(vars(expected)) == [f.name for f in fields(Completion)]
    for name in vars(expected):
        a, b = getattr(made, name), getattr(expected, name)
        assert a == b or (a != a and b != b), name  # NaN
    assert made.to_json() == expected.to_json()
