"""LLM calls inside runs: replay, stats, cost, retries, fan-out, captured context.

Against the fake provider server on 127.0.0.1 (tests/fakes), never the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o-mini"


async def test_retry_replays_the_paid_call(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=1000, output=500)
    wf = bn.Workflow(f"replay-{unique}", db=db_url)

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(model=MODEL, prompt="hello")
        if ctx.attempt == 1:
            raise RuntimeError("crash after the paid call")
        return answer.text

    run = await wf.run(display=False)
    assert run.status == "completed" and run.steps["ask"].attempt == 2
    assert fake_providers.request_count == 1
    assert [c.replayed for c in run.calls] == [False, True]
    expected = bn.price(MODEL, bn.Usage(input_tokens=1000, output_tokens=500))
    assert run.cost == expected and expected > 0
    report = run.report()
    assert report.total == expected
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.cost == expected and len(loaded.calls) == 2


async def test_resume_replays_calls_a_step_makes_at_once(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A resumed step that makes its calls concurrently (asyncio.gather) gets every stored
    answer: the second call used to miss them while the first one read them from the
    store, was paid again, and its stored copy broke the commit (unique constraint)."""
    fail = {"on": True}
    wf = bn.Workflow(f"replay-gather-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> list[str]:
        answers = await asyncio.gather(
            ctx.complete(model=MODEL, prompt="one"), ctx.complete(model=MODEL, prompt="two")
        )
        if fail["on"]:
            raise RuntimeError("fails after its paid calls")
        return [a.text for a in answers]

    first = await wf.run(display=False)
    assert first.status == "failed" and fake_providers.request_count == 2
    fail["on"] = False
    run = await wf.run(run_id=first.id, display=False)
    assert run.status == "completed" and fake_providers.request_count == 2
    assert sorted(c.replayed for c in run.calls) == [False, False, True, True]


async def test_changed_request_is_a_new_call(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    wf = bn.Workflow("changed", db=sqlite_url)

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(model=MODEL, prompt=f"attempt {ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("again")
        return answer.text

    run = await wf.run(display=False)
    assert run.status == "completed" and fake_providers.request_count == 2
    assert [c.replayed for c in run.calls] == [False, False]


async def test_rate_limit_is_retried_inside_the_call(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.script(Reply(status=429, headers={"Retry-After": "0"}, message="slow down"))
    wf = bn.Workflow("ratelimit", db=sqlite_url)

    @wf.step(max_attempts=3)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi")).text

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert run.steps["ask"].attempt == 1  # the 429 did not use a step attempt
    assert fake_providers.request_count == 2


async def test_bad_request_fails_the_attempt_with_the_provider_message(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.script(Reply(status=400, message="max_tokens is too large: 999999"))
    wf = bn.Workflow("badreq", db=sqlite_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi", max_tokens=999999)).text

    run = await wf.run(display=False)
    error = run.steps["ask"].error or ""
    assert run.status == "failed" and "max_tokens is too large: 999999" in error
    assert "ProviderError" in error and "400" in error
    assert fake_providers.request_count == 1
    assert DUMMY_KEYS["openai"] not in error


CRASHING_LLM_STEP = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import anyio
    import baton_nb as bn

    def build(db):
        wf = bn.Workflow("paid-crash", db=db)

        @wf.step()
        async def ask(ctx):
            answer = await ctx.complete(model="openai/gpt-4o-mini", prompt="expensive question")
            if os.environ.get("HANG") == "1":
                Path(os.environ["MARK"]).write_text("paid")
                await anyio.sleep(60)
            return answer.text

        @wf.step()
        async def after(ctx, ask):
            return len(ask)

        return wf

    if __name__ == "__main__":
        anyio.run(lambda: build(sys.argv[1]).run(run_id=sys.argv[2], display=False))
    """
)


@pytest.mark.slow  # a real subprocess
async def test_kill_after_paid_call_then_resume_pays_once(
    fake_providers: FakeProviderServer, db_url: str, tmp_path: Path, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=2000, output=100)
    script = tmp_path / "paid.py"
    script.write_text(CRASHING_LLM_STEP)
    mark = tmp_path / "mark"
    run_id = f"paid-{unique}"
    env = {
        **os.environ,
        "HANG": "1",
        "MARK": str(mark),
        "OPENAI_BASE_URL": f"{fake_providers.base_url}/v1",
        "OPENAI_API_KEY": DUMMY_KEYS["openai"],
    }
    proc = subprocess.Popen([sys.executable, str(script), db_url, run_id], env=env)
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
    assert fake_providers.request_count == 1

    import importlib.util

    spec = importlib.util.spec_from_file_location("paid_crash", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = await module.build(db_url).run(run_id=run_id, display=False)
    assert run.status == "completed"
    assert fake_providers.request_count == 1  # the resume was answered from the store
    assert [c.replayed for c in run.calls] == [False, True]
    report = run.report()
    assert sum(r.calls for r in report.rows) == 1
    assert report.total == bn.price(MODEL, bn.Usage(input_tokens=2000, output_tokens=100))


async def test_multi_model_fan_out_with_synthesis(sqlite_url: str) -> None:
    models = ["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.5-flash"]
    wf = bn.Workflow("fanout", db=sqlite_url)
    seen_models: list[str | None] = []

    @wf.step()
    async def question(ctx: bn.Context) -> str:
        return "What causes tides?"

    @wf.step(models=models)
    async def answers(ctx: bn.Context, question: str) -> str:
        seen_models.append(ctx.model)
        return (await ctx.complete(prompt=question)).text

    @wf.step()
    async def merged(ctx: bn.Context, answers: dict[str, str]) -> dict[str, Any]:
        summary = await ctx.synthesize(answers, model="mock/gpt-4o", instruction="Merge.")
        return {"models": sorted(answers), "text": summary.text}

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert sorted(seen_models) == sorted(models)
    assert [run.steps[f"answers[{m}]"].state for m in models] == ["completed"] * 3
    assert run.steps["answers"].kind == "group"
    assert run.steps["answers"].children == [f"answers[{m}]" for m in models]
    assert list(run.results["answers"]) == models
    assert run.results["merged"]["models"] == sorted(models)
    by_step = run.report().by_step()
    assert set(by_step) == {"answers", "merged"}  # children roll up into their step
    assert set(run.report().by_model()) == {*models, "mock/gpt-4o"}
    assert run.cost == sum((r.cost or Decimal(0) for r in by_step.values()), Decimal(0))
    assert run.cost > 0


async def test_quorum_tolerates_a_failed_model(sqlite_url: str) -> None:
    wf = bn.Workflow("quorum", db=sqlite_url)

    @wf.step(models=["mock/a", "mock/b", "mock/c"], quorum=2, max_attempts=1)
    async def vote(ctx: bn.Context) -> str:
        if ctx.model == "mock/b":
            raise RuntimeError("model b is down")
        return str(ctx.model)

    @wf.step()
    async def tally(ctx: bn.Context, vote: dict[str, str]) -> list[str]:
        return sorted(vote)

    run = await wf.run(display=False)
    assert run.status == "completed" and run.failed_steps == []
    assert run.steps["vote[mock/b]"].state == "discarded"  # still visible
    assert run.results["tally"] == ["mock/a", "mock/c"]


async def test_quorum_out_of_reach_fails_the_group(sqlite_url: str) -> None:
    wf = bn.Workflow("quorum-fail", db=sqlite_url)

    @wf.step(models=["mock/a", "mock/b", "mock/c"], quorum=2, max_attempts=1)
    async def vote(ctx: bn.Context) -> str:
        if ctx.model != "mock/a":
            raise RuntimeError("down")
        return "ok"

    @wf.step()
    async def tally(ctx: bn.Context, vote: dict[str, str]) -> int:
        return len(vote)

    run = await wf.run(display=False)
    assert run.status == "failed"
    assert run.steps["vote"].state == "discarded"
    assert "quorum not reached: 1 of 3 completed, 2 needed" in (run.steps["vote"].error or "")
    assert run.steps["tally"].state == "cancelled"
    assert {"vote", "tally", "vote[mock/b]", "vote[mock/c]"} <= set(run.failed_steps)


async def test_map_over_runs_one_child_per_item_in_order(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"map-{unique}", db=db_url)

    @wf.step()
    async def docs(ctx: bn.Context) -> list[dict[str, Any]]:
        return [{"id": "x", "n": 3}, {"id": "y", "n": 1}, {"id": "z", "n": 2}]

    @wf.step(map_over="docs")
    async def square(ctx: bn.Context) -> int:
        await anyio.sleep(0.01 * ctx.item["n"])  # finish out of order
        return int(ctx.item["n"]) ** 2

    @wf.step(map_over="docs", map_key=lambda d: d["id"])
    async def named(ctx: bn.Context) -> str:
        return str(ctx.item["id"]).upper()

    @wf.step()
    async def total(ctx: bn.Context, square: list[int], named: list[str]) -> dict[str, Any]:
        return {"square": square, "named": named}

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert run.results["total"] == {"square": [9, 1, 4], "named": ["X", "Y", "Z"]}
    assert run.steps["square"].children == ["square[0]", "square[1]", "square[2]"]
    assert run.steps["named"].children == ["named[x]", "named[y]", "named[z]"]
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.steps["square[2]"].parent == "square" and loaded.results["square[2]"] == 4


async def test_map_over_non_list_and_empty_list(sqlite_url: str) -> None:
    wf = bn.Workflow("map-edge", db=sqlite_url)

    @wf.step()
    async def nothing(ctx: bn.Context) -> list[int]:
        return []

    @wf.step()
    async def mapping(ctx: bn.Context) -> dict[str, int]:
        return {"a": 1}

    @wf.step(map_over="nothing")
    async def each_empty(ctx: bn.Context) -> int:
        raise AssertionError

    @wf.step(map_over="mapping")
    async def each_bad(ctx: bn.Context) -> int:
        raise AssertionError

    run = await wf.run(display=False)
    assert run.results["each_empty"] == []
    assert run.steps["each_bad"].state == "discarded"
    assert "needs a list result, got dict" in (run.steps["each_bad"].error or "")


async def test_map_children_resume_without_rerunning_completed_ones(sqlite_url: str) -> None:
    wf = bn.Workflow("map-resume", db=sqlite_url)
    executions: list[int] = []
    broken = {2}

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1, 2, 3]

    @wf.step(map_over="items", max_attempts=1)
    async def work(ctx: bn.Context) -> int:
        executions.append(ctx.item)
        if ctx.item in broken:
            raise RuntimeError("item 2 fails")
        return ctx.item * 10

    first = await wf.run(display=False)
    assert first.status == "failed" and "work[2]" in first.failed_steps
    broken.clear()
    second = await wf.run(run_id=first.id, display=False)
    assert second.status == "completed" and second.results["work"] == [0, 10, 20, 30]
    assert sorted(executions) == [0, 1, 2, 2, 3]


async def test_model_map_sets_ctx_model(sqlite_url: str) -> None:
    wf = bn.Workflow("modelmap", db=sqlite_url, models={"ask": "mock/gpt-4o-mini"})

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        completion = await ctx.complete(prompt="hi")
        return f"{ctx.model}|{completion.model}"

    run = await wf.run(display=False)
    assert run.results["ask"].startswith("mock/gpt-4o-mini|")
    other = await wf.run(models={"ask": "mock/claude-haiku-4-5"}, display=False)
    assert other.results["ask"].startswith("mock/claude-haiku-4-5|")

    bare = bn.Workflow("nomodel", db=sqlite_url)

    @bare.step(max_attempts=1)
    async def lost(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="hi")).text

    failed = await bare.run(display=False)
    assert "no model for ctx.complete()" in (failed.steps["lost"].error or "")


async def test_call_finished_events(sqlite_url: str) -> None:
    wf = bn.Workflow("callevents", db=sqlite_url)

    @wf.step(models=["mock/gpt-4o-mini", "mock/claude-haiku-4-5"])
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="hi")).text

    calls: list[bn.CallFinished] = []
    remove = bn.events.add_listener(
        bn.topic_all(), lambda e: calls.append(e) if isinstance(e, bn.CallFinished) else None
    )
    try:
        run = await wf.run(display=False)
    finally:
        remove()
    mine = [c for c in calls if c.workflow_id == run.id]
    assert sorted(c.step_name for c in mine) == [
        "ask[mock/claude-haiku-4-5]",
        "ask[mock/gpt-4o-mini]",
    ]
    assert all(c.cost is not None and c.cost > 0 and c.usage.output_tokens > 0 for c in mine)


async def test_debug_keeps_the_request_of_a_failed_call(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    message = f"model overloaded for key {DUMMY_KEYS['openai']}"
    fake_providers.script(Reply(status=400, message=message))
    wf = bn.Workflow(f"debug-fail-{unique}", db=db_url, debug=True)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="why did this fail?")).text

    run = await wf.run(display=False)
    assert run.status == "failed"
    loaded = await bn.Run.load(run.id, db=db_url)
    for source in (run, loaded):
        entries = source.context("ask")
        # the call's error, then the step's (what the attempt raised, with its traceback)
        assert [e["kind"] for e in entries] == ["request", "error", "error"], entries
        assert "why did this fail?" in str(entries[0]["data"])
        assert "model overloaded" in entries[1]["message"]
        assert "model overloaded" in entries[2]["message"]
        assert "in ask" in entries[2]["data"]["traceback"]
        assert DUMMY_KEYS["openai"] not in repr(entries)


async def test_an_answer_and_its_stats_row_are_stored_at_one_time(
    fake_providers: FakeProviderServer, sqlite_url: str, unique: str
) -> None:
    """A paid answer's stored completion and its stats row carry the same ``created_at``
    (one clock reading for both), as written on SQLite."""
    import sqlite3

    wf = bn.Workflow(f"one-time-{unique}", db=sqlite_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        first = await ctx.complete(model=MODEL, prompt="one")
        second = await ctx.complete(model=MODEL, prompt="two")
        return first.text + second.text

    run = await wf.run(display=False)
    assert run.status == "completed"
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        answers = con.execute(
            "SELECT call_index, created_at FROM workflow_completions ORDER BY call_index"
        ).fetchall()
        stats = con.execute(
            "SELECT call_index, created_at FROM workflow_step_stats ORDER BY call_index"
        ).fetchall()
    con.close()
    assert len(answers) == 2 and answers == stats
    assert answers[0][1] < answers[1][1]


async def test_a_replaced_llm_complete_applies_at_each_call_and_stops_when_undone(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's test replacing ``baton_nb.llm.complete`` (pytest's monkeypatch) is used by
    ``ctx.complete`` from its next call, and the real one again once undone: the runtime
    reads the name at each call (it once kept the first one it saw, the review found)."""
    import baton_nb.llm as llm

    real = llm.complete

    async def fake(request: Any) -> Any:
        return dataclasses.replace(await real(request), text="FAKE")

    async def answer(name: str) -> str:
        wf = bn.Workflow(f"{name}-{unique}", db=db_url)

        @wf.step()
        async def ask(ctx: bn.Context) -> str:
            return (await ctx.complete(model=MODEL, prompt="hello")).text

        return str((await wf.run(display=False)).results["ask"])

    first = await answer("real-first")
    monkeypatch.setattr(llm, "complete", fake)
    assert await answer("faked") == "FAKE"
    monkeypatch.undo()
    assert await answer("real-again") == first
