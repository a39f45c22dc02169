"""What a budget counts for attempts that reached the provider without an answer (a
timeout, a dropped connection), and how long identical calls wait for each other: against
the fake provider server, on SQLite and Postgres (``db_url``)."""

from __future__ import annotations

import decimal
import json
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.pricing import _registry
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o"  # $2.50 / 1M input, $10 / 1M output
OUT = 1000


def _output_worst() -> Decimal:
    """The output side of a call's worst case (its prompt side comes on top)."""
    cost = bn.price(MODEL, bn.Usage(output_tokens=OUT))
    assert cost is not None
    return cost


def _one_call(name: str, db_url: str, timeout: float) -> bn.Workflow:
    wf = bn.Workflow(name, db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(model=MODEL, prompt="hi", max_tokens=OUT, timeout=timeout)
        return answer.text

    return wf


def _two_calls(name: str, db_url: str) -> bn.Workflow:
    """A map of two calls, each with a 0.2 s timeout and one step attempt."""
    wf = bn.Workflow(name, db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1]

    @wf.step(map_over="items", max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(model=MODEL, prompt="hi", max_tokens=OUT, timeout=0.2)
        return answer.text

    return wf


async def _stored_spent(run_id: str, db_url: str) -> Decimal:
    stored = await bn.Run.load(run_id, db=db_url)
    assert stored.spend is not None and stored.spend.reserved == 0
    return stored.spend.spent


async def test_attempts_that_time_out_are_counted_at_their_worst(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Every attempt reached the provider (which may bill it) and timed out: the call
    fails and settles at its worst case once per attempt, not at $0."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(*[Reply(delay=0.6) for _ in range(5)])
    run = await _one_call(f"timeouts-{unique}", db_url, 0.2).run(budget="1", display=False)
    assert run.status == "failed"
    attempts = fake_providers.request_count
    assert attempts == 5
    assert run.spend is not None and run.spend.reserved == 0
    worst = run.spend.spent / attempts  # each attempt at the call's worst case
    assert worst > _output_worst()
    assert await _stored_spent(run.id, db_url) == run.spend.spent


async def test_an_answer_after_timeouts_counts_them_too(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(delay=0.6), Reply(delay=0))
    run = await _one_call(f"late-{unique}", db_url, 0.2).run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 3
    lost, call = sorted(run.calls, key=lambda c: not c.estimated)
    assert call.cost is not None and not call.estimated
    # the 2 timed-out attempts: recorded at their worst, 0 tokens, estimated
    assert lost.estimated and lost.usage.total_tokens == 0 and lost.cost is not None
    assert lost.cost > 2 * _output_worst()
    assert run.spend is not None and run.spend.spent == call.cost + lost.cost
    assert await _stored_spent(run.id, db_url) == run.spend.spent
    stored = await bn.Run.load(run.id, db=db_url)
    assert sorted(c.cost for c in stored.calls if c.cost) == sorted([call.cost, lost.cost])


async def test_a_retry_the_budget_cannot_cover_is_not_sent(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """The first attempt timed out: it may be billed at its worst (~$0.010), so a retry
    needs a second worst case reserved; $0.015 holds one: the retry is not sent, the run
    stops (cancelled, resumable) and the cap holds."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(delay=0))
    run = await _one_call(f"uncovered-{unique}", db_url, 0.2).run(budget="0.015", display=False)
    assert run.status == "cancelled", run.failed_steps
    assert fake_providers.request_count == 1  # the retry never went out
    assert run.spend is not None and run.spend.reserved == 0
    assert _output_worst() < run.spend.spent <= Decimal("0.015")
    assert run.budget_stop is not None and "retry" in run.budget_stop
    assert await _stored_spent(run.id, db_url) == run.spend.spent


async def test_retries_after_timeouts_stay_within_the_budget(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Two attempts timed out ($0.020 counted): a third would need $0.030 held; with a
    $0.025 cap it is not sent, and what is counted never passes the cap."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(delay=0.6), Reply(delay=0))
    run = await _one_call(f"within-{unique}", db_url, 0.2).run(budget="0.025", display=False)
    assert run.status == "cancelled", run.failed_steps
    assert fake_providers.request_count == 2
    assert run.spend is not None and run.spend.reserved == 0
    assert 2 * _output_worst() < run.spend.spent <= Decimal("0.025")
    assert await _stored_spent(run.id, db_url) == run.spend.spent


async def test_two_retries_waiting_for_room_do_not_wait_for_each_other(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Two calls in flight hold a worst case each and both time out: each retry needs one
    more, the $0.025 cap has room for neither. A retry never waits for room (the other
    could be waiting for it): both are refused at once, unsent, and the run stops."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(delay=0.6), Reply(), Reply())
    wf = _two_calls(f"two-retries-{unique}", db_url)
    with anyio.fail_after(30):
        run = await wf.run(budget="0.025", display=False)
    assert run.status == "cancelled", run.failed_steps
    assert fake_providers.request_count == 2
    assert run.spend is not None and run.spend.reserved == 0
    assert 2 * _output_worst() < run.spend.spent <= Decimal("0.025")


async def test_a_retry_holding_the_provider_slot_does_not_wait_for_room(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """bn.Limit(concurrency=1): call A holds the only slot and times out; its retry does
    not fit the $0.025 cap beside call B's reservation, and B waits for A's slot. Waiting
    for room there would wait forever: the retry is refused at once, the run stops."""
    bn.configure(limits={"openai": bn.Limit(concurrency=1)})
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(), Reply(), Reply())
    wf = _two_calls(f"slot-{unique}", db_url)
    with anyio.fail_after(30):
        run = await wf.run(budget="0.025", display=False)
    assert run.status == "cancelled", run.failed_steps
    assert run.budget_stop is not None and "retry" in run.budget_stop
    assert fake_providers.request_count == 2  # A's attempt, then B's call (reserved before)
    assert run.spend is not None and run.spend.reserved == 0
    assert run.spend.spent <= Decimal("0.025")
    assert await _stored_spent(run.id, db_url) == run.spend.spent


async def test_a_covered_retry_leaves_nothing_reserved(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A worst case with digits past the budget's unit (10^-12 USD: a price file's
    $0.1234561 a million input tokens), reserved twice (the retry's) and released at once:
    what is released is what was reserved, to the unit."""
    path = tmp_path / "prices.json"
    model = {"periods": [{"from": "2020-01-01", "input": "0.1234561", "output": "10"}]}
    path.write_text(
        json.dumps({"providers": [{"provider": "openai", "models": {"gpt-4o": model}}]})
    )
    bn.configure(pricing=str(path))
    request.addfinalizer(_registry.reset)  # the price file is the process's, not the next test's
    fake_providers.usage = FakeUsage(input=10, output=10)
    fake_providers.script(Reply(delay=0.6), Reply())
    run = await _one_call(f"units-{unique}", db_url, 0.2).run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 2
    assert run.spend is not None and run.spend.reserved == 0
    await _stored_spent(run.id, db_url)  # asserts nothing stays reserved


async def test_budgets_add_up_under_a_notebooks_decimal_precision(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A notebook set decimal's precision to 3 digits for display: the reservations, the
    retry's included, are still summed and released exactly."""
    fake_providers.usage = FakeUsage(input=10, output=10)
    fake_providers.script(Reply(delay=0.6), Reply())
    wf = _one_call(f"prec-{unique}", db_url, 0.2)
    with decimal.localcontext() as context:
        context.prec = 3
        run = await wf.run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert run.spend is not None and run.spend.reserved == 0
    lost, call = sorted(run.calls, key=lambda c: not c.is_unanswered)
    assert lost.cost is not None and call.cost is not None
    assert run.spend.spent == call.cost + lost.cost
    assert await _stored_spent(run.id, db_url) == run.spend.spent


async def test_a_resume_counts_what_calls_given_up_on_were_counted_at(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Step a gives up on its call in flight (counted at its worst, $0.04); b's call does
    not fit the $0.05 left: the run stops. Resumed with the same budget, the $0.04 is
    still counted (recorded with the run's calls): b's call is still refused, unsent."""
    fake_providers.usage = FakeUsage(input=10, output=4000)
    fake_providers.script(Reply(delay=3.0))
    wf = bn.Workflow(f"resume-lost-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def a(ctx: bn.Context) -> str:
        with anyio.move_on_after(0.5):
            await ctx.complete(model=MODEL, prompt="x", max_tokens=4000)
        return "gave up"

    @wf.step(max_attempts=1)
    async def b(ctx: bn.Context, a: str) -> str:
        return (await ctx.complete(model=MODEL, prompt="y", max_tokens=4000)).text

    first = await wf.run(budget="0.05", display=False)
    assert first.status == "cancelled" and first.spend is not None
    spent = first.spend.spent
    assert spent > Decimal("0.04")
    second = await wf.run(run_id=first.id, budget="0.05", display=False)
    assert second.status == "cancelled", second.failed_steps
    assert second.spend is not None and second.spend.spent == spent
    assert fake_providers.request_count == 1  # b's call never sent


async def test_an_error_status_is_not_billed(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A 500 is the provider's answer: it generated nothing, nothing is counted for it."""
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(status=500, message="overloaded"), Reply())
    run = await _one_call(f"status-{unique}", db_url, 5).run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 2
    (call,) = run.calls  # no record of the 500: nothing counted for it
    assert run.spend is not None and run.spend.spent == call.cost


def _identical(name: str, db_url: str, **complete: object) -> bn.Workflow:
    wf = bn.Workflow(name, db=db_url, cache=True)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1]

    @wf.step(map_over="items", max_attempts=1)
    async def ask(ctx: bn.Context) -> list[object]:
        prompt = f"same {name}"  # the cache is the database's: one prompt per test
        answer = await ctx.complete(model=MODEL, prompt=prompt, max_tokens=100, **complete)  # type: ignore[arg-type]
        return [answer.cached, str(answer.cost)]

    return wf


async def test_an_identical_call_waits_for_a_leader_that_retries_past_its_timeout(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """The leader's first attempt is a 500 after 0.4 s, its retry answers 0.4 s later:
    longer than the waiter's timeout (0.6 s), and still one paid call."""
    fake_providers.script(Reply(status=500, delay=0.4, message="overloaded"), Reply(delay=0.4))
    run = await _identical(f"wait-{unique}", db_url, timeout=0.6).run(display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 2  # the leader's 500 and its retry
    assert sorted(cached for cached, _ in run.results["ask"]) == [False, True]


async def test_an_identical_call_waits_for_a_stream_longer_than_its_timeout(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A stream's timeout bounds each chunk: a healthy stream outlasts it."""
    fake_providers.chunk_delay = 0.05
    fake_providers.script(Reply(text=" ".join(["word"] * 12)))
    run = await _identical(f"stream-{unique}", db_url, timeout=0.3, stream=True).run(display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1
    assert sorted(cached for cached, _ in run.results["ask"]) == [False, True]
