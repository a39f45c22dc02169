"""Budget caps (DESIGN §11), against the fake provider server: what was sent and paid.

Each test counts the requests the fake server answered and what they cost, on SQLite and
Postgres (``db_url``).
"""

from __future__ import annotations

import types
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.llm import Limit, configure
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o"  # $2.50 / 1M input, $10 / 1M output
OUT = 1000  # tokens each answer reports (= max_tokens: the worst case is reached)


def _per_call() -> Decimal:
    cost = bn.price(MODEL, bn.Usage(input_tokens=10, output_tokens=OUT))
    assert cost is not None
    return cost


def _fan_out(name: str, db_url: str, items: int, **workflow: object) -> bn.Workflow:
    wf = bn.Workflow(name, db=db_url, **workflow)  # type: ignore[arg-type]

    @wf.step()
    async def items_(ctx: bn.Context) -> list[int]:
        return list(range(items))

    @wf.step(map_over="items_", max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(model=MODEL, prompt=f"item {ctx.item}", max_tokens=OUT)
        return answer.text

    return wf


async def test_200_calls_in_flight_never_overshoot_and_resume_buys_nothing_twice(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.latency = 0.2  # every call is in flight when the cap is reached
    per_call = _per_call()  # $0.010025
    wf = _fan_out(f"budget-{unique}", db_url, 200)

    first = await wf.run(budget="1.00", concurrency=200, display=False)
    sent = fake_providers.request_count
    assert first.status == "cancelled"
    assert first.spend is not None and first.spend.reason is not None
    assert first.spend.reason.startswith("budget reached")
    assert 0 < sent < 200
    assert per_call * sent <= Decimal("1.00")  # paid at the fake server
    # a refused call waited for the calls in flight to settle: the budget is used up to
    # less than one call's worst case (~$0.01005), not stopped at the first refusal
    assert Decimal("1.00") - per_call * sent < Decimal("0.0101")
    assert first.known_cost == per_call * sent  # every paid answer stored
    assert first.spend.spent == per_call * sent and first.spend.reserved == 0
    loaded = await bn.Run.load(first.id, db=db_url)  # what stopped it is stored
    assert loaded.spend is not None and loaded.spend.reason == first.spend.reason
    assert loaded.spend.spent == first.spend.spent

    second = await wf.run(run_id=first.id, budget="5", concurrency=200, display=False)
    assert second.status == "completed", second.failed_steps
    assert fake_providers.request_count == 200  # nothing bought twice
    assert second.known_cost == per_call * 200
    assert second.spend is not None and second.spend.spent == per_call * 200
    assert second.spend.budget == Decimal(5) and second.spend.reason is None


async def test_step_budget_and_workflow_budget(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    per_call = _per_call()
    wf = bn.Workflow(f"step-budget-{unique}", db=db_url, budget="100")

    @wf.step(budget="0.025", max_attempts=1)  # room for two calls' worst case
    async def ask(ctx: bn.Context) -> list[str]:
        return [
            (await ctx.complete(model=MODEL, prompt=f"q{i}", max_tokens=OUT)).text for i in range(5)
        ]

    run = await wf.run(display=False)
    assert run.status == "cancelled"
    assert fake_providers.request_count == 2
    assert run.known_cost == per_call * 2
    assert run.spend is not None and "step 'ask'" in (run.spend.reason or "")


@pytest.mark.filterwarnings("ignore::baton_nb.pricing.UnknownPriceWarning")
async def test_unpriced_model_refused_before_sending_unless_allowed(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    for allow in (False, True):
        wf = bn.Workflow(f"unpriced-{allow}-{unique}", db=db_url, allow_unpriced=allow)

        @wf.step(max_attempts=1)
        async def ask(ctx: bn.Context) -> str:
            answer = await ctx.complete(
                model="openai/no-such-model-xyz", prompt="hi", max_tokens=10
            )
            return answer.text

        run = await wf.run(budget="1", display=False)
        if allow:
            assert run.status == "completed" and fake_providers.request_count == 1
        else:
            assert run.status == "failed" and fake_providers.request_count == 0
            error = run.steps["ask"].error or ""
            assert "no known price" in error and "allow_unpriced=True" in error


async def test_budget_needs_max_tokens(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    wf = bn.Workflow(f"no-max-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi")).text

    run = await wf.run(budget="1", display=False)
    assert run.status == "failed" and fake_providers.request_count == 0
    assert "max_tokens" in (run.steps["ask"].error or "")


async def test_no_budget_no_rows(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    wf = bn.Workflow(f"free-{unique}", db=db_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt="hi")).text

    run = await wf.run(display=False)
    assert run.status == "completed" and run.spend is None
    store = await bn.store.Store.open(db_url)  # type: ignore[attr-defined]
    try:
        assert await store.get_budgets(run.id) == []
    finally:
        await store.close()


def test_budget_values_are_checked() -> None:
    for bad in ("-1", "abc", True, [1], "1e9", float("nan")):
        with pytest.raises(bn.ConfigurationError, match="budget"):
            bn.Workflow("bad", budget=bad)  # type: ignore[arg-type]
    assert bn.Workflow("ok", budget=2.5).budget == Decimal("2.5")


@pytest.mark.parametrize("scope", ["run", "step"])
async def test_a_budget_stop_says_so_and_resumes_with_budget(
    fake_providers: FakeProviderServer, db_url: str, unique: str, scope: str
) -> None:
    """Stopped by a budget (the run's or a step's): the resume message, the repr, the
    cancelled steps' errors and the stored run say the budget did it, and the line they
    give says budget= (resuming without it stops again at once, saying so again)."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    wf = bn.Workflow(f"budget-says-{scope}-{unique}", db=db_url)

    @wf.step(budget="0.025" if scope == "step" else None, max_attempts=1)
    async def ask(ctx: bn.Context) -> list[str]:
        return [
            (await ctx.complete(model=MODEL, prompt=f"q{i}", max_tokens=OUT)).text for i in range(5)
        ]

    @wf.step()
    async def after(ctx: bn.Context, ask: list[str]) -> int:
        return len(ask)

    budget = "0.025" if scope == "run" else None
    first = await wf.run(budget=budget, display=False)
    assert first.status == "cancelled" and fake_providers.request_count == 2
    why = first.budget_stop or ""
    if scope == "run":
        assert first.spend is not None and first.spend.reason == why
        line = f'await wf.run(run_id="{first.id}", budget=...)'
    else:
        assert "Raise the budget of step 'ask' (@wf.step(budget=...)" in why
        assert why.startswith("budget reached: the budget of step 'ask' ($")  # not 'ask''s
        assert first.spend is None  # the run has no budget of its own (docs/spend_less.md)
        line = f'await wf.run(run_id="{first.id}")'
    assert why.startswith("budget reached") and why.endswith(line)
    message = first.resume_message("flow")
    assert "stopped by a budget" in message and "Resume it" not in message
    assert message.endswith(why.replace("await wf.run(", "await flow.run("))
    assert "cancelled (budget reached)" in repr(first)
    assert first.steps["ask"].error == f"run cancelled: {why}"
    loaded = await bn.Run.load(first.id, db=db_url)  # the same, read back
    assert loaded.budget_stop == why and loaded.steps["ask"].error == f"run cancelled: {why}"
    assert "cancelled (budget reached)" in repr(loaded)

    again = await wf.run(run_id=first.id, display=False)  # the same budget: stops at once
    assert again.status == "cancelled" and fake_providers.request_count == 2
    assert again.budget_stop and again.budget_stop.endswith(line)
    assert "budget reached" in (again.steps["ask"].error or "")

    if scope == "run":
        done = await wf.run(run_id=first.id, budget="1", display=False)
    else:

        @wf.step(budget="1", max_attempts=1)  # the step redefined with a higher budget
        async def ask(ctx: bn.Context) -> list[str]:
            return [
                (await ctx.complete(model=MODEL, prompt=f"q{i}", max_tokens=OUT)).text
                for i in range(5)
            ]

        done = await wf.run(run_id=first.id, display=False)
    assert done.status == "completed" and done.budget_stop is None
    assert "budget reached" not in repr(done)


@pytest.mark.parametrize("cache", [False, True])
async def test_a_call_cancelled_in_flight_leaves_no_reservation(
    fake_providers: FakeProviderServer, db_url: str, unique: str, cache: bool
) -> None:
    """A call the step gives up on (its own timeout) is settled: paid at its worst case if
    its request went out (the provider may bill it), released if it never left (here:
    waiting for the provider's concurrency limit). Nothing stays reserved."""
    fake_providers.usage = FakeUsage(input=10, output=10)
    fake_providers.script(Reply(delay=3.0), Reply(delay=3.0))
    configure(limits={"openai": Limit(concurrency=1)})
    wf = bn.Workflow(f"cancelled-{unique}", db=db_url, cache=cache)
    slow_scope: list[anyio.CancelScope] = []

    @wf.step(max_attempts=1)
    async def slow(ctx: bn.Context) -> str:
        with anyio.CancelScope() as scope:  # sent, then given up on (below)
            slow_scope.append(scope)
            await ctx.complete(model=MODEL, prompt=f"slow {unique}", max_tokens=OUT)
        return "gave up"

    @wf.step(max_attempts=1)
    async def queued(ctx: bn.Context) -> str:
        while fake_providers.request_count < 1:  # slow's call holds the provider's one slot
            await anyio.sleep(0.01)
        with anyio.move_on_after(0.2):  # never sent: still waiting for the slot
            await ctx.complete(model=MODEL, prompt=f"queued {unique}", max_tokens=OUT)
        slow_scope[0].cancel()
        return "gave up"

    run = await wf.run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1  # slow's; queued's never left
    assert run.spend is not None and run.spend.reserved == 0
    worst = bn.price(MODEL, bn.Usage(input_tokens=0, output_tokens=OUT))
    assert worst is not None and run.spend.spent > worst  # slow's worst case, not 0
    rows = await bn.Run.load(run.id, db=db_url)
    assert rows.spend is not None and rows.spend.reserved == 0
    assert rows.spend.spent == run.spend.spent


async def test_budget_stop_names_the_notebooks_variable_as_the_printed_line_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a notebook whose workflow is `bud`, the printed message and ``run.budget_stop``
    give the same resume line: ``await bud.run(...)``, not ``await wf.run(...)`` in one."""
    bud = bn.Workflow("bud-named", db=f"sqlite:///{tmp_path / 'bud.db'}")

    @bud.step()
    async def ask(ctx: bn.Context) -> str:
        reply = await ctx.complete(prompt="hi", model="mock/gpt-4o", max_tokens=50)
        return str(reply.text)

    import IPython

    shell = types.SimpleNamespace(user_ns={"bud": bud})  # the notebook's namespace
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    run = await bud.run(budget="0.0001", display=False)
    assert run.status == "cancelled" and run.budget_stop is not None
    assert run.budget_stop.endswith(f'await bud.run(run_id="{run.id}", budget=...)')
    assert "await wf.run(" not in run.budget_stop
    assert run.resume_message("bud").endswith(run.budget_stop)
