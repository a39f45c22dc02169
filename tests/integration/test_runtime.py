"""The durable runtime on SQLite and on the real Postgres (DESIGN §2–§4)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.store import Store

pytestmark = pytest.mark.anyio

NO_WAIT = {"backoff": lambda attempt: 0.0}


async def test_diamond_runs_in_dependency_order(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"diamond-{unique}", db=db_url)
    order: list[str] = []

    async def record(ctx: bn.Context) -> str:
        order.append(ctx.step)
        await anyio.sleep(0.01 if ctx.step == "b" else 0)
        return ctx.step

    wf.add("a", record)
    wf.add("b", record, deps=["a"])
    wf.add("c", record, deps=["a"])
    wf.add("d", record, deps=["b", "c"])
    run = await wf.run(display=False)
    assert run.status == "completed"
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    assert run.results == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert all(s.state == "completed" and s.attempt == 1 for s in run.steps.values())


async def test_results_flow_between_steps_hamilton_style(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"ham-{unique}", db=db_url)

    @wf.step()
    async def fetch(ctx: bn.Context) -> dict[str, list[str]]:
        return {"docs": ["a", "b", "c"]}

    @wf.step(deps=["fetch"])
    async def parse(ctx: bn.Context) -> list[str]:
        return [d.upper() for d in ctx.results["fetch"]["docs"]]

    @wf.step()
    async def store(ctx: bn.Context, parse: list[str]) -> int:
        return len(parse)

    @wf.step()
    def sync_step(store: int) -> int:  # sync, no ctx: runs in a worker thread
        return store * 10

    assert wf.validate() == ["fetch", "parse", "store", "sync_step"]
    run = await wf.run(params={"topic": "x"}, display=False)
    assert run.results["parse"] == ["A", "B", "C"]
    assert run.results["store"] == 3 and run.results["sync_step"] == 30
    assert run.params == {"topic": "x"}


async def test_peak_concurrency_never_above_limit(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"conc-{unique}", db=db_url)
    running = peak = 0

    async def work(ctx: bn.Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1

    for i in range(30):
        wf.add(f"s{i}", work)
    run = await wf.run(concurrency=4, display=False)
    assert run.status == "completed"
    assert peak == 4


async def test_concurrency_key_limits_a_group_of_steps(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"keys-{unique}", db=db_url, limits={"api": 2})
    running = peak = 0

    async def work(ctx: bn.Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1

    for i in range(10):
        wf.add(f"s{i}", work, concurrency_key="api")
    await wf.run(display=False)
    assert peak == 2


async def test_retry_then_success_counts_attempts(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"retry-{unique}", db=db_url)
    calls = 0

    @wf.step(max_attempts=3, **NO_WAIT)
    async def flaky(ctx: bn.Context) -> int:
        nonlocal calls
        calls += 1
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return ctx.attempt

    run = await wf.run(display=False)
    assert run.status == "completed" and calls == 3
    assert run.steps["flaky"].attempt == 3 and run.results["flaky"] == 3
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.steps["flaky"].attempt == 3 and loaded.steps["flaky"].state == "completed"


async def test_exhaustion_discards_and_cascades(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"exhaust-{unique}", db=db_url)

    @wf.step(max_attempts=2, **NO_WAIT)
    async def bad(ctx: bn.Context) -> None:
        raise ValueError("always")

    @wf.step()
    async def after(ctx: bn.Context, bad: Any) -> None:
        raise AssertionError("must not run")

    @wf.step()
    async def later(ctx: bn.Context, after: Any) -> None:
        raise AssertionError("must not run")

    @wf.step()
    async def independent(ctx: bn.Context) -> str:
        return "ok"

    run = await wf.run(display=False)
    assert run.status == "failed"
    assert sorted(run.failed_steps) == ["after", "bad", "later"]
    assert run.steps["bad"].state == "discarded" and run.steps["bad"].attempt == 2
    assert "ValueError: always" in (run.steps["bad"].error or "")
    assert run.steps["after"].state == "cancelled"
    assert "'bad' was discarded" in (run.steps["after"].error or "")
    assert run.steps["later"].state == "cancelled"
    assert run.results["independent"] == "ok"
    with pytest.raises(bn.WorkflowFailed, match="bad"):
        run.raise_for_status()
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.status == "failed" and sorted(loaded.failed_steps) == sorted(run.failed_steps)


async def test_snooze_does_not_consume_an_attempt(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"snooze-{unique}", db=db_url)
    executions = 0

    @wf.step(max_attempts=1)
    async def waiting(ctx: bn.Context) -> Any:
        nonlocal executions
        executions += 1
        if executions < 3:
            return bn.Snooze(0.01)
        return "ready"

    run = await wf.run(display=False)
    assert run.status == "completed" and executions == 3
    assert run.steps["waiting"].attempt == 1


@pytest.mark.parametrize("seconds", [float("nan"), float("inf")])
async def test_snooze_of_no_finite_time_fails_the_attempt(
    db_url: str, unique: str, seconds: float
) -> None:
    """bn.Snooze(nan) is refused where the step makes it (a failed attempt, retried):
    it used to reach the runtime's sleep, whose ValueError ended the whole run (inf: a
    step that never woke and a run that never ended)."""
    wf = bn.Workflow(f"snooze-nan-{unique}", db=db_url)

    @wf.step(max_attempts=2, **NO_WAIT)
    async def waiting(ctx: bn.Context) -> Any:
        if ctx.attempt == 1:
            return bn.Snooze(seconds)
        return "ready"

    with anyio.fail_after(10):
        run = await wf.run(display=False)
    assert run.status == "completed" and run.steps["waiting"].attempt == 2
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.results == {"waiting": "ready"}


@pytest.mark.parametrize("how", ["return", "raise"])
async def test_discard_does_not_retry(db_url: str, unique: str, how: str) -> None:
    wf = bn.Workflow(f"discard-{unique}", db=db_url)
    executions = 0

    @wf.step(max_attempts=5, **NO_WAIT)
    async def give_up(ctx: bn.Context) -> Any:
        nonlocal executions
        executions += 1
        if how == "raise":
            raise bn.Discard("bad input")
        return bn.Discard("bad input")

    run = await wf.run(display=False)
    assert executions == 1
    assert run.steps["give_up"].state == "discarded"
    assert run.steps["give_up"].error == "bad input"


async def test_discard_of_an_exception_keeps_its_text(db_url: str, unique: str) -> None:
    """``except KeyError as e: raise bn.Discard(e)``: the step is discarded with the
    exception's text (it crashed the run while the reason was redacted as a str)."""
    wf = bn.Workflow(f"discard-exc-{unique}", db=db_url)

    @wf.step()
    async def give_up(ctx: bn.Context) -> None:
        try:
            raise KeyError("missing")
        except KeyError as exc:
            raise bn.Discard(exc) from exc  # type: ignore[arg-type]

    run = await wf.run(display=False)
    assert run.steps["give_up"].state == "discarded"
    assert run.steps["give_up"].error == "'missing'"


async def test_timeout_is_a_retryable_error(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"timeout-{unique}", db=db_url)

    @wf.step(timeout=0.05, max_attempts=2, **NO_WAIT)
    async def slow(ctx: bn.Context) -> str:
        if ctx.attempt == 1:
            await anyio.sleep(5)
        return "second time lucky"

    @wf.step(timeout=0.05, max_attempts=1)
    def slow_sync(ctx: bn.Context) -> None:
        import time

        time.sleep(0.3)

    run = await wf.run(display=False)
    assert run.steps["slow"].state == "completed" and run.steps["slow"].attempt == 2
    assert run.steps["slow_sync"].state == "discarded"
    assert "timed out after 0.05s" in (run.steps["slow_sync"].error or "")


async def test_cancelled_error_raised_by_a_step_fails_its_attempt(db_url: str, unique: str) -> None:
    """A step whose own code raises CancelledError (it awaits a task it cancelled) failed
    its attempt like any error; nobody cancelled the run, so its other steps go on (they
    used to be cancelled, the run recorded failed with 'run cancelled' on each)."""
    wf = bn.Workflow(f"own-cancel-{unique}", db=db_url)

    async def awaits_a_cancelled_task() -> None:
        helper = asyncio.create_task(asyncio.sleep(30))
        await asyncio.sleep(0)
        helper.cancel()
        await helper  # raises CancelledError here; this task was not cancelled

    @wf.step(max_attempts=2, **NO_WAIT)
    async def retried(ctx: bn.Context) -> str:
        if ctx.attempt == 1:
            await awaits_a_cancelled_task()
        return "second attempt"

    @wf.step(max_attempts=1)
    async def once(ctx: bn.Context) -> str:
        await awaits_a_cancelled_task()
        return "never"

    @wf.step()
    async def sibling(ctx: bn.Context) -> str:
        await anyio.sleep(0.2)
        return "sibling"

    with anyio.fail_after(10):
        run = await wf.run(display=False)
    assert run.results == {"retried": "second attempt", "sibling": "sibling"}
    assert run.steps["retried"].attempt == 2
    assert run.status == "failed" and run.failed_steps == ["once"]
    assert run.steps["once"].state == "discarded"
    assert "CancelledError" in (run.steps["once"].error or "")
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.status == "failed" and stored.steps["sibling"].state == "completed"


async def test_ignore_flags_let_dependents_run(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"ignore-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def broken(ctx: bn.Context) -> None:
        raise RuntimeError("nope")

    @wf.step(deps=["broken"], ignore_discarded=True)
    async def tolerant(ctx: bn.Context) -> list[str]:
        return sorted(ctx.results)

    @wf.step(deps=["broken"])
    async def strict(ctx: bn.Context) -> None:
        raise AssertionError("must not run")

    @wf.step(deps=["strict"], ignore_cancelled=True)
    async def after_cancel(ctx: bn.Context) -> str:
        return "ran"

    run = await wf.run(display=False)
    assert run.results["tolerant"] == []  # ctx.results lacks the failed dep
    assert run.steps["strict"].state == "cancelled"
    assert run.results["after_cancel"] == "ran"
    assert run.status == "failed"
    assert sorted(run.failed_steps) == ["broken", "strict"]


async def test_ignore_discarded_after_a_failed_map_gets_its_survivors(
    db_url: str, unique: str
) -> None:
    """A tolerant step after a map where a few items failed gets the map's list, in item
    order, with None for each failed item (docs/fanout.md); after a multi-model group,
    the dict of the models that completed; after a group none of whose children
    completed, nothing (None: as for any failed dep). The group stays discarded."""
    wf = bn.Workflow(f"partial-{unique}", db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(6))

    @wf.step(map_over="items", max_attempts=1)
    async def work(ctx: bn.Context) -> int:
        if ctx.item in (1, 4):
            raise ValueError(f"item {ctx.item} is malformed")
        return ctx.item * 10

    @wf.step(models=["mock/a", "mock/b"], max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        if ctx.model == "mock/b":
            raise ValueError("b is down")
        return "from a"

    @wf.step(map_over="items", max_attempts=1)
    async def never(ctx: bn.Context) -> int:
        raise ValueError("always")

    @wf.step(ignore_discarded=True)
    async def total(ctx: bn.Context, work: list[int | None], ask: dict[str, str]) -> dict:
        return {"work": work, "ask": ask, "seen": sorted(ctx.results)}

    @wf.step(ignore_discarded=True)
    async def nothing(ctx: bn.Context, never: list[int] | None) -> str:
        return f"never={never!r} in results: {'never' in ctx.results}"

    run = await wf.run(display=False)
    assert run.steps["work"].state == "discarded" and run.steps["ask"].state == "discarded"
    assert run.results["total"] == {
        "work": [0, None, 20, 30, None, 50],
        "ask": {"mock/a": "from a"},
        "seen": ["ask", "work"],
    }
    assert run.results["nothing"] == "never=None in results: False"
    assert "work" not in run.results  # the failed group has no result of its own
    assert sorted(run.failed_steps)[:3] == ["ask", "ask[mock/b]", "never"]
    assert run.status == "failed"


async def test_a_step_computed_from_survivors_runs_again_when_a_resume_completes_the_group(
    db_url: str, unique: str
) -> None:
    """A tolerant step that got a failed map's survivors, and what follows it, run again on
    a resume that completes the map: the run does not complete on partial data. The rest
    is reused: the source and the children that completed do not run again, the tolerant
    step's LLM call with the same request replays, one with a new request is made; a
    map over the tolerant step's value runs all its children again (items may change)."""
    wf = bn.Workflow(f"survivors-resume-{unique}", db=db_url)
    broken = {"on": True}
    ran: list[str] = []

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        ran.append("items")
        return [1, 2, 3, 4]

    @wf.step(map_over="items", max_attempts=1)
    async def work(ctx: bn.Context) -> int:
        ran.append(f"work:{ctx.item}")
        if ctx.item == 3 and broken["on"]:
            raise ValueError("boom")
        return ctx.item * 10

    @wf.step(ignore_discarded=True)
    async def total(ctx: bn.Context, work: list[int | None]) -> int:
        ran.append("total")
        await ctx.complete(model="mock/gpt-4o-mini", prompt="same", max_tokens=5)
        survivors = [r for r in work if r is not None]
        await ctx.complete(model="mock/gpt-4o-mini", prompt=str(survivors), max_tokens=5)
        return sum(survivors)

    @wf.step()
    async def report(ctx: bn.Context, total: int) -> str:
        ran.append("report")
        return f"total {total}"

    @wf.step()
    async def parts(ctx: bn.Context, total: int) -> list[int]:
        return [total, total + 1]

    @wf.step(map_over="parts")
    async def halves(ctx: bn.Context) -> int:
        ran.append(f"halves:{ctx.item}")
        return ctx.item // 2

    @wf.step()
    async def unrelated(ctx: bn.Context, items: list[int]) -> int:
        ran.append("unrelated")
        return len(items)

    first = await wf.run(display=False)
    assert first.status == "failed" and first.results["total"] == 70
    assert first.results["report"] == "total 70" and first.results["halves"] == [35, 35]
    broken["on"] = False
    ran.clear()
    run = await wf.run(run_id=first.id, display=False)
    assert run.status == "completed"
    assert run.results["work"] == [10, 20, 30, 40]
    assert run.results["total"] == 100 and run.results["report"] == "total 100"
    assert run.results["halves"] == [50, 50]
    assert sorted(ran) == ["halves:100", "halves:101", "report", "total", "work:3"]
    stored = await bn.Run.load(first.id, db=db_url)
    assert stored.status == "completed" and stored.results["total"] == 100
    total_calls = [c for c in stored.calls if c.step == "total"]
    assert sorted(c.replayed for c in total_calls) == [False, False, False, True]


async def test_dep_callbacks_are_called_with_reason_and_ctx(db_url: str, unique: str) -> None:
    seen: list[tuple[str, str, str]] = []

    def on_discarded(reason: str, ctx: bn.Context) -> None:
        seen.append(("discarded", ctx.step, reason))

    async def on_cancelled(reason: str, ctx: bn.Context) -> None:
        seen.append(("cancelled", ctx.step, reason))

    async def fail(ctx: bn.Context) -> None:
        raise RuntimeError("x")

    async def never(ctx: bn.Context) -> None:
        raise AssertionError

    wf = bn.Workflow(f"callbacks-{unique}", db=db_url)
    wf.add("a", fail, max_attempts=1)
    wf.add("b", never, deps=["a"], on_dep_discarded=on_discarded)
    wf.add("c", never, deps=["b"], on_dep_cancelled=on_cancelled)
    await wf.run(display=False)
    assert [(k, s) for k, s, _ in seen] == [("discarded", "b"), ("cancelled", "c")]
    assert "'a' was discarded" in seen[0][2]


async def test_raising_callback_does_not_break_the_run(
    db_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(reason: str, ctx: bn.Context) -> None:
        raise RuntimeError("callback bug")

    async def fail(ctx: bn.Context) -> None:
        raise RuntimeError("x")

    async def never(ctx: bn.Context) -> None:
        raise AssertionError

    wf = bn.Workflow(f"cb-raise-{unique}", db=db_url)
    wf.add("a", fail, max_attempts=1)
    wf.add("b", never, deps=["a"], on_dep_discarded=explode)
    run = await wf.run(display=False)
    assert run.status == "failed"
    assert "callback of step 'b' raised" in caplog.text


async def test_non_json_result_is_an_error_naming_the_step(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"nonjson-{unique}", db=db_url)

    @wf.step(max_attempts=3, **NO_WAIT)
    async def weird(ctx: bn.Context) -> object:
        return object()

    run = await wf.run(display=False)
    step = run.steps["weird"]
    assert step.state == "discarded" and step.attempt == 1  # no pointless retries
    assert "ResultNotSerializable" in (step.error or "") and "'weird'" in (step.error or "")


async def test_decimal_result_is_stored_exactly_as_a_decimal_string(sqlite_url: str) -> None:
    """A step may return the library's own money (``completion.cost``, a ``Decimal``): it
    is stored as its exact decimal string, no exponent, no trailing zeros, and a dependent
    gets that str in the run as after it (``Run.load``). It used to fail the step with
    ``Object of type Decimal is not JSON serializable``."""
    wf = bn.Workflow("decimal-results", db=sqlite_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> object:
        c = await ctx.complete(model="mock/gpt-4o-mini", prompt="hello")
        assert c.cost is not None
        return {"text": c.text, "cost": c.cost, "tiny": Decimal("1E-7"), "z": Decimal("1.50")}

    @wf.step()
    async def seen(ctx: bn.Context, ask: dict[str, object]) -> object:
        return [type(ask["cost"]).__name__, ask["tiny"], ask["z"]]

    run = await wf.run(display=False)
    assert run.status == "completed", run.steps["ask"].error
    cost = run.results["ask"]["cost"]
    assert isinstance(cost, str) and Decimal(cost) == run.cost and "E" not in cost
    assert run.results["seen"] == ["str", "0.0000001", "1.5"]
    loaded = await bn.Run.load(run.id, db=sqlite_url)
    assert loaded.results == run.results


async def test_result_not_stored_names_where_what_and_what_to_return(sqlite_url: str) -> None:
    """A ``Completion`` returned (whole or inside the value) or any object: the message
    names its type and where it is in the value, and what to return instead (the step
    is discarded; the paid call is kept)."""
    wf = bn.Workflow("unstorable-results", db=sqlite_url)

    @wf.step()
    async def whole(ctx: bn.Context) -> object:
        return await ctx.complete(model="mock/gpt-4o-mini", prompt="hello")

    @wf.step()
    async def nested(ctx: bn.Context) -> object:
        c = await ctx.complete(model="mock/gpt-4o-mini", prompt="hello")
        return {"answers": [c.text, c]}

    @wf.step()
    async def other(ctx: bn.Context) -> object:
        return {"ok": 1, "when": [object()]}

    run = await wf.run(display=False)
    fix = (
        "return its text (c.text), its structured answer (c.parsed) or a dict of the "
        'fields you need, e.g. {"text": c.text, "cost": c.cost}'
    )
    assert run.steps["whole"].error == (
        "ResultNotSerializable: step 'whole' returned a Completion, which cannot be stored "
        f"as JSON; {fix}"
    )
    assert run.steps["nested"].error == (
        "ResultNotSerializable: step 'nested' returned a value that cannot be stored as "
        f"JSON: result['answers'][1] is a Completion; {fix}"
    )
    assert run.steps["other"].error == (
        "ResultNotSerializable: step 'other' returned a value that cannot be stored as "
        "JSON: result['when'][0] is an object; return dicts, lists, str, int, float, bool, "
        "None, Decimal or a pydantic model (e.g. its fields as a dict, or str(...))"
    )
    assert all(run.steps[s].state == "discarded" for s in ("whole", "nested", "other"))
    assert run.cost > 0  # the calls made are kept and counted


async def test_result_that_fails_to_encode_otherwise_is_an_error_naming_the_step(
    db_url: str, unique: str
) -> None:
    """A result whose encoding raises something other than TypeError/ValueError (nested
    too deep: RecursionError; a model_dump that raises) fails its step like any result
    that cannot be stored; it used to escape and end the whole run (its other steps
    cancelled), again at every resume."""

    class Broken:
        def model_dump(self, mode: str) -> object:
            raise KeyError("no such field")

    wf = bn.Workflow(f"encode-fails-{unique}", db=db_url)

    @wf.step()
    async def deep(ctx: bn.Context) -> object:
        nested: list[object] = []
        for _ in range(100_000):
            nested = [nested]
        return nested

    @wf.step()
    async def broken(ctx: bn.Context) -> object:
        return Broken()

    @wf.step()
    async def fine(ctx: bn.Context) -> str:
        await anyio.sleep(0.1)
        return "fine"

    run = await wf.run(display=False)
    assert run.status == "failed" and sorted(run.failed_steps) == ["broken", "deep"]
    assert run.results == {"fine": "fine"}
    for name, cause in (("deep", "RecursionError"), ("broken", "KeyError")):
        error = run.steps[name].error or ""
        assert "ResultNotSerializable" in error and f"'{name}'" in error and cause in error


def _zero_then_divide(attempt: int) -> float:
    return 0.0 if attempt < 2 else attempt / 0


async def test_raising_backoff_fails_the_step_not_the_run(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"bad-backoff-{unique}", db=db_url)
    executions = 0

    @wf.step()
    async def first(ctx: bn.Context) -> str:
        return "kept"

    @wf.step(deps=["first"], max_attempts=5, backoff=_zero_then_divide)
    async def x(ctx: bn.Context) -> None:
        nonlocal executions
        executions += 1
        raise ValueError(f"boom {ctx.attempt}")

    @wf.step()
    async def after(ctx: bn.Context, x: Any) -> None:
        raise AssertionError("must not run")

    @wf.step()
    async def independent(ctx: bn.Context) -> str:
        return "ok"

    run = await wf.run(display=False)  # no traceback out of run()
    assert run.status == "failed"
    assert executions == 2  # backoff(1) worked, backoff(2) raised: no third attempt
    step = run.steps["x"]
    assert step.state == "discarded" and step.attempt == 2
    error = step.error or ""
    assert "step 'x': backoff(2) raised ZeroDivisionError: division by zero" in error
    assert "ValueError: boom 2" in error  # the attempt's own error is not hidden
    assert run.steps["after"].state == "cancelled"
    assert "'x' was discarded" in (run.steps["after"].error or "")
    assert "run cancelled" not in str([s.error for s in run.steps.values()])
    assert sorted(run.failed_steps) == ["after", "x"]
    assert run.results["first"] == "kept" and run.results["independent"] == "ok"
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.status == "failed"
    assert loaded.steps["x"].state == "discarded" and loaded.steps["x"].error == error
    assert loaded.results == {"first": "kept", "independent": "ok"}


async def _async_backoff(attempt: int) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("backoff", "message"),
    [
        (lambda a: "soon", "backoff(1) returned str 'soon', not a number of seconds"),
        (lambda a: None, "backoff(1) returned NoneType None, not a number of seconds"),
        (lambda a: float("inf"), "backoff(1) returned inf, not a finite number of seconds"),
        (_async_backoff, "backoff(1) returned coroutine"),
    ],
    ids=["str", "none", "inf", "async"],
)
async def test_backoff_returning_no_number_fails_the_step(
    db_url: str, unique: str, backoff: Any, message: str
) -> None:
    wf = bn.Workflow(f"nan-backoff-{unique}", db=db_url)
    wf.add("x", _fail_once, max_attempts=3, backoff=backoff)
    wf.add("y", _const, deps=["x"])
    run = await wf.run(display=False)
    assert run.status == "failed"
    assert run.steps["x"].state == "discarded" and run.steps["x"].attempt == 1
    assert f"step 'x': {message}" in (run.steps["x"].error or "")
    assert run.steps["y"].state == "cancelled"


async def test_negative_backoff_means_no_wait(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"neg-backoff-{unique}", db=db_url)
    calls = 0

    async def flaky(ctx: bn.Context) -> int:
        nonlocal calls
        calls += 1
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return ctx.attempt

    wf.add("x", flaky, max_attempts=2, backoff=lambda a: -5)
    with anyio.fail_after(5):
        run = await wf.run(display=False)
    assert run.status == "completed" and run.results["x"] == 2 and calls == 2


def _key_needs_id(item: dict[str, str]) -> str:
    return item["id"]


async def test_raising_map_key_discards_the_map_step(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"bad-map-key-{unique}", db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[dict[str, str]]:
        return [{"id": "a"}, {"name": "no id"}]

    @wf.step(map_over="items", map_key=_key_needs_id)
    async def each(ctx: bn.Context) -> str:
        raise AssertionError("no child may run")

    @wf.step()
    async def total(ctx: bn.Context, each: list[str]) -> None:
        raise AssertionError("must not run")

    @wf.step()
    async def independent(ctx: bn.Context) -> str:
        return "ok"

    run = await wf.run(display=False)  # no traceback out of run()
    assert run.status == "failed"
    error = run.steps["each"].error or ""
    assert run.steps["each"].state == "discarded"
    assert "step 'each': map_key raised KeyError: 'id' (item 1 of 'items')" in error
    assert run.steps["total"].state == "cancelled"
    assert sorted(run.failed_steps) == ["each", "total"]
    assert run.results["items"] == [{"id": "a"}, {"name": "no id"}]
    assert run.results["independent"] == "ok"
    loaded = await bn.Run.load(run.id, db=db_url)
    assert loaded.status == "failed" and loaded.steps["each"].error == error
    assert loaded.results["items"] == [{"id": "a"}, {"name": "no id"}]
    assert not any(name.startswith("each[") for name in loaded.steps)


async def test_pydantic_results_are_stored_as_json(sqlite_url: str) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str
        score: float

    wf = bn.Workflow("pyd", db=sqlite_url)

    @wf.step()
    async def answer(ctx: bn.Context) -> Answer:
        return Answer(text="hi", score=0.5)

    @wf.step()
    async def use(ctx: bn.Context, answer: dict[str, Any]) -> str:
        return answer["text"]

    run = await wf.run(display=False)
    assert run.results["use"] == "hi"
    loaded = await bn.Run.load(run.id, db=sqlite_url)
    assert loaded.results["answer"] == {"text": "hi", "score": 0.5}


async def test_resume_reruns_only_what_did_not_complete(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"resume-{unique}", db=db_url)
    executions: dict[str, int] = {}
    healthy = False

    async def count(ctx: bn.Context) -> str:
        executions[ctx.step] = executions.get(ctx.step, 0) + 1
        if ctx.step == "b" and not healthy:
            raise RuntimeError("b is down")
        return ctx.step

    wf.add("a", count)
    wf.add("b", count, deps=["a"], max_attempts=1)
    wf.add("c", count, deps=["b"])
    wf.add("d", count, deps=["a"])
    first = await wf.run(display=False)
    assert first.status == "failed" and sorted(first.failed_steps) == ["b", "c"]
    healthy = True
    second = await wf.run(run_id=first.id, display=False)
    assert second.id == first.id and second.status == "completed"
    assert executions == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert second.results == {"a": "a", "b": "b", "c": "c", "d": "d"}
    # A completed run is returned as stored, nothing executes.
    third = await wf.run(run_id=first.id, display=False)
    assert third.status == "completed" and executions == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert third.results == second.results


async def test_unknown_run_id_creates_a_run_with_that_id(sqlite_url: str) -> None:
    wf = bn.Workflow("named", db=sqlite_url)
    wf.add("a", _const)
    run = await wf.run(run_id="daily-2026-11-25", display=False)
    assert run.id == "daily-2026-11-25" and run.status == "completed"
    with pytest.raises(bn.RunNotFound):
        await bn.Run.load("nope", db=sqlite_url)


async def test_run_id_prefix_resumes_this_workflows_run(db_url: str, unique: str) -> None:
    """The id the widget shows, or a unique prefix of >= 6 characters of it, resumes the
    run: nothing completed runs again (DESIGN §4)."""
    wf = bn.Workflow(f"prefix-{unique}", db=db_url)
    executions: list[str] = []
    healthy = False

    async def step(ctx: bn.Context) -> str:
        executions.append(ctx.step)
        if ctx.step == "b" and not healthy:
            raise RuntimeError("b is down")
        return ctx.step

    wf.add("a", step)
    wf.add("b", step, deps=["a"], max_attempts=1)
    first = await wf.run(display=False)
    assert first.status == "failed" and executions == ["a", "b"]
    healthy = True
    second = await wf.run(run_id=first.id[:8], display=False)
    assert second.id == first.id and second.status == "completed"
    assert executions == ["a", "b", "b"]
    third = await wf.run(run_id=first.id[:6], display=False)  # completed: returned as stored
    assert third.id == first.id and executions == ["a", "b", "b"]


async def test_run_id_that_is_ambiguous_or_too_short_is_an_error(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"ambiguous-{unique}", db=db_url)
    wf.add("a", _const)
    one = await wf.run(run_id=f"{unique}-exp-1", display=False)
    two = await wf.run(run_id=f"{unique}-exp-2", display=False)
    with pytest.raises(bn.ConfigurationError, match="ambiguous") as caught:
        await wf.run(run_id=f"{unique}-exp", display=False)
    assert one.id in str(caught.value) and two.id in str(caught.value)
    # Shorter than 6 characters: never taken as a prefix, nor as a new run's id that
    # would hide the runs it begins.
    with pytest.raises(bn.ConfigurationError, match="too short"):
        await wf.run(run_id=unique[:4], display=False)
    assert len(await _runs_of(db_url, wf.name)) == 2


async def test_a_mistyped_run_id_is_refused_not_started_as_a_new_run(
    db_url: str, unique: str
) -> None:
    """An id of the shape baton_nb makes that misses a stored run of the workflow by a
    character or two (the full id or a prefix) is a typo: refused, naming the run, so no
    new run pays for its calls again; an id chosen for a new run still starts one."""
    wf = bn.Workflow(f"typo-{unique}", db=db_url)
    wf.add("a", _const)
    run = await wf.run(display=False)

    def flipped(text: str, *at: int) -> str:
        chars = list(text)
        for i in at:
            chars[i] = "0" if chars[i] != "0" else "1"
        return "".join(chars)

    for typed in (flipped(run.id, 31), flipped(run.id, 3, 20), flipped(run.id[:8], 7)):
        with pytest.raises(bn.ConfigurationError, match=f"run_id={run.id!r}"):
            await wf.run(run_id=typed, display=False)
    assert await _runs_of(db_url, wf.name) == [run.id]
    chosen = await wf.run(run_id=f"{unique}-exp-1", display=False)  # not hex: a new run
    # three apart: new (spread out: three changes side by side, 3107 -> 3010, can be two
    # edits, one left out and one added: refused for 0.6% of random ids, a flaky test)
    other = await wf.run(run_id=flipped(run.id, 1, 12, 24), display=False)
    # Ids a user chose (a date, a counter) are never taken for a typo of each other.
    day = await wf.run(run_id=f"{unique[:4]}1205", display=False)
    next_day = await wf.run(run_id=day.id[:-1] + "6", display=False)
    assert sorted(await _runs_of(db_url, wf.name)) == sorted(
        [run.id, chosen.id, other.id, day.id, next_day.id]
    )


async def test_a_run_id_mistyped_with_any_character_is_refused(db_url: str, unique: str) -> None:
    """A non-hex character (``z`` for ``4``), a character left out or one added: still a
    typo of the stored id, refused naming it; before, only a hex id was compared, and a
    new run paid for every call again. Readable ids chosen for new runs still start them."""
    wf = bn.Workflow(f"typo-any-{unique}", db=db_url)
    wf.add("a", _const)
    run = await wf.run(display=False)
    rid = run.id
    typos = [
        rid[:6] + "z" + rid[7:],  # the tester's: one character off, not hex
        rid[:3] + "zz" + rid[5:],  # two off (32 characters: two allowed)
        rid[:10] + rid[11:],  # one left out
        rid[:10] + "q" + rid[10:31],  # one added (a prefix: 32 characters at most)
        rid[:12] + rid[13:] + "x",  # one left out, one added at the end
        rid[:4] + "z" + rid[5:9],  # a prefix, one off
        rid[:5] + rid[6:10],  # a prefix, one left out
    ]
    for typed in typos:
        with pytest.raises(bn.ConfigurationError) as caught:
            await wf.run(run_id=typed, display=False)
        message = str(caught.value)
        assert f"run_id {typed!r} names no stored run, but run {rid}" in message, message
        assert f"To resume it: run_id={rid!r}" in message, message
    assert await _runs_of(db_url, wf.name) == [rid]
    nightly = await wf.run(run_id=f"nightly-{unique}-2026-12-07", display=False)
    next_night = await wf.run(run_id=f"nightly-{unique}-2026-12-08", display=False)
    three_off = await wf.run(run_id="zzz" + rid[3:], display=False)  # three apart: new
    assert sorted(await _runs_of(db_url, wf.name)) == sorted(
        [rid, nightly.id, next_night.id, three_off.id]
    )


async def test_a_run_id_mistyped_with_a_separator_a_doubled_character_or_spaces_is_refused(
    db_url: str, unique: str
) -> None:
    """One-edit typos the guard let through before (a new paid run): ``-`` typed for a
    character in the full id or a 12-character prefix (any separator made the id a name
    of the user's), a character doubled in the full id (33 characters: longer than a
    made id), the id pasted with a space or newline around it. The whitespace is said."""
    wf = bn.Workflow(f"typo-sep-{unique}", db=db_url)
    wf.add("a", _const)
    rid = (await wf.run(display=False)).id
    typos = [
        rid[:10] + "-" + rid[11:],  # '-' for a character of the full id
        rid[:30] + "-" + rid[31],  # next to last
        rid[:8] + "-" + rid[9:12],  # in a 12-character prefix
        rid[:11] + "-",  # the prefix's last character
        rid[:10] + rid[10] + rid[10:],  # a character doubled: 33 characters
        rid[:10] + "zz" + rid[10:],  # two added: 34 characters
    ]
    for typed in typos:
        with pytest.raises(bn.ConfigurationError) as caught:
            await wf.run(run_id=typed, display=False)
        message = str(caught.value)
        assert f"run_id {typed!r} names no stored run, but run {rid}" in message, message
        assert f"To resume it: run_id={rid!r}" in message, message
    for typed in (f"{rid}\n", f" {rid}", f"{rid} ", f"{rid[:12]}\n"):
        with pytest.raises(bn.ConfigurationError, match="whitespace around it") as caught:
            await wf.run(run_id=typed, display=False)
        assert f"To resume it: run_id={rid!r}" in str(caught.value)
    with pytest.raises(bn.ConfigurationError, match=r"whitespace around it.*left out"):
        await wf.run(run_id=f"{rid[:6]}z{rid[7:]}\n", display=False)
    chosen = (await wf.run(run_id=f"nightly-{unique}", display=False)).id  # a user's own id
    with pytest.raises(bn.ConfigurationError, match=f"To resume it: run_id={chosen!r}"):
        await wf.run(run_id=f"{chosen}\n", display=False)
    assert sorted(await _runs_of(db_url, wf.name)) == sorted([rid, chosen])


async def test_ids_built_from_a_stored_id_start_new_runs(db_url: str, unique: str) -> None:
    """A stored id with characters added after it, or a prefix of it and a separator: a
    name of the user's own (made ids are 32 hex characters, no separator), a new run as
    before the typo guard compared them; a same-length id one non-hex letter off is
    still a typo (the tester's ``5d9c6z7e...`` for ``5d9c647e...``)."""
    wf = bn.Workflow(f"built-{unique}", db=db_url)
    wf.add("a", _const)
    rid = (await wf.run(display=False)).id
    built = [
        f"{rid}-2",
        f"{rid}b",
        f"{rid[:16]}-b",
        f"{rid[:16]}_2",
        f"{rid[:16]}.2",
        f"{rid[:16]}:2",
        f"{rid[:16]} 2",
    ]
    for run_id in built:
        run = await wf.run(run_id=run_id, display=False)
        assert run.id == run_id and run.status == "completed"
    assert sorted(await _runs_of(db_url, wf.name)) == sorted([rid, *built])
    stored = f"5d9c647e{uuid.uuid4().hex[8:]}"  # the tester's id, a run named so
    await wf.run(run_id=stored, display=False)
    typed = stored[:5] + "z" + stored[6:]  # 5d9c6z7e...
    with pytest.raises(bn.ConfigurationError, match=f"To resume it: run_id={stored!r}"):
        await wf.run(run_id=typed, display=False)


class _Statements:
    """The SQL every engine of this process sends while the block runs (SQLAlchemy's
    ``before_cursor_execute`` event, on the Engine class: the engine a run opens too)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(statement)

    def __enter__(self) -> _Statements:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._seen)

    def newest_runs_read(self) -> list[str]:
        """The reads of a workflow's newest runs (the typo guard's)."""
        return [s for s in self.sent if "ORDER BY workflow_runs.created_at DESC" in s]


async def test_the_typo_guard_reads_only_ids_and_only_for_an_id_that_may_be_a_typo(
    db_url: str, unique: str
) -> None:
    """Each new id of 6 to 34 characters loaded the workflow's 1,000 newest runs in full
    (params included) before: no query now for an id that cannot be a typo of a made
    id (more non-hex characters, separators included, than the edits allowed, longer
    than a made id and two added), and only the ids for one that can."""
    wf = bn.Workflow(f"guard-cost-{unique}", db=db_url)
    wf.add("a", _const)
    await wf.run(params={"text": "x" * 10_000}, display=False)
    for run_id in (f"nightly-{unique}", f"{unique}-exp-1", f"results{unique}zz", "x" * 33):
        with _Statements() as seen:
            await wf.run(run_id=run_id, display=False)
        assert seen.newest_runs_read() == [], (run_id, seen.newest_runs_read())
    with _Statements() as seen:
        await wf.run(run_id=f"{unique}abcdef12", display=False)  # hex: may be a prefix typo
    [read] = seen.newest_runs_read()
    assert read.startswith("SELECT workflow_runs.id \nFROM workflow_runs"), read


async def test_run_id_of_another_workflows_run_is_an_error(db_url: str, unique: str) -> None:
    one = bn.Workflow(f"first-{unique}", db=db_url)
    one.add("a", _const)
    run = await one.run(display=False)
    two = bn.Workflow(f"second-{unique}", db=db_url)
    two.add("a", _const)
    for typed in (run.id, run.id[:10]):  # the full id or a prefix: never a new run shadowing it
        with pytest.raises(bn.ConfigurationError, match=f"belongs to workflow 'first-{unique}'"):
            await two.run(run_id=typed, display=False)
    assert await _runs_of(db_url, two.name) == []


async def _runs_of(db_url: str, workflow: str) -> list[str]:
    async with await Store.open(db_url) as store:
        return [r.id for r in await store.list_runs(workflow=workflow)]


async def test_resume_with_other_workflow_is_refused(sqlite_url: str) -> None:
    wf = bn.Workflow("one", db=sqlite_url)
    wf.add("a", _fail_once, max_attempts=1)
    run = await wf.run(display=False)
    other = bn.Workflow("two", db=sqlite_url)
    other.add("a", _const)
    with pytest.raises(bn.ConfigurationError, match="belongs to workflow 'one'"):
        await other.run(run_id=run.id, display=False)
    changed = bn.Workflow("one", db=sqlite_url)
    changed.add("a", _const)
    changed.add("z", _const)
    with pytest.raises(bn.ConfigurationError, match="new here: \\['z'\\]"):
        await changed.run(run_id=run.id, display=False)


async def test_cancel_leaves_a_resumable_run(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"cancel-{unique}", db=db_url)
    started = anyio.Event()
    hang = True

    @wf.step()
    async def quick(ctx: bn.Context) -> str:
        return "q"

    @wf.step(deps=["quick"])
    async def slow(ctx: bn.Context) -> str:
        started.set()
        if hang:
            await anyio.sleep(30)
        return "s"

    @wf.step(deps=["slow"])
    async def final(ctx: bn.Context) -> str:
        return "f"

    finished: list[bn.WorkflowFinished] = []
    result: list[bn.Run] = []

    async def run_it() -> None:
        result.append(await wf.run(params={"n": 1}, display=False))

    async with bn.events.subscribe(bn.topic_all()) as stream, anyio.create_task_group() as tg:
        tg.start_soon(run_it)
        await started.wait()
        current = await _active_run(stream)
        assert wf.last_run is current  # the live Run from its start (DESIGN §4)
        wf.last_run.cancel()
        async for event in stream:
            if isinstance(event, bn.WorkflowFinished) and event.workflow_label == wf.name:
                finished.append(event)
                break
    run = result[0]
    assert run.status == "cancelled" and finished[0].outcome == "cancelled"
    assert run.steps["quick"].state == "completed"
    assert run.steps["slow"].state == "cancelled" and run.steps["final"].state == "pending"
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.status == "cancelled"
    hang = False
    with pytest.raises(bn.ConfigurationError, match="reuses them"):
        await wf.run(run_id=run.id, params={"n": 2}, display=False)
    resumed = await wf.run(run_id=run.id, display=False)
    assert resumed.status == "completed" and resumed.results["final"] == "f"


async def test_cancel_once_every_step_committed_leaves_the_run_completed(
    db_url: str, unique: str
) -> None:
    """A cancel that arrives after the last step's commit (the widget's button clicked as
    the run ends) finds nothing to cancel: the run is completed, not recorded cancelled."""
    from baton_nb.runtime import active_run

    wf = bn.Workflow(f"late-cancel-{unique}", db=db_url)
    wf.add("only", _const)
    result: list[bn.Run] = []
    outcomes: list[str] = []

    async def run_it() -> None:
        result.append(await wf.run(display=False))

    async with bn.events.subscribe(bn.topic_all()) as stream, anyio.create_task_group() as tg:
        tg.start_soon(run_it)
        async for event in stream:
            if isinstance(event, bn.StepUpdated) and event.state == "completed":
                live = active_run(event.workflow_id)
                assert live is not None
                live.cancel()  # the step is committed: nothing is executing any more
            elif isinstance(event, bn.WorkflowFinished) and event.workflow_label == wf.name:
                outcomes.append(event.outcome)
                break
    run = result[0]
    assert outcomes == ["completed"] and run.status == "completed"
    assert (await bn.Run.load(run.id, db=db_url)).status == "completed"


async def test_outer_cancellation_like_a_kernel_interrupt(db_url: str, unique: str) -> None:
    wf = bn.Workflow(f"interrupt-{unique}", db=db_url)
    started = anyio.Event()

    @wf.step()
    async def slow(ctx: bn.Context) -> str:
        started.set()
        await anyio.sleep(30)
        return "never"

    async with anyio.create_task_group() as tg:
        tg.start_soon(wf.run)
        await started.wait()
        tg.cancel_scope.cancel()  # what ipykernel does to the cell on interrupt
    async with await Store.open(db_url) as store:
        rows = await store.list_runs(workflow=wf.name)
        assert [r.status for r in rows] == ["cancelled"]
        assert rows[0].lease_owner is None
        nodes = await store.get_nodes(rows[0].id)
        assert nodes[0].state == "cancelled"


async def test_run_with_no_ready_work_left_finishes(sqlite_url: str) -> None:
    wf = bn.Workflow("single", db=sqlite_url)
    wf.add("only", _const)
    run = await wf.run(display=False)
    assert run.status == "completed" and run.results == {"only": "const"}


async def _const(ctx: bn.Context) -> str:
    return "const"


async def _fail_once(ctx: bn.Context) -> str:
    raise RuntimeError("fail")


async def _active_run(stream: bn.events.Subscription) -> bn.Run:
    """The live Run object, found through the runtime's public handle of the workflow."""
    from baton_nb.runtime import active_run

    async for event in stream:
        if isinstance(event, bn.StepUpdated):
            run = active_run(event.workflow_id)
            if run is not None:
                return run
    raise AssertionError("no run seen")


async def test_resume_after_map_key_changed_settles_the_old_children(
    db_url: str, unique: str
) -> None:
    name = f"map-key-edit-{unique}"
    failing = {"on": True}

    def build(key: Any) -> bn.Workflow:
        wf = bn.Workflow(name, db=db_url)

        @wf.step()
        async def src(ctx: bn.Context) -> list[str]:
            return ["a", "b", "c"]

        @wf.step(map_over="src", map_key=key, max_attempts=1)
        async def work(ctx: bn.Context) -> str:
            if ctx.item == "b" and failing["on"]:
                raise RuntimeError("boom")
            return str(ctx.item).upper()

        return wf

    first = await build(lambda item: item).run(display=False)
    assert first.status == "failed"
    failing["on"] = False
    with anyio.fail_after(20):  # the key edited in the notebook before resuming
        again = await build(lambda item: f"k_{item}").run(run_id=first.id, display=False)
    assert again.status == "completed" and again.results["work"] == ["A", "B", "C"]
    stored = await bn.Run.load(first.id, db=db_url)
    assert stored.steps["work[b]"].state == "cancelled"
    assert "no longer an item" in (stored.steps["work[b]"].error or "")
    assert stored.steps["work[k_b]"].state == "completed"


async def test_met_quorum_cancels_children_waiting_to_run_again(db_url: str, unique: str) -> None:
    runs: dict[str, int] = {}
    wf = bn.Workflow(f"quorum-waiting-{unique}", db=db_url)

    @wf.step(models=["mock/a", "mock/b", "mock/c"], quorum=1, backoff=lambda attempt: 1.0)
    async def fan(ctx: bn.Context) -> Any:
        runs[ctx.step] = runs.get(ctx.step, 0) + 1
        if ctx.model == "mock/a":
            await anyio.sleep(0.2)
            return "a"
        if ctx.model == "mock/b":
            return bn.Snooze(1.0)
        raise RuntimeError("c fails, retries after a backoff")

    run = await wf.run(display=False)
    assert run.status == "completed" and run.results["fan"] == {"mock/a": "a"}
    assert runs == {"fan[mock/a]": 1, "fan[mock/b]": 1, "fan[mock/c]": 1}  # none woke to rerun
    for child in ("fan[mock/b]", "fan[mock/c]"):
        assert run.steps[child].state == "cancelled"
        assert "quorum" in (run.steps[child].error or "")


async def test_a_callback_that_logs_as_the_run_settles_does_not_hang_it(db_url: str) -> None:
    """The last settled step's callback writes a log row (a write nobody waits for) just
    before the run ends: the writer must still stop (it used to wait for ever)."""
    wf = bn.Workflow(f"log-on-cancel-{uuid.uuid4().hex[:8]}", db=db_url)

    async def cancelled(reason: str, ctx: bn.Context) -> None:
        ctx.log("told", reason=reason)

    @wf.step(max_attempts=1)
    async def broken(ctx: bn.Context) -> None:
        raise RuntimeError("no")

    @wf.step(deps=["broken"], on_dep_discarded=cancelled)
    async def after(ctx: bn.Context) -> None:
        return None

    with anyio.fail_after(20):
        run = await wf.run(display=False)
    assert run.status == "failed"
    assert [entry["message"] for entry in run.context("after")] == ["told"]
    stored = await bn.Run.load(run.id, db=db_url)
    assert [entry["message"] for entry in stored.context("after")] == ["told"]


def _map_workflow(name: str, db_url: str, bad: set[int], runs: list[int], **options: Any) -> Any:
    wf = bn.Workflow(name, db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(12))

    @wf.step(map_over="items", max_attempts=1, **options)
    async def work(ctx: bn.Context) -> int:
        runs.append(ctx.item)
        if ctx.item in bad:
            raise ValueError(f"bad item {ctx.item}")
        return int(ctx.item) * 10

    @wf.step()
    async def total(ctx: bn.Context, work: list[int]) -> int:
        return sum(work)

    return wf


async def test_map_items_fail_alone_and_resume_reruns_only_the_failed(
    db_url: str, unique: str
) -> None:
    """DESIGN §4 Fan-out: a failed item never cancels its siblings (concurrency 2: ten wait
    for a slot when item 1 fails); the group settles once all did, its error counts what
    the database holds; a resume runs only the failed items."""
    runs: list[int] = []
    wf = _map_workflow(f"map-alone-{unique}", db_url, {1, 7}, runs)
    run = await wf.run(display=False, concurrency=2)
    assert run.status == "failed" and sorted(runs) == list(range(12))
    states = {n: s.state for n, s in run.steps.items() if n.startswith("work[")}
    assert sorted(n for n, s in states.items() if s != "completed") == ["work[1]", "work[7]"]
    assert run.steps["work"].state == "discarded"
    assert run.steps["work"].error == "2 of 12 failed: work[1], work[7]"
    assert run.steps["total"].state == "cancelled"
    stored = await bn.Run.load(run.id, db=db_url)
    assert stored.counts().completed == run.counts().completed == 1 + 10
    assert stored.counts()["discarded"] == 2
    runs.clear()
    fixed = _map_workflow(f"map-alone-{unique}", db_url, set(), runs)
    again = await fixed.run(run_id=run.id, display=False, concurrency=2)
    assert again.status == "completed" and sorted(runs) == [1, 7]
    assert again.results["total"] == sum(range(12)) * 10


async def test_map_fail_fast_cancels_the_siblings(db_url: str, unique: str) -> None:
    runs: list[int] = []
    wf = _map_workflow(f"map-fast-{unique}", db_url, {0}, runs, fail_fast=True)
    run = await wf.run(display=False, concurrency=1)
    assert run.status == "failed" and runs == [0]
    assert all(run.steps[f"work[{i}]"].state == "cancelled" for i in range(1, 12))
    assert run.steps["work"].error == (
        "1 of 12 failed: work[0] (fail_fast: the 11 not finished are cancelled)"
    )


async def test_map_quorum_met_still_cancels_the_rest(db_url: str, unique: str) -> None:
    runs: list[int] = []
    wf = _map_workflow(f"map-quorum-{unique}", db_url, {0}, runs, quorum=3)
    run = await wf.run(display=False, concurrency=1)
    assert run.status == "completed" and runs == [0, 1, 2, 3]
    assert run.results["total"] == 60
    assert all(run.steps[f"work[{i}]"].state == "cancelled" for i in range(4, 12))


def test_fail_fast_needs_a_fan_out() -> None:
    wf = bn.Workflow("ff")
    with pytest.raises(bn.ConfigurationError, match="fail_fast=True needs map_over= or models="):
        wf.add("a", _const, fail_fast=True)
    with pytest.raises(bn.ConfigurationError, match="fail_fast must be True or False"):
        wf.add("b", _const, models=["mock/a"], fail_fast="yes")


@pytest.mark.parametrize("where", ["db", "memory"])
async def test_each_attempt_keeps_its_error_and_duration(
    db_url: str, unique: str, where: str
) -> None:
    """Retry history (issue 12): the two failed attempts of a flaky step, then the one
    that completed, on the live Run and read back (SQLite, Postgres, memory://)."""
    db = db_url if where == "db" else f"memory://attempts-{unique}"
    wf = bn.Workflow(f"attempts-{unique}", db=db)
    tries = {"n": 0}

    @wf.step(max_attempts=3, backoff=lambda attempt: 0.0)
    async def flaky(ctx: bn.Context) -> str:
        tries["n"] += 1
        if tries["n"] < 3:
            raise ConnectionError(f"try {tries['n']} failed")
        return "ok"

    @wf.step(max_attempts=2, backoff=lambda attempt: 0.0)
    async def broken(ctx: bn.Context) -> str:
        raise ValueError(f"broken at attempt {ctx.attempt}")

    @wf.step()
    async def fine(ctx: bn.Context) -> str:
        return "fine"

    run = await wf.run(display=False)
    stored = await bn.Run.load(run.id, db=db)
    for seen in (run, stored):
        history = [(a.attempt, a.state, a.error) for a in seen.steps["flaky"].attempts]
        assert history == [
            (1, "retryable", "ConnectionError: try 1 failed"),
            (2, "retryable", "ConnectionError: try 2 failed"),
            (3, "completed", None),
        ]
        assert [(a.attempt, a.state, a.error) for a in seen.steps["broken"].attempts] == [
            (1, "retryable", "ValueError: broken at attempt 1"),
            (2, "discarded", "ValueError: broken at attempt 2"),
        ]
        assert seen.steps["fine"].attempts == []
        assert all(a.duration >= 0 for a in seen.steps["flaky"].attempts)
