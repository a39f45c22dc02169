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

from baton_nb._errors import ProviderError
from baton_nb._usage import USAGE_FIELDS, Usage
from baton_nb.llm import Completion
from baton_nb.llm._complete import _keys, _message_keys
from baton_nb.llm._config import resolve_endpoint
from baton_nb.llm._deadline import _queues, start_deadline
from baton_nb.llm._jsonenc import one_shot
from baton_nb.llm._redact import REDACTED, Scrubber
from baton_nb.llm._transport import _json_body_text
from baton_nb.llm._types import _HASH_JSON, COMPACT_JSON, FinishReason, ToolCall, new_completion
from baton_nb.llm._wire import as_int
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


class _Count(int):
    pass


_COUNTS: list[Any] = [0, 1, 7, 10**30, -1, True, False, _Count(3), _Count(-2), 1.0, "3", None]


def _as_int_before(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def test_as_int_is_what_it_was() -> None:
    for value in [*_COUNTS, -0.5, 2.7, "x", [], {}, float("nan"), "-4"]:
        try:
            expected: Any = _as_int_before(value)
        except OverflowError:
            expected = OverflowError
        got = as_int(value)
        assert got == expected and type(got) is type(expected), value


def _usage_checked_before(values: tuple[Any, ...]) -> str | None:
    """The error the field-by-field check raised, if any."""
    for name, value in zip(USAGE_FIELDS, values, strict=True):
        not_int = type(value) is not int and (not isinstance(value, int) or isinstance(value, bool))
        if not_int or value < 0:
            return f"Usage.{name} must be a non-negative int, got {value!r}"
    if values[5] > values[2]:
        return "cannot exceed"
    return None


def test_usage_accepts_and_refuses_what_it_did() -> None:
    import itertools

    odd = [0, 5, -1, True, _Count(2), 1.5, None]
    for i, j in itertools.product(range(len(USAGE_FIELDS)), range(len(odd))):
        for write, one_hour in ((3, 0), (3, 3), (2, 3)):
            values: list[Any] = [1, 0, write, 1, 0, one_hour, 0]
            values[i] = odd[j]
            expected = _usage_checked_before(tuple(values))
            if expected is None:
                Usage(*values)
            else:
                with pytest.raises(ValueError, match=expected.split(",")[0].replace(".", r"\.")):
                    Usage(*values)


def test_the_answers_body_is_decoded_as_json_loads_does() -> None:
    endpoint = resolve_endpoint("mock")
    bodies = [b'{"a": "\xc3\xa9 \\ud800"}', b'{"x":1}', b"{}", b'{"s": "\xed\xa0\x80"}']
    bodies += [text.encode(codec) for text in ('{"k": "v"}',) for codec in ("utf-16-le", "utf-16")]
    bodies += ['{"k": 1}'.encode("utf-8-sig"), '{"k": 1}'.encode("utf-32-le")]
    for body in bodies:
        assert _json_body_text(endpoint, body)[0] == json.loads(body)
    for bad in (b"{", b'{"a": \xff}', b"{\x00", b"[1]", b"", b"null"):
        with pytest.raises(ProviderError):
            _json_body_text(endpoint, bad)


async def test_no_queue_is_kept_for_timeouts_no_call_uses_any_more() -> None:
    """Timeouts computed per call (each a length of its own) leave nothing behind."""
    log: list[str] = []
    for i in range(50):
        await _ends_after(0.01 + i / 10_000, 0.0, log, f"call {i}")
    assert len(_queues[asyncio.get_running_loop()]) == 50
    await asyncio.sleep(0.05)
    assert not _queues[asyncio.get_running_loop()]
    with pytest.raises(TimeoutError):  # and a length used again gets a queue again
        await _ends_after(0.01, 0.5, log, "again")


async def test_an_ended_calls_task_is_not_kept_while_a_slower_one_runs() -> None:
    """A deadline leaves its queue only from the front: one slow call of the same length
    kept every later call's task (and its result) until it ended (the review's finding)."""
    import gc
    import weakref

    log: list[str] = []
    slow = asyncio.create_task(_ends_after(30.0, 30.0, log, "slow"))
    await asyncio.sleep(0)
    fast = asyncio.create_task(_ends_after(30.0, 0.0, log, "fast"))
    await fast
    await asyncio.sleep(0)  # (the loop's handle that woke this task holds ``fast`` till then)
    ended = weakref.ref(fast)
    del fast
    gc.collect()
    assert ended() is None
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_a_timer_fired_early_expires_the_deadline_it_was_armed_for() -> None:
    """A loop whose clock steps by a millisecond (uvloop) fires a timer up to a step early:
    the deadline it was armed for expires then, instead of the timer re-arming for a time
    not yet reached, again and again (the review's finding)."""
    from baton_nb.llm._deadline import Deadline

    made: list[Deadline] = []

    async def call() -> None:
        deadline = start_deadline(30.0)
        made.append(deadline)
        try:
            await asyncio.sleep(60)
        except BaseException as exc:
            deadline.end(exc)
            raise

    task = asyncio.create_task(call())
    await asyncio.sleep(0)
    deadline = made[0]
    queue = deadline.queue
    assert queue.handle is not None
    queue.handle.cancel()
    queue._expire(deadline.when)  # fired early: the loop's clock is before deadline.when
    assert queue.handle is None
    with pytest.raises(TimeoutError):
        await task
