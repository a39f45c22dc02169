"""What a dependent gets for its deps: parameters annotated with a pydantic model get
instances of it (validated from the stored JSON, on the first run as on a resume), every
other annotation gets the JSON as it is; ctx.synthesize(None) says why it has nothing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import baton_nb as bn
from baton_nb._dep_types import DependencyTypeWarning
from tests.fakes.provider_server import FakeProviderServer, Reply

pytestmark = pytest.mark.anyio
MODELS = ["openai/gpt-4o", "openai/gpt-4o-mini"]


class Verdict(BaseModel):
    answer: str
    confidence: int


def _verdict(answer: str, confidence: int) -> Reply:
    return Reply(text=Verdict(answer=answer, confidence=confidence).model_dump_json())


async def test_model_annotated_deps_get_instances_on_the_first_run_and_on_resume(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.script(_verdict("Paris", 9), _verdict("Paris", 8), _verdict("Lyon", 2))
    wf = bn.Workflow(f"typed-deps-{unique}", db=db_url)
    seen: list[dict[str, Any]] = []
    fail = [False, True]  # popped from the end: fails the first time

    @wf.step()
    async def one(ctx: bn.Context) -> Verdict:
        completion = await ctx.complete(model=MODELS[0], prompt="Capital?", response_format=Verdict)
        return completion.parsed

    @wf.step(models=MODELS)
    async def many(ctx: bn.Context) -> Verdict:
        return (await ctx.complete(prompt="Capital?", response_format=Verdict)).parsed

    @wf.step(max_attempts=1)
    async def use(ctx: bn.Context, one: Verdict, many: dict[str, Verdict | None]) -> list[str]:
        seen.append({"one": one, "many": many, "raw": ctx.results["one"]})
        if fail.pop():
            raise RuntimeError("fails once, then the run is resumed")
        return sorted([one.answer, *(v.answer for v in many.values() if v)])

    run = await wf.run(display=False)
    assert run.steps["use"].state == "discarded"
    resumed = await wf.run(run_id=run.id, display=False)  # the results come from the store
    assert resumed.status == "completed", resumed.steps["use"].error
    # one and many run together: which step got which scripted reply varies
    assert resumed.results["use"] == ["Lyon", "Paris", "Paris"]
    assert len(fake_providers.requests) == 3  # the resume re-paid nothing
    first, again = seen
    for got in seen:
        assert type(got["one"]) is Verdict
        assert {type(v) for v in got["many"].values()} == {Verdict}
        assert got["raw"] == got["one"].model_dump()  # ctx.results: the JSON
    assert (again["one"], again["many"]) == (first["one"], first["many"])
    assert resumed.results["one"] == first["one"].model_dump()  # run.results: the JSON


async def test_a_tolerant_map_list_keeps_none_for_the_failed_items(sqlite_url: str) -> None:
    wf = bn.Workflow("typed-map", db=sqlite_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [1, 2, 3]

    @wf.step(map_over="items", max_attempts=1)
    async def judge(ctx: bn.Context) -> Verdict:
        if ctx.item == 2:
            raise RuntimeError("item 2 is bad")
        return Verdict(answer=str(ctx.item), confidence=ctx.item)

    @wf.step(ignore_discarded=True)
    async def gather(ctx: bn.Context, judge: list[Verdict] | None) -> list[str | None]:
        assert judge is not None
        return [v.answer if v is not None else None for v in judge]

    run = await wf.run(display=False)
    assert run.steps["gather"].state == "completed", run.steps["gather"].error
    assert run.results["gather"] == ["1", None, "3"]


async def test_a_result_that_does_not_fit_the_model_is_passed_as_stored_with_a_warning(
    sqlite_url: str,
) -> None:
    wf = bn.Workflow("typed-bad", db=sqlite_url)

    @wf.step()
    async def one(ctx: bn.Context) -> dict[str, Any]:
        return {"answer": "Paris", "confidence": "very"}

    @wf.step()
    async def use(ctx: bn.Context, one: Verdict) -> str:
        return type(one).__name__

    with pytest.warns(DependencyTypeWarning, match=r"step 'use': the result of 'one' is passed"):
        run = await wf.run(display=False)
    assert run.steps["use"].state == "completed"  # as without the annotation
    assert run.results["use"] == "dict"


async def test_other_annotations_are_left_alone(sqlite_url: str) -> None:
    wf = bn.Workflow("untyped", db=sqlite_url)

    class Local(BaseModel):  # a string annotation resolved from the closure
        answer: str

    @wf.step()
    async def one(ctx: bn.Context) -> dict[str, Any]:
        return {"answer": "Paris"}

    @wf.step()
    async def two(ctx: bn.Context) -> str:
        return "not an int"

    @wf.step()
    async def use(ctx: bn.Context, one: Local, two: int) -> list[str]:
        assert isinstance(one, Local)
        return [type(one).__name__, type(two).__name__]

    @wf.step()
    async def plain(ctx: bn.Context, one: dict[str, Any], two: Any) -> list[str]:
        return [type(one).__name__, type(two).__name__]

    run = await wf.run(display=False)
    assert run.status == "completed", {k: s.error for k, s in run.steps.items()}
    assert run.results["use"] == ["Local", "str"]  # int is no model: not validated
    assert run.results["plain"] == ["dict", "str"]


async def test_synthesize_none_says_no_child_of_the_dep_completed(sqlite_url: str) -> None:
    wf = bn.Workflow("synth-none", db=sqlite_url)

    @wf.step(models=["mock/gpt-4o-mini", "mock/claude-haiku-4-5"], max_attempts=1)
    async def vote(ctx: bn.Context) -> str:
        raise RuntimeError("provider down")

    @wf.step(ignore_discarded=True)
    async def merged(ctx: bn.Context, vote: dict[str, str] | None) -> str:
        return (await ctx.synthesize(vote, model="mock/gpt-4o-mini")).text  # type: ignore[arg-type]

    run = await wf.run(display=False)
    step = run.steps["merged"]
    assert step.state == "discarded" and step.attempt == 1
    assert step.error == (
        "ConfigurationError: step 'merged': ctx.synthesize() got None: no answers to "
        "synthesise (no child of 'vote' completed: a step that ignores a failed dep gets "
        "None). Check for None before synthesising (return a fallback, or raise "
        "bn.Discard(...))"
    )
