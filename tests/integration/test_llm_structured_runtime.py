"""Tool calls and structured answers inside runs: ctx.run_tools, validation failures counted
and retried, and replay after kill -9 (recorded provider payloads at the fake server)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import baton_nb as bn
from baton_nb.llm import Completion
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
DATA = Path(__file__).resolve().parents[1] / "data" / "providers"
MODEL = "openai/gpt-4o"


def _json(name: str) -> Any:
    return json.loads((DATA / name).read_text())


class Location(BaseModel):
    city: str
    temperature: float
    units: str


# ------------------------------------------------------------------ run_tools


async def test_run_tools_two_tools_at_the_fake_server(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """Round 1 is openai-python's recorded two-tool answer; round 2 answers in text."""
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    seen: list[tuple[str, Any]] = []

    def GetWeatherArgs(city: str, country: str, units: str) -> str:
        """Weather in a city."""
        seen.append(("weather", (city, country, units)))
        return "7 C, windy"

    async def get_stock_price(ctx: bn.Context, ticker: str, exchange: str) -> dict[str, Any]:
        """Last price of a stock."""
        assert ctx.step == "ask"  # a tool may take the step's context; the model never sees it
        seen.append(("stock", (ticker, exchange)))
        return {"ticker": ticker, "price": 224.5}

    wf = bn.Workflow("tools", db=sqlite_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> dict[str, Any]:
        result = await ctx.run_tools(
            prompt="Weather in Edinburgh and the AAPL price?",
            model=MODEL,
            tools=[GetWeatherArgs, get_stock_price],
        )
        return {"text": result.text, "rounds": result.rounds, "n": len(result.messages)}

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["ask"].error
    assert seen == [("weather", ("Edinburgh", "GB", "c")), ("stock", ("AAPL", "NASDAQ"))]
    assert run.results["ask"] == {"text": fake_providers.text, "rounds": 2, "n": 5}
    first, second = (r.json for r in fake_providers.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["GetWeatherArgs", "get_stock_price"]
    assert first["tools"][1]["function"]["parameters"]["required"] == ["ticker", "exchange"]
    history = second["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_fdNz3vOBKYgOIpMdWotB9MjY"
    assert history[2:] == [
        {"role": "tool", "tool_call_id": "call_fdNz3vOBKYgOIpMdWotB9MjY", "content": "7 C, windy"},
        {
            "role": "tool",
            "tool_call_id": "call_h1DWI1POMJLb0KwIyQHWXD4p",
            "content": '{"ticker": "AAPL", "price": 224.5}',
        },
    ]
    assert [c.call_index for c in run.calls] == [0, 1]


async def test_run_tools_round_limit_ends_with_an_answer(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    wf = bn.Workflow("limit", db=sqlite_url)

    def GetWeatherArgs(city: str, country: str, units: str) -> str:
        return "7 C"

    def get_stock_price(ticker: str, exchange: str) -> str:
        return "224.5"

    @wf.step()
    async def ask(ctx: bn.Context) -> int:
        result = await ctx.run_tools(
            prompt="go", model=MODEL, tools=[GetWeatherArgs, get_stock_price], max_rounds=2
        )
        return result.rounds

    run = await wf.run(display=False)
    assert run.results["ask"] == 2
    assert [r.json.get("tool_choice") for r in fake_providers.requests] == [None, "none"]


async def test_run_tools_sends_wrong_arguments_back_to_the_model(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    wf = bn.Workflow("badargs", db=sqlite_url)

    def GetWeatherArgs(city: str, days: int) -> str:
        raise AssertionError("not called with invalid arguments")

    def get_stock_price(ticker: str, exchange: str) -> str:
        return "224.5"

    @wf.step()
    async def ask(ctx: bn.Context) -> list[bool]:
        result = await ctx.run_tools(
            prompt="go", model=MODEL, tools=[GetWeatherArgs, get_stock_price]
        )
        return [r.error for r in result.tool_results]

    run = await wf.run(display=False)
    assert run.results["ask"] == [True, False]
    tool_messages = [m for m in fake_providers.requests[1].json["messages"] if m["role"] == "tool"]
    assert tool_messages[0]["content"].startswith("error: invalid arguments")


async def test_two_tool_loop_over_three_mock_providers(sqlite_url: str) -> None:
    wf = bn.Workflow("mock-tools", db=sqlite_url)

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"{city}: 18 C"

    def get_local_time(city: str) -> str:
        """Local time in a city."""
        return f"{city}: 14:05"

    @wf.step(models=["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.5-flash"])
    async def ask(ctx: bn.Context) -> list[str]:
        result = await ctx.run_tools(
            prompt="Paris: weather and time?", tools=[get_weather, get_local_time]
        )
        assert result.text and not result.completion.tool_calls
        return [r.name for r in result.tool_results]

    run = await wf.run(display=False)
    assert run.status == "completed", {k: s.error for k, s in run.steps.items()}
    assert set(map(tuple, run.results["ask"].values())) == {("get_weather", "get_local_time")}
    assert len(run.calls) == 9  # three rounds per model


# ------------------------------------------------------------------ structured answers


async def test_invalid_structured_answer_is_counted_and_retried(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=100, output=10)
    fake_providers.script(
        Reply(text='{"city": "Paris"}'),
        Reply(text='{"city": "Paris", "temperature": 18, "units": "c"}'),
    )
    wf = bn.Workflow(f"invalid-{unique}", db=db_url)

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> dict[str, Any]:
        c = await ctx.complete(model=MODEL, prompt="Where?", response_format=Location)
        return c.parsed.model_dump()

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert run.results["ask"] == {"city": "Paris", "temperature": 18.0, "units": "c"}
    assert fake_providers.request_count == 2  # the invalid answer was not replayed
    assert [c.replayed for c in run.calls] == [False, False]  # both paid, both counted
    one = bn.price(MODEL, bn.Usage(input_tokens=100, output_tokens=10))
    assert run.cost == 2 * one
    loaded = await bn.Run.load(run.id, db=db_url)
    assert len(loaded.calls) == 2 and loaded.cost == 2 * one


async def test_invalid_structured_answer_error_names_the_model(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.text = "Paris, probably."
    wf = bn.Workflow("invalid-error", db=sqlite_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> Any:
        return (await ctx.complete(model=MODEL, prompt="Where?", response_format=Location)).parsed

    run = await wf.run(display=False)
    error = run.steps["ask"].error or ""
    assert run.status == "failed" and "OutputValidationError" in error
    assert "openai/gpt-4o: the structured answer does not match Location" in error
    assert len(run.calls) == 1 and run.cost is not None and run.cost > 0


async def test_replay_returns_the_same_tool_call_completion(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    wf = bn.Workflow(f"replay-tools-{unique}", db=db_url)
    seen: list[Completion] = []

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> int:
        c = await ctx.complete(model=MODEL, prompt="go", tools=[_weather_tool()])
        seen.append(c)
        if ctx.attempt == 1:
            raise RuntimeError("crash after the paid call")
        return len(c.tool_calls)

    run = await wf.run(display=False)
    assert run.results["ask"] == 2 and fake_providers.request_count == 1
    fresh, replayed = seen
    assert replayed.replayed and not fresh.replayed
    for name in (
        "text",
        "tool_calls",
        "refusal",
        "finish_reason",
        "reasoning",
        "message",
        "usage",
        "cost",
        "raw",
    ):
        assert getattr(replayed, name) == getattr(fresh, name), name


def _weather_tool() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": "GetWeatherArgs",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }


def test_completions_stored_before_tool_calls_existed_still_load() -> None:
    old = (
        '{"text":"Hi","model":"openai/gpt-4o-mini","provider":"openai","usage":{"input_tokens":3,'
        '"output_tokens":1},"cost":"0.000001","latency_ms":12.5,"raw":{"id":"x"},'
        '"estimated":false,"replayed":false}'
    )
    c = Completion.from_json(old)
    assert (c.text, c.tool_calls, c.refusal, c.finish_reason, c.parsed) == (
        "Hi",
        (),
        None,
        None,
        None,
    )
    assert c.message == {"role": "assistant", "content": "Hi"}
    assert Completion.from_json(c.to_json()) == c


# ------------------------------------------------------------------ kill -9 and resume

CRASHING_STEPS = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import anyio
    from pydantic import BaseModel
    import baton_nb as bn

    class Location(BaseModel):
        city: str
        temperature: float
        units: str

    def hang():
        if os.environ.get("HANG") == "1":
            Path(os.environ["MARK"]).write_text("paid")
            import time
            time.sleep(60)

    def GetWeatherArgs(city: str, country: str, units: str) -> str:
        hang()  # killed here: round 1 is paid and stored, round 2 not asked yet
        return "7 C"

    def get_stock_price(ticker: str, exchange: str) -> str:
        return "224.5"

    def build(db, kind):
        wf = bn.Workflow("paid-" + kind, db=db)

        if kind == "tools":
            @wf.step()
            async def ask(ctx):
                result = await ctx.run_tools(
                    prompt="go", model="openai/gpt-4o", tools=[GetWeatherArgs, get_stock_price]
                )
                return {"text": result.text, "rounds": result.rounds}
        else:
            @wf.step()
            async def ask(ctx):
                c = await ctx.complete(
                    model="openai/gpt-4o", prompt="Where?", response_format=Location
                )
                hang()
                return c.parsed.model_dump()

        return wf

    if __name__ == "__main__":
        anyio.run(lambda: build(sys.argv[1], sys.argv[3]).run(run_id=sys.argv[2], display=False))
    """
)


def _load(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"crash_{script.stem}", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _kill_after_mark(
    fake: FakeProviderServer, db_url: str, tmp_path: Path, run_id: str, kind: str
) -> Path:
    script = tmp_path / f"crash_{kind}.py"
    script.write_text(CRASHING_STEPS)
    mark = tmp_path / "mark"
    env = {
        **os.environ,
        "HANG": "1",
        "MARK": str(mark),
        "OPENAI_BASE_URL": f"{fake.base_url}/v1",
        "OPENAI_API_KEY": DUMMY_KEYS["openai"],
    }
    proc = subprocess.Popen([sys.executable, str(script), db_url, run_id, kind], env=env)
    try:
        with anyio.fail_after(30):
            while not mark.exists():
                assert proc.poll() is None, "the workflow process died early"
                await anyio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    return script


async def test_kill_during_a_tool_loop_then_resume_replays_the_paid_round(
    fake_providers: FakeProviderServer, db_url: str, tmp_path: Path, unique: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    run_id = f"tools-{unique}"
    script = await _kill_after_mark(fake_providers, db_url, tmp_path, run_id, "tools")
    assert fake_providers.request_count == 1

    run = await _load(script).build(db_url, "tools").run(run_id=run_id, display=False)
    assert run.status == "completed", run.steps["ask"].error
    assert run.results["ask"] == {"text": fake_providers.text, "rounds": 2}
    assert fake_providers.request_count == 2  # round 1 from the store, round 2 asked now
    assert [(c.call_index, c.replayed) for c in run.calls] == [(0, False), (0, True), (1, False)]
    second = fake_providers.requests[1].json["messages"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "GetWeatherArgs"


async def test_kill_after_a_structured_answer_then_resume_replays_it(
    fake_providers: FakeProviderServer, db_url: str, tmp_path: Path, unique: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_structured.json")))
    run_id = f"structured-{unique}"
    script = await _kill_after_mark(fake_providers, db_url, tmp_path, run_id, "structured")
    assert fake_providers.request_count == 1

    run = await _load(script).build(db_url, "structured").run(run_id=run_id, display=False)
    assert run.status == "completed", run.steps["ask"].error
    assert run.results["ask"] == {"city": "San Francisco", "temperature": 65.0, "units": "f"}
    assert fake_providers.request_count == 1  # answered and validated from the store
    assert [c.replayed for c in run.calls] == [False, True]
    assert sum(r.calls for r in run.report().rows) == 1


async def test_debug_context_keeps_tools_and_tool_calls(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.script(Reply(body=_json("openai_chat_two_tool_calls.json")))
    wf = bn.Workflow(f"debug-tools-{unique}", db=db_url, debug=True)

    @wf.step()
    async def ask(ctx: bn.Context) -> int:
        c = await ctx.complete(
            model=MODEL, prompt="go", tools=[_weather_tool()], tool_choice="auto"
        )
        return len(c.tool_calls)

    run = await wf.run(display=False)
    loaded = await bn.Run.load(run.id, db=db_url)
    request, response = loaded.context("ask")
    assert request["data"]["params"]["tools"] == [_weather_tool()]
    assert request["data"]["params"]["tool_choice"] == "auto"
    assert response["data"]["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in response["data"]["tool_calls"]] == [
        "GetWeatherArgs",
        "get_stock_price",
    ]


SCHEMA_STEP = textwrap.dedent(
    """
    import os, sys, threading
    import anyio
    import baton_nb as bn

    class Spy:  # says which thread imports jsonschema (the event loop runs on the main one)
        def find_spec(self, name, path=None, target=None):
            if name == "jsonschema":
                main = threading.current_thread() is threading.main_thread()
                print("jsonschema imported on", "the loop" if main else "a worker", flush=True)
            return None

    sys.meta_path.insert(0, Spy())
    SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    wf = bn.Workflow("schema-off-the-loop", db=sys.argv[1])

    @wf.step(max_attempts=1)
    async def ask(ctx):
        c = await ctx.complete(
            model="mock/gpt-4o-mini", prompt="Weather in Paris?", response_format=SCHEMA
        )
        if sys.argv[3] == "first":
            raise RuntimeError("stopped after the paid call")
        return c.parsed

    run = anyio.run(lambda: wf.run(run_id=sys.argv[2], display=False))
    print(run.status, [c.replayed for c in run.calls])
    """
)


@pytest.mark.slow  # two fresh interpreters
async def test_the_json_schema_validator_is_imported_off_the_loop(
    sqlite_url: str, tmp_path: Path, unique: str
) -> None:
    """``import jsonschema`` takes seconds (it builds an RFC 3987 grammar); a structured
    answer checked against a JSON Schema imported it on the event loop, stalling every
    other call, both when answered and when replayed on resume."""
    script = tmp_path / "schema_step.py"
    script.write_text(SCHEMA_STEP)
    run_id = f"schema-{unique}"

    def run(mode: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script), sqlite_url, run_id, mode],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout.splitlines()

    first = await anyio.to_thread.run_sync(run, "first")
    assert first == ["jsonschema imported on a worker", "failed [False]"]
    resumed = await anyio.to_thread.run_sync(run, "resume")
    assert resumed == ["jsonschema imported on a worker", "completed [False, True]"]


# ------------------------------------------------------------------ synthesize


async def test_synthesize_sends_structured_answers_as_json(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """Dict, list and pydantic answers go to the model as JSON (``{"ok": true}``), never as
    Python's repr (``{'ok': True}``); text answers go as they are."""
    wf = bn.Workflow("synth-json", db=sqlite_url)

    @wf.step(models=["mock/gpt-4o-mini", "mock/claude-haiku-4-5"])
    async def facts(ctx: bn.Context) -> dict[str, Any]:
        return {"fact": "tides", "ok": True, "n": None, "where": ["Brest", "Saint-Malo"]}

    @wf.step()
    async def merged(ctx: bn.Context, facts: dict[str, Any]) -> str:
        answers = [
            facts["mock/gpt-4o-mini"],
            ["é", 1.5, False],
            Location(city="Paris", temperature=7.5, units="C"),
            "It's 'quoted' text: {'kept': True}",
        ]
        return (await ctx.synthesize(answers, model=MODEL, max_tokens=50)).text

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["merged"].error
    (request,) = fake_providers.requests  # the fan-out's models are mock: no request
    assert request.json["model"] == "gpt-4o"
    prompt = request.json["messages"][-1]["content"]
    assert prompt == (
        "### Answer 1 (0)\n"
        '{"fact": "tides", "ok": true, "n": null, "where": ["Brest", "Saint-Malo"]}\n\n'
        '### Answer 2 (1)\n["é", 1.5, false]\n\n'
        '### Answer 3 (2)\n{"city": "Paris", "temperature": 7.5, "units": "C"}\n\n'
        "### Answer 4 (3)\nIt's 'quoted' text: {'kept': True}"
    )
