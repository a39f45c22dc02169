"""Setup mistakes in a step's calls (bad model name, role, option, schema; prompt= and
messages= both) fail the step at its first attempt with the library's message: the same
request would fail the same way at every retry, after a backoff for nothing.

Against the fake provider server on 127.0.0.1 (tests/fakes), never the network.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import gc
import inspect
import itertools
import json
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import baton_nb as bn
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o-mini"


def _image(url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no provider prefix": ({"model": "gpt-4o-mini"}, "'provider/model'"),
    "bad role": (
        {"prompt": None, "messages": [{"role": "bot", "content": "x"}]},
        "role must be one of",
    ),
    "bad reasoning": ({"reasoning": "extreme"}, "reasoning effort must be one of"),
    "broken schema": (
        {"response_format": {"type": "object", "properties": "a"}},
        "the JSON Schema is invalid at 'properties': 'a' is not of type 'object'",
    ),
    "misspelt type": (
        {"response_format": {"type": "object", "properties": {"a": {"type": "strin"}}}},
        "invalid at 'properties/a/type' (a type is one of: string, number,",
    ),
    "broken schema in json_schema": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "required": "a"}},
            }
        },
        "response_format json_schema.schema: the JSON Schema is invalid at 'required'",
    ),
    "misspelt option": (
        {"temprature": 0},
        "ctx.complete() got temprature=, which is not one of its options; did you mean "
        "temperature=? (To send 'temprature' to the provider as it is, pass "
        "extra={'temprature': ...}.)",
    ),
    "misspelt option among provider fields": ({"top_p": 0.5, "max_token": 5}, "max_tokens=?"),
    "extra not a dict": ({"extra": [("top_p", 1)]}, "takes a dict of provider fields"),
    "prompt and messages": (
        {"messages": [{"role": "user", "content": "x"}]},
        "ctx.complete() takes prompt= or messages=, not both",
    ),
    "strings as messages": (
        {"prompt": None, "messages": ["hi"]},
        "messages[0] must be a dict with 'role' and 'content', got 'hi'; a string is not a "
        "message: for one user message pass prompt='...' instead of messages=",
    ),
    "misspelt prompt": (
        {"prompt": None, "promt": "hi"},
        "ctx.complete() got promt=, which is not one of its options; did you mean prompt=?",
    ),
    "no prompt, a provider field": (
        {"prompt": None, "text": "hi"},
        "ctx.complete() needs messages=[...] or prompt='...' (it got text=, which it does "
        "not take as the prompt",
    ),
    "a file path as an image URL": (
        {"prompt": None, "messages": [_image("/tmp/pic.png")]},
        "image_url.url '/tmp/pic.png' is not a URL: it has no scheme (https:, data:...), and "
        "a file path is not a URL. Pass the image's bytes instead ({'url': "
        "pathlib.Path(path).read_bytes()}: PNG, JPEG, GIF or WebP, sent as a data URL), a "
        "'data:<media type>;base64,...' URL, or a URL the provider can fetch (https://...)",
    ),
    "a relative file path as an image URL": (
        {"prompt": None, "messages": [_image(" charts/pic.png")]},
        "image_url.url ' charts/pic.png' is not a URL: it has no scheme",
    ),
    "a Windows file path as an image URL": (  # C: is a drive, not a URL scheme
        {"prompt": None, "messages": [_image("C:\\pics\\pic.png")]},
        "image_url.url 'C:\\\\pics\\\\pic.png' is not a URL: C: is a Windows drive, not a URL "
        "scheme, and a file path is not a URL",
    ),
    "one message, not in a list": (
        {"prompt": None, "messages": {"role": "user", "content": "hi"}},
        "messages must be a list of {'role': ..., 'content': ...} dicts, got dict ({'role': "
        "'user', 'content': 'hi'}); a single message goes in a list: messages=[{...}]",
    ),
    "a message dict() cannot convert": (
        {"prompt": None, "messages": [42]},
        "messages[0] must be a dict with 'role' and 'content', got 42 (dict() cannot make a "
        "dict of it: TypeError: 'int' object is not iterable)",
    ),
    "pairs without a role": (
        {"prompt": None, "messages": [[("content", "hi")]]},
        "messages[0] must be a dict with 'role' and 'content', got {'content': 'hi'}",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_setup_mistake_fails_the_step_at_once(
    fake_providers: FakeProviderServer, sqlite_url: str, case: str
) -> None:
    options, expected = CASES[case]
    wf = bn.Workflow("setup", db=sqlite_url)

    @wf.step(max_attempts=3)  # the default backoff: a retry would wait ~1 s
    async def ask(ctx: bn.Context) -> str:
        call = {"model": MODEL, "prompt": "hi", "max_tokens": 5, **options}
        return (await ctx.complete(**call)).text

    run = await wf.run(display=False)
    step = run.steps["ask"]
    assert run.status == "failed" and step.state == "discarded"
    assert step.attempt == 1 and fake_providers.request_count == 0
    assert (step.error or "").startswith("ConfigurationError: ") and expected in (step.error or "")
    loaded = await bn.Run.load(run.id, db=sqlite_url)  # the message kept, one attempt
    assert loaded.steps["ask"].error == step.error and loaded.steps["ask"].attempt == 1
    assert [a.error for a in loaded.steps["ask"].attempts] == [step.error]


async def test_missing_max_tokens_under_a_budget_is_not_retried(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    wf = bn.Workflow(f"setup-budget-{unique}", db=db_url)

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi")).text

    run = await wf.run(budget="1", display=False)
    assert run.status == "failed" and run.steps["ask"].attempt == 1
    assert "under a budget a call needs max_tokens=" in (run.steps["ask"].error or "")
    assert fake_providers.request_count == 0


def _weather(city: str) -> str:
    """The weather in ``city``."""
    return "18 C"


async def test_missing_max_tokens_names_the_call_the_step_made(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """ctx.synthesize / ctx.run_tools without max_tokens: the error names that call."""
    wf = bn.Workflow("setup-budget-names", db=sqlite_url)

    @wf.step(max_attempts=1)
    async def synth(ctx: bn.Context) -> str:
        return (await ctx.synthesize(["a", "b"], model=MODEL)).text

    @wf.step(max_attempts=1)
    async def tools(ctx: bn.Context) -> str:
        return (await ctx.run_tools(model=MODEL, prompt="weather?", tools=[_weather])).text

    @wf.step(max_attempts=1)
    async def plain(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi")).text

    run = await wf.run(budget="1", display=False)
    for step, call in (("synth", "synthesize"), ("tools", "run_tools"), ("plain", "complete")):
        error = run.steps[step].error or ""
        assert f"ctx.{call}(..., model='{MODEL}', max_tokens=...)" in error, error
    assert fake_providers.request_count == 0


async def test_a_setup_mistake_among_calls_made_together_is_not_retried(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """Calls made in a task group: the group's one ConfigurationError is what is kept."""
    wf = bn.Workflow("setup-group", db=sqlite_url)

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> list[str]:
        out: list[str] = []

        async def one(model: str) -> None:
            out.append((await ctx.complete(model=model, prompt="hi", max_tokens=5)).text)

        async with anyio.create_task_group() as group:
            group.start_soon(one, "gpt-4o-mini")
        return out

    run = await wf.run(display=False)
    assert run.steps["ask"].attempt == 1 and run.steps["ask"].state == "discarded"
    assert "'provider/model'" in (run.steps["ask"].error or "")


async def test_other_errors_are_still_retried(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    wf = bn.Workflow("setup-other", db=sqlite_url)

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> str:
        if ctx.attempt == 1:
            raise ValueError("not a setup mistake")
        return (await ctx.complete(model=MODEL, prompt="hi", max_tokens=5)).text

    run = await wf.run(display=False)
    assert run.status == "completed" and run.steps["ask"].attempt == 2


async def test_run_tools_takes_prompt_or_messages_not_both(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    wf = bn.Workflow("setup-tools", db=sqlite_url)

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> str:
        messages = [{"role": "user", "content": "x"}]
        run = await ctx.run_tools(messages, prompt="hi", tools=[add], model=MODEL, max_tokens=5)
        return run.text

    run = await wf.run(display=False)
    assert run.steps["ask"].attempt == 1 and fake_providers.request_count == 0
    assert "ctx.run_tools() takes prompt= or messages=, not both" in (run.steps["ask"].error or "")


async def test_provider_fields_are_sent_as_they_are(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """Keyword arguments that are not near misses, and ``extra={...}`` (also for a name
    that is one), go into the provider's body unchanged."""
    wf = bn.Workflow("setup-extra", db=sqlite_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(
            model=MODEL, prompt="hi", max_tokens=5, top_p=0.5, extra={"temprature": 0}
        )
        return answer.text

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["ask"].error
    body = fake_providers.requests[0].json
    assert body["top_p"] == 0.5 and body["temprature"] == 0 and "extra" not in body


async def test_a_prompt_given_positionally_says_to_write_prompt(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """``ctx.complete("Say hi")``: the first positional argument is messages=; the step
    fails at once saying to write prompt='...' (not dict()'s words, three times)."""
    wf = bn.Workflow("setup-positional", db=sqlite_url)

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete("Say hi", model=MODEL, max_tokens=5)).text  # type: ignore[arg-type]

    @wf.step(max_attempts=3)
    async def tools(ctx: bn.Context) -> str:
        return (await ctx.run_tools("Say hi", tools=[_weather], model=MODEL)).text  # type: ignore[arg-type]

    run = await wf.run(display=False)
    for name in ("ask", "tools"):
        step = run.steps[name]
        assert step.state == "discarded" and step.attempt == 1, step.error
        assert step.error == (
            "ConfigurationError: messages must be a list of {'role': ..., 'content': ...} "
            "dicts, got str ('Say hi'); the first positional argument is messages=: for one "
            "user message pass the text as prompt='...', a keyword argument"
        )
    assert fake_providers.request_count == 0


async def test_image_urls_with_a_scheme_are_sent_as_given(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """Only a value without a URL scheme (a file path) is refused: https in any case, a
    file:// URL (read by a local OpenAI-compatible server: vLLM, llama.cpp) and gs:// (a
    Gemini file URI) are sent as given; a data: URL is one in any case and around spaces
    (sent inline to Anthropic and Gemini, as given to OpenAI)."""
    wf = bn.Workflow("setup-image-url", db=sqlite_url)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8)).decode()
    calls = [
        ("openai/gpt-4o-mini", "HTTPS://example.com/pic.png"),
        ("local/qwen2-vl", "file:///srv/media/pic.png"),
        ("openai/gpt-4o-mini", f" DATA:image/png;base64,{png}"),
        ("gemini/gemini-2.5-flash", "gs://bucket/pic.png"),
        ("gemini/gemini-2.5-flash", f"DATA:image/png;BASE64,{png}"),
        ("anthropic/claude-haiku-4-5", f" data:image/png;base64,{png} "),
    ]

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> list[str]:
        return [
            (await ctx.complete(model=model, messages=[_image(url)], max_tokens=5, **price)).text
            for model, url in calls
            for price in [{"price_as": MODEL} if model.startswith("local/") else {}]
        ]

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["ask"].error
    sent = [r.json for r in fake_providers.requests]
    for body, (_, url) in zip(sent[:3], calls, strict=False):
        (part,) = body["messages"][0]["content"]
        assert part == {"type": "image_url", "image_url": {"url": url}}
    gemini_uri, gemini_data = (body["contents"][0]["parts"][0] for body in sent[3:5])
    assert gemini_uri == {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/pic.png"}}
    assert gemini_data == {"inlineData": {"mimeType": "image/png", "data": png}}
    (block,) = sent[5]["messages"][0]["content"]
    assert block["source"] == {"type": "base64", "media_type": "image/png", "data": png}


class _Function(BaseModel):
    name: str
    arguments: str


class _ToolCall(BaseModel):
    id: str
    type: str = "function"
    function: _Function


class _SdkMessage(BaseModel):
    """The shape of the OpenAI SDK's ``ChatCompletionMessage`` (a pydantic model)."""

    role: str
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


async def test_messages_in_any_iterable_and_shape_dict_takes_are_sent(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """messages= as a generator, map(...), dict.values() or itertools.chain(...), and a
    message as a pydantic model (the OpenAI SDK's answer put back in the history: its None
    fields left out) or as pairs: sent as the same messages, by ctx.complete and
    ctx.run_tools (as before they were checked)."""
    wf = bn.Workflow("setup-iterables", db=sqlite_url)
    user = {"role": "user", "content": "weather in Paris?"}
    answer = _SdkMessage(
        role="assistant",
        tool_calls=[_ToolCall(id="c1", function=_Function(name="_weather", arguments="{}"))],
    )
    result = {"role": "tool", "tool_call_id": "c1", "content": "18 C"}
    history = [user, answer, result]

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> list[str]:
        given: list[Any] = [
            (m for m in history),
            map(copy.copy, history),
            dict(enumerate(history)).values(),
            itertools.chain([user], [answer, result]),
            [user, answer, [("role", "tool"), ("tool_call_id", "c1"), ("content", "18 C")]],
        ]
        texts = []
        for messages in given:
            texts.append((await ctx.complete(messages, model=MODEL, max_tokens=5)).text)
        tools = await ctx.run_tools(
            iter(history), tools=[_weather], model=MODEL, max_tokens=5, max_rounds=1
        )
        return [*texts, tools.text]

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["ask"].error
    expected = [
        user,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "_weather", "arguments": "{}"},
                }
            ],
        },
        result,
    ]
    bodies = [r.json for r in fake_providers.requests]
    assert len(bodies) == 6
    for body in bodies:
        assert body["messages"] == expected


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            {"promt": "hi"},
            "ctx.run_tools() got promt=, which is not one of its options; did you mean "
            "prompt=? (To send 'promt' to the provider as it is, pass extra={'promt': ...}.)",
        ),
        ({"prompt": "hi", "max_round": 2}, "ctx.run_tools() got max_round=, which is not one"),
        (
            {"text": "hi"},
            "ctx.run_tools() needs messages=[...] or prompt='...' (it got text=, which it does "
            "not take as the prompt",
        ),
    ],
)
async def test_run_tools_names_a_near_miss_first(
    fake_providers: FakeProviderServer, sqlite_url: str, call: dict[str, Any], expected: str
) -> None:
    """As ctx.complete: a misspelt prompt= is named as one, not taken for a missing prompt
    (nor, given a prompt, sent to the provider as a field)."""
    wf = bn.Workflow("setup-tools-near-miss", db=sqlite_url)

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.run_tools(tools=[_weather], model=MODEL, max_tokens=5, **call)).text

    run = await wf.run(display=False)
    step = run.steps["ask"]
    assert step.state == "discarded" and step.attempt == 1, step.error
    assert (step.error or "").startswith("ConfigurationError: step 'ask': ")
    assert expected in (step.error or "")
    assert fake_providers.request_count == 0


async def test_synthesize_names_itself_in_a_near_miss(sqlite_url: str) -> None:
    wf = bn.Workflow("setup-synth-near-miss", db=sqlite_url)

    @wf.step(max_attempts=3)
    async def merged(ctx: bn.Context) -> str:
        return (await ctx.synthesize(["a", "b"], model="mock/gpt-4o-mini", temprature=0)).text

    run = await wf.run(display=False)
    assert run.steps["merged"].attempt == 1
    expected = "ctx.synthesize() got temprature=, which is not one of its options; did you mean"
    assert f"{expected} temperature=?" in (run.steps["merged"].error or "")


@pytest.mark.parametrize("empty", [[], {}])
async def test_synthesize_of_no_answers_fails_at_once(sqlite_url: str, empty: Any) -> None:
    """An empty answer set (a map over an empty list) is refused as None is: a
    ConfigurationError at the first attempt, naming the dep that gave nothing."""
    wf = bn.Workflow("setup-synth-empty", db=sqlite_url)

    @wf.step()
    async def topics(ctx: bn.Context) -> Any:
        return empty if isinstance(empty, list) else []

    @wf.step(map_over="topics")
    async def answer(ctx: bn.Context) -> str:
        return str(ctx.item)

    @wf.step(deps=["answer"], max_attempts=3)
    async def merged(ctx: bn.Context) -> str:
        answers = ctx.results["answer"] if isinstance(empty, list) else empty
        return (await ctx.synthesize(answers, model="mock/gpt-4o-mini")).text

    run = await wf.run(display=False)
    step = run.steps["merged"]
    assert step.state == "discarded" and step.attempt == 1, step.error
    kind = type(empty).__name__
    assert step.error == (
        f"ConfigurationError: step 'merged': ctx.synthesize() got an empty {kind}: no answers "
        "to synthesise ('answer' gave an empty result: a map step over an empty list runs no "
        "child). Check the map's input (the step it maps over returned an empty list?), or "
        "check for no answers before synthesising (return a fallback, or raise "
        "bn.Discard(...))"
    )


_ASYNC_HINT = (
    "a coroutine was used without await (ctx.complete(...), ctx.synthesize(...), "
    "ctx.run_tools(...) and any async function return one): await it inside the async "
    "def step, as in (await ctx.complete(...)).text"
)


async def test_a_call_not_awaited_says_to_await_it(sqlite_url: str) -> None:
    """``ctx.complete(...).text`` without await: the step fails at once, its error saying
    what to write (for an async step, for a plain def one run in a thread, for a step that
    returns the coroutine), and no "never awaited" warning follows (warnings are errors)."""
    wf = bn.Workflow("setup-unawaited", db=sqlite_url, debug=True)
    model = "mock/gpt-4o-mini"

    @wf.step()
    async def attribute(ctx: bn.Context) -> Any:
        return ctx.complete(model=model, prompt="hi").text  # type: ignore[attr-defined]

    @wf.step()
    def plain(ctx: bn.Context) -> Any:
        return ctx.complete(model=model, prompt="hi").text  # type: ignore[attr-defined]

    @wf.step()
    async def returned(ctx: bn.Context) -> Any:
        return ctx.complete(model=model, prompt="hi")

    run = await wf.run(display=False)
    gc.collect()  # a coroutine left unclosed would warn here
    async_hint = _ASYNC_HINT
    for name in ("attribute", "plain", "returned"):
        step = run.steps[name]
        assert step.state == "discarded" and step.attempt == 1, step.error
    assert run.steps["attribute"].error == (
        f"AttributeError: 'coroutine' object has no attribute 'text'; {async_hint}"
    )
    assert run.steps["plain"].error == (
        "AttributeError: 'coroutine' object has no attribute 'text'; step 'plain' is a plain "
        "def step, which cannot await: ctx.complete(...) (and ctx.synthesize, ctx.run_tools) "
        "return coroutines. Make the step async def and write (await ctx.complete(...)).text"
    )
    error = run.steps["returned"].error or ""
    assert error.startswith("ResultNotSerializable: ") and error.endswith(f"; {async_hint}")
    # the traceback kept under debug=True carries the hint as a note
    (trace,) = [e["data"]["traceback"] for e in run.context("attribute") if e["kind"] == "error"]
    assert trace.rstrip().endswith(async_hint)
    assert run.cost == 0  # nothing was called


async def test_a_call_not_awaited_given_to_a_function_says_to_await_it(sqlite_url: str) -> None:
    """``len(ctx.complete(...))``, ``json.loads(ctx.complete(...))``: Python's TypeError
    names the type coroutine otherwise; the step fails at once with the hint too. (That
    coroutine is not held by the error: Python warns it was never awaited at once.)"""
    wf = bn.Workflow("setup-unawaited-calls", db=sqlite_url)
    model = "mock/gpt-4o-mini"

    @wf.step(max_attempts=3)
    async def length(ctx: bn.Context) -> Any:
        return len(ctx.complete(model=model, prompt="hi"))  # type: ignore[arg-type]

    @wf.step(max_attempts=3)
    async def loaded(ctx: bn.Context) -> Any:
        return json.loads(ctx.complete(model=model, prompt="hi"))  # type: ignore[arg-type]

    @wf.step(max_attempts=3)
    async def joined(ctx: bn.Context) -> Any:
        return "answer: " + ctx.complete(model=model, prompt="hi")  # type: ignore[operator]

    with pytest.warns(RuntimeWarning, match="was never awaited"):
        run = await wf.run(display=False)
    errors = {
        "length": "TypeError: object of type 'coroutine' has no len()",
        "loaded": "TypeError: the JSON object must be str, bytes or bytearray, not coroutine",
        "joined": 'TypeError: can only concatenate str (not "coroutine") to str',
    }
    for name, error in errors.items():
        step = run.steps[name]
        assert step.state == "discarded" and step.attempt == 1, step.error
        assert step.error == f"{error}; {_ASYNC_HINT}"


def _logged(fn: Any) -> Any:
    """A sync decorator: its wrapper returns what ``fn`` returns (a coroutine, for an
    async def), so the step it makes is a plain def one."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


async def test_coroutines_returned_say_what_to_write(sqlite_url: str) -> None:
    """Coroutines returned in a list or a dict (``[ctx.complete(...) for ...]``), and a
    coroutine returned by a plain def step: from ctx.complete (make the step async def), or
    its own async def under a sync decorator (make the wrapper async). All closed: no
    "never awaited" warning follows (warnings are errors)."""
    wf = bn.Workflow("setup-unawaited-returned", db=sqlite_url)
    model = "mock/gpt-4o-mini"

    @wf.step()
    async def listed(ctx: bn.Context) -> Any:
        return [ctx.complete(model=model, prompt=p) for p in ("a", "b")]

    @wf.step()
    async def keyed(ctx: bn.Context) -> Any:
        return {"a": ctx.complete(model=model, prompt="a"), "n": 1}

    @wf.step()
    def plain(ctx: bn.Context) -> Any:
        return ctx.complete(model=model, prompt="hi")

    @wf.step()
    @_logged
    async def wrapped(ctx: bn.Context) -> str:
        return "never run"

    run = await wf.run(display=False)
    gc.collect()  # a coroutine left unclosed would warn here
    errors = {name: run.steps[name].error or "" for name in ("listed", "keyed", "plain", "wrapped")}
    for name, error in errors.items():
        assert run.steps[name].state == "discarded" and run.steps[name].attempt == 1, error
        assert error.startswith("ResultNotSerializable: "), error
    assert errors["listed"].endswith(
        f"; {_ASYNC_HINT} (the list the step returned holds 2 coroutine(s): await each, or "
        "all at once: await asyncio.gather(*calls))"
    )
    assert errors["keyed"].endswith(
        f"; {_ASYNC_HINT} (the dict the step returned holds 1 coroutine(s): await each, or "
        "all at once: await asyncio.gather(*calls))"
    )
    assert errors["plain"].endswith(
        "; step 'plain' is a plain def step, which cannot await: ctx.complete(...) (and "
        "ctx.synthesize, ctx.run_tools) return coroutines. Make the step async def and write "
        "(await ctx.complete(...)).text"
    )
    mark = ""
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        mark = ", or mark the wrapper with inspect.markcoroutinefunction(wrapper)"
    assert errors["wrapped"].endswith(
        "; step 'wrapped' returned a coroutine (test_coroutines_returned_say_what_to_write."
        "<locals>.wrapped) without awaiting it: its function is not async def, so it is run "
        "as a plain def step; probably a sync decorator wrapping an async def (a def wrapper "
        f"that returns fn(...)). Make the wrapper async def and write return await fn(...){mark}"
    )
    assert "make the step async def" not in errors["wrapped"].lower()


async def test_other_attribute_errors_are_still_retried(sqlite_url: str) -> None:
    """An AttributeError or TypeError not about a coroutine used as a value is retried:
    one that says a coroutine was expected (the opposite mistake) too."""
    wf = bn.Workflow("setup-attribute", db=sqlite_url)

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> Any:
        if ctx.attempt == 1:
            return None.text  # type: ignore[attr-defined]
        return "ok"

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def expected(ctx: bn.Context) -> Any:
        if ctx.attempt == 1:  # "An asyncio.Future, a coroutine or an awaitable is required"
            await asyncio.ensure_future(1)  # type: ignore[arg-type]
        return "ok"

    run = await wf.run(display=False)
    assert run.status == "completed"
    for name in ("ask", "expected"):
        first = run.steps[name].attempts[0]
        assert run.steps[name].attempt == 2 and first.error, first
        assert "a coroutine was used" not in first.error
