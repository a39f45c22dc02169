"""What the runtime does per LLM call, done with less work (issue 16, branch 16s), with the
same results: ``ctx.complete(prompt=...)``'s request made by ``plain_request``."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from baton_nb._errors import ConfigurationError
from baton_nb.llm import LLMRequest
from baton_nb.runtime._context import Context

pytestmark = pytest.mark.anyio

_PLAIN_CASES: list[dict[str, Any]] = [
    {"model": "openai/gpt-4o-mini", "prompt": "hi"},
    {"model": "openai/gpt-4o-mini", "prompt": "hi", "temperature": 0, "max_tokens": 64},
    {"model": " OpenAI / gpt-4o ", "prompt": "", "temperature": 1.5, "stream": True},
    {"model": "mock/x", "prompt": "é\n\u2028", "timeout": 3, "price_as": "openai/gpt-4o"},
    {"model": "mock/x", "prompt": "p", "cache": False, "cache_salt": "s"},
    {"model": "mock/x", "prompt": "p", "cache": True},
    {"model": "mock/x", "prompt": [{"type": "text", "text": "parts"}]},
    # errors: the same, raised in the same order
    {"model": "no-slash", "prompt": "p"},
    {"model": "mock/x", "prompt": "p", "max_tokens": 0},
    {"model": "mock/x", "prompt": "p", "max_tokens": 1.5},
    {"model": "mock/x", "prompt": "p", "timeout": 0},
    {"model": "mock/x", "prompt": "p", "temperature": "warm"},
    {"model": "mock/x", "prompt": "p", "cache": "yes"},
    {"model": "mock/x", "prompt": "p", "cache_salt": 3},
    {"model": "no-slash", "prompt": "p", "cache": "yes", "max_tokens": 0},
    {"model": "mock/x", "prompt": 3},
    {"model": "mock/x", "prompt": [{"type": "nonsense"}]},
]


def _constructor(kwargs: dict[str, Any]) -> LLMRequest:
    """The request as ``ctx.complete`` made it before (the constructor's path)."""
    from baton_nb.runtime._context import _check_cache, _check_salt

    options = dict(kwargs)
    prompt = options.pop("prompt")
    cache = _check_cache("s", options.pop("cache", None))
    salt = _check_salt("s", options.pop("cache_salt", None))
    return LLMRequest(
        messages=tuple(dict(m) for m in [{"role": "user", "content": prompt}]),
        extra={},
        tools=(),
        cache=cache,
        cache_salt=salt,
        **options,
    )


class _Calls:
    run_id = "r"
    graph = SimpleNamespace(name="g")

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    async def complete(self, node: Any, index: int, request: LLMRequest) -> Any:
        self.requests.append(request)
        return SimpleNamespace(replayed=False)


def _outcome(make: Any) -> tuple[str, Any]:
    try:
        return "ok", make()
    except Exception as exc:  # compared below: the same type and message
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("kwargs", _PLAIN_CASES)
async def test_a_prompt_call_makes_the_request_the_constructor_makes(
    kwargs: dict[str, Any],
) -> None:
    calls = _Calls()
    ctx = Context(calls, SimpleNamespace(name="s", attempt=1, item=None), {}, {}, None)  # type: ignore[arg-type]
    expected = _outcome(lambda: _constructor(kwargs))
    try:
        await ctx.complete(**kwargs)
        got: tuple[str, Any] = ("ok", calls.requests[-1])
    except Exception as exc:
        got = (type(exc).__name__, str(exc))
    assert got[0] == expected[0]
    if got[0] != "ok":
        assert got[1] == expected[1]
        return
    made, want = got[1], expected[1]
    assert made == want
    assert list(vars(made)) == list(vars(want))  # the fields, in their order
    for name, value in vars(want).items():
        assert type(vars(made)[name]) is type(value), name
    with pytest.raises(AttributeError):
        made.model = "x"  # still frozen


async def test_other_calls_take_the_constructor() -> None:
    """Provider fields, tools, messages=: the constructor's path (its own checks)."""
    calls = _Calls()
    ctx = Context(calls, SimpleNamespace(name="s", attempt=1, item=None), {}, {}, None)  # type: ignore[arg-type]
    await ctx.complete(model="mock/x", prompt="p", top_p=0.5)
    assert dict(calls.requests[-1].extra) == {"top_p": 0.5}
    await ctx.complete(model="mock/x", messages=[{"role": "user", "content": "m"}])
    assert calls.requests[-1].messages == ({"role": "user", "content": "m"},)
    with pytest.raises(ConfigurationError, match="extra"):
        await ctx.complete(model="mock/x", prompt="p", extra=[])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="temperature"):
        await ctx.complete(model="mock/x", prompt="p", temprature=0)
    assert [r.model for r in calls.requests] == ["mock/x", "mock/x"]


_HASH_TEXTS = [
    "",
    "plain",
    'quote " and \\ backslash',
    "é ü 中文 \u2028 \U0001f600",
    "\n\t\x00\x1f",
    "\ud800",
]


def _req(content: Any, **kwargs: Any) -> LLMRequest:
    message = {"role": "user", "content": content, **kwargs.pop("message", {})}
    return LLMRequest(model=kwargs.pop("model", "mock/x"), messages=(message,), **kwargs)


def _slow_hash_text(request: LLMRequest) -> str:
    from baton_nb.llm._types import _hash_json

    payload = {
        "model": request.model,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "price_as": request.price_as,
        "extra": dict(request.extra),
        **request.neutral_params(),
    }
    return _hash_json(payload)


@pytest.mark.parametrize("text", _HASH_TEXTS)
def test_a_plain_requests_hash_text_is_the_encoders(text: str) -> None:
    """``request_hash``'s text written for a plain request is the encoder's, byte for byte
    (so every replay key stored so far is found again)."""
    from baton_nb.llm._types import _plain_hash_text

    requests = [
        LLMRequest(model="openai/gpt-4o-mini", messages=({"role": "user", "content": text},)),
        LLMRequest(
            model=f"mock/{text or 'x'}",
            messages=(
                {"role": "system", "content": text},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": text + "a"},
            ),
            temperature=0,
            max_tokens=64,
            price_as=f"openai/{text}",
        ),
        _req(text, temperature=1e16),
        _req(text, temperature=-0.0),
        _req(text, max_tokens=10**30),
    ]
    for request in requests:
        written = _plain_hash_text(request)
        assert written is not None
        assert written == _slow_hash_text(request)


def test_other_requests_are_hashed_by_the_encoder() -> None:
    from baton_nb.llm._types import _plain_hash_text, request_hash

    others = [
        _req("p", extra={"a": 1}),
        _req([{"type": "text", "text": "t"}]),
        _req(None),
        _req("p", message={"name": "n"}),
        _req("p", max_tokens=True),
        _req("p", tool_choice="none"),
        _req("p", reasoning="low"),
    ]
    for request in others:
        assert _plain_hash_text(request) is None
        request_hash(request)  # still hashed (by the encoder)
    nan = _req("p", temperature=math.nan)
    assert _plain_hash_text(nan) is None
    with pytest.raises(ConfigurationError, match="JSON-serialisable"):
        request_hash(nan)
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: as before, on both paths
        request_hash(_req("\ud800"))


@pytest.mark.parametrize("tool_calls", [(), "one"])
def test_new_parsed_is_the_constructors(tool_calls: Any) -> None:
    from decimal import Decimal

    from baton_nb._usage import Usage
    from baton_nb.llm._types import FinishReason, ToolCall
    from baton_nb.llm._wire import Parsed, new_parsed

    calls = (ToolCall("c1", "f", {"a": 1}, '{"a": 1}'),) if tool_calls == "one" else ()
    args = ("é", Usage(input_tokens=3), {"raw": [1]}, Decimal("0.5"), calls, None)
    made = new_parsed(*args, FinishReason.STOP, "why")
    want = Parsed(
        *args[:4], tool_calls=calls, refusal=None, finish_reason=FinishReason.STOP, reasoning="why"
    )
    assert made == want
    assert list(vars(made)) == list(vars(want))
    assert made.message == want.message
    with pytest.raises(AttributeError):
        made.text = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"Content-Type", b"application/json"), (b"content-length", b"2")],
        [(b"CONTENT-ENCODING", b" GZip "), (b"Content-Encoding", b"br")],
        [(b"set-cookie", b""), (b"X-A", b"\xff\xfe")],
        [("Set-\u212aookie".encode(), b"k"), (b"content-encoding", b"identity")],  # not ASCII
        [(b"x-\xe9", b"v"), (b"Set-Cookie", b"a=b")],
    ],
)
def test_an_answers_first_header_is_its_headers_get(raw: list[tuple[bytes, bytes]]) -> None:
    """``Answer.first`` reads the raw headers as ``headers.get`` reads the decoded ones (the
    case-insensitive ``CIMultiDict``), which a successful call no longer makes."""
    from baton_nb.llm._aiohttp import Answer

    for name in ("content-encoding", "set-cookie", "content-type", "x-a", "missing"):
        lazy = Answer(200, "OK", tuple(raw), b"{}")
        got = lazy.first(name)
        assert got == Answer(200, "OK", tuple(raw), b"{}").headers.get(name)
    assert lazy._headers is None or not all(k.isascii() for k, _ in raw)
    assert list(lazy.headers.items()) == [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in raw
    ]


async def test_the_writers_loop_event_behaves_as_an_anyio_event() -> None:
    """``_LoopEvent`` (the writer's events on asyncio): every waiter wakes on ``set``, a
    cancelled waiter is skipped, a wait after ``set`` returns at once (a checkpoint)."""
    import asyncio

    from baton_nb.runtime._commit import _loop_event, _LoopEvent

    event = _loop_event()
    assert isinstance(event, _LoopEvent)
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await event.wait()
        woken.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.sleep(0)
    assert not event.is_set() and woken == []
    event.set()
    event.set()  # again: nothing more
    assert event.is_set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(woken) == [0, 1, 3, 4]
    assert isinstance(results[2], asyncio.CancelledError)
    await event.wait()  # set already: returns
    await asyncio.wait_for(event.wait(), 1)


def test_the_writers_event_outside_a_loop_is_anyios() -> None:
    import anyio

    from baton_nb.runtime._commit import _loop_event

    assert isinstance(_loop_event(), anyio.Event)
