"""The response cache (DESIGN §11), against the fake provider server: what was sent and
what the cache saved, on SQLite and Postgres (``db_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anyio
import pytest

import baton_nb as bn
from baton_nb._runview import cache_savings
from baton_nb.llm._config import configure
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def priced(fake_providers: FakeProviderServer) -> Iterator[FakeProviderServer]:
    fake_providers.usage = FakeUsage(input=1000, output=500)
    yield fake_providers


def _per_call() -> Decimal:
    cost = bn.price(MODEL, bn.Usage(input_tokens=1000, output_tokens=500))
    assert cost is not None and cost > 0
    return cost


def _workflow(name: str, db_url: str, *, stream: bool = False, **options: object) -> bn.Workflow:
    """Three calls. The cache is shared by the database's runs (the Postgres database by
    the whole test session): the prompts carry the test's unique suffix (``name``'s)."""
    wf = bn.Workflow(name, db=db_url, **options)  # type: ignore[arg-type]
    tag = name.rsplit("-", 1)[-1]

    @wf.step()
    async def ask(ctx: bn.Context) -> list[str]:
        out = []
        for q in ("one", "two", "three"):
            prompt = f"{q} {tag}"
            answer = await ctx.complete(model=MODEL, prompt=prompt, temperature=0, stream=stream)
            out.append(answer.text)
        return out

    return wf


async def test_a_rerun_is_answered_from_the_cache(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    first = await _workflow(f"cache-{unique}", db_url, cache=True).run(display=False)
    assert first.status == "completed" and priced.request_count == 3
    assert cache_savings(first) == (0, Decimal(0))

    # another workflow (another run) with the same requests, streamed this time
    second = await _workflow(f"cache-again-{unique}", db_url, stream=True, cache=True).run(
        display=False
    )
    assert second.status == "completed"
    assert priced.request_count == 3  # nothing sent
    assert second.results["ask"] == first.results["ask"]
    assert [c.cached for c in second.calls] == [True, True, True]
    assert second.cost == 0
    assert cache_savings(second) == (3, _per_call() * 3)
    loaded = await bn.Run.load(second.id, db=db_url)
    assert cache_savings(loaded) == (3, _per_call() * 3)
    assert all(c.saved == _per_call() and c.cost == 0 for c in loaded.calls)

    report = second.report()
    assert report.total == 0
    assert report.cached_calls == 3 and report.saved == _per_call() * 3
    csv = report.to_csv().splitlines()
    assert csv[0].endswith(",cached_calls,saved_usd,unanswered_usd,unpriced_calls")
    assert csv[1].endswith(f",3,{_per_call() * 3},0,0")


async def test_cache_is_opt_in_and_per_call(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    await _workflow(f"off-{unique}", db_url).run(display=False)
    await _workflow(f"off-{unique}", db_url).run(display=False)
    assert priced.request_count == 6  # off by default: nothing cached, nothing read

    wf = bn.Workflow(f"per-call-{unique}", db=db_url, cache=True)

    @wf.step()
    async def ask(ctx: bn.Context) -> list[str]:
        one = f"one {unique}"
        kept = await ctx.complete(model=MODEL, prompt=one, temperature=0)
        fresh = await ctx.complete(model=MODEL, prompt=one, temperature=0, cache=False)
        salted = await ctx.complete(model=MODEL, prompt=one, temperature=0, cache_salt="b")
        return [kept.text, fresh.text, salted.text]

    await wf.run(display=False)
    assert priced.request_count == 9  # the first call cached, the other two sent
    again = await wf.run(display=False)
    assert priced.request_count == 10  # only cache=False sent again
    assert [c.cached for c in again.calls] == [True, False, True]


async def test_configure_turns_the_cache_on(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    configure(cache=True)
    await _workflow(f"configured-{unique}", db_url).run(display=False)
    await _workflow(f"configured-{unique}", db_url).run(display=False)
    assert priced.request_count == 3
    off = await _workflow(f"configured-{unique}", db_url, cache=False).run(display=False)
    assert priced.request_count == 6 and not any(c.cached for c in off.calls)


async def test_cache_stats_prune_and_clear(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    wf = _workflow(f"stats-{unique}", db_url, cache=True)
    await wf.run(display=False)
    await wf.run(display=False)
    store = await bn.store.Store.open(db_url)  # type: ignore[attr-defined]
    try:
        stats = await store.cache_stats()
        assert stats.entries >= 3 and stats.hits >= 3 and stats.saved >= _per_call() * 3
        assert stats.size_bytes > 0
    finally:
        await store.close()
    dry = await bn.prune(db=db_url, older_than=None, cache_older_than="0s", dry_run=True)
    assert dry.deleted["workflow_cache"] >= 3
    result = await bn.prune(db=db_url, older_than=None, cache_older_than="0s")
    assert result.deleted["workflow_cache"] >= 3
    await wf.run(display=False)
    assert priced.request_count == 6  # pruned: asked again


async def test_budget_and_cache_together(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A cached answer costs nothing: a re-run fits in a budget of $0 (nothing reserved)."""
    wf = bn.Workflow(f"both-{unique}", db=db_url, cache=True)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt=f"q {unique}", max_tokens=500)).text

    await wf.run(budget="1", display=False)
    assert priced.request_count == 1
    run = await wf.run(budget="0", display=False)
    assert run.status == "completed" and priced.request_count == 1
    assert run.spend is not None and run.spend.spent == 0


def _dupes(name: str, db_url: str, prompt: str, n: int) -> bn.Workflow:
    """A map over ``n`` identical prompts: identical cacheable calls in flight together."""
    wf = bn.Workflow(name, db=db_url, cache=True)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [prompt] * n

    @wf.step(map_over="items", max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=MODEL, prompt=ctx.item, temperature=0)).text

    return wf


async def test_identical_calls_in_flight_are_paid_once(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Single-flight: while a cacheable call is in flight, identical ones wait for its
    answer and are answered from the cache (cost 0, counted as cached, recorded)."""
    priced.latency = 0.2  # the five calls are in flight together
    wf = _dupes(f"dupes-{unique}", db_url, f"same {unique}", 5)
    run = await wf.run(display=False)
    assert run.status == "completed" and priced.request_count == 1
    assert cache_savings(run) == (4, _per_call() * 4)
    report = run.report()
    assert report.calls == 1 and report.cached_calls == 4 and report.total == _per_call()
    loaded = await bn.Run.load(run.id, db=db_url)
    assert sorted(c.cached for c in loaded.calls) == [False, True, True, True, True]
    resumed = await wf.run(run_id=run.id, display=False)  # every call replayed: nothing paid
    assert resumed.status == "completed" and priced.request_count == 1


async def test_a_failed_leader_shares_no_error(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    """The first of identical calls fails: its error is not shared; one of the calls
    waiting for it leads the next try, the others wait for that one (not a herd)."""
    priced.latency = 0.2
    priced.script(Reply(status=400, message="bad luck"))
    run = await _dupes(f"dupes-fail-{unique}", db_url, f"fail {unique}", 5).run(display=False)
    assert priced.request_count == 2
    states = sorted(str(s.state) for name, s in run.steps.items() if name.startswith("ask["))
    assert states == ["completed"] * 4 + ["discarded"]
    assert cache_savings(run) == (3, _per_call() * 3)


async def test_a_waiting_call_waits_past_its_own_timeout_until_cancelled(
    priced: FakeProviderServer, db_url: str, unique: str
) -> None:
    """An identical call waits for the one in flight as long as it works, past its own
    ``timeout=`` (sent on its own it would pay for the same answer again); a waiting call
    cancelled (its step's own timeout) stops waiting at once, sending nothing."""
    priced.script(Reply(delay=1.0))  # the first call: slower than the others' timeout
    wf = bn.Workflow(f"dupes-timeout-{unique}", db=db_url, cache=True)
    prompt = f"same {unique}"

    @wf.step(max_attempts=1)
    async def slow(ctx: bn.Context) -> bool:
        answer = await ctx.complete(model=MODEL, prompt=prompt, temperature=0, timeout=30)
        return answer.cached

    @wf.step(max_attempts=1)
    async def patient(ctx: bn.Context) -> bool:
        while priced.request_count < 1:  # the slow call is in flight
            await anyio.sleep(0.01)
        answer = await ctx.complete(model=MODEL, prompt=prompt, temperature=0, timeout=0.3)
        return answer.cached

    @wf.step(max_attempts=1)
    async def gives_up(ctx: bn.Context) -> str:
        while priced.request_count < 1:
            await anyio.sleep(0.01)
        with anyio.move_on_after(0.2):
            await ctx.complete(model=MODEL, prompt=prompt, temperature=0, timeout=0.3)
            return "answered"
        return "gave up"

    run = await wf.run(display=False)
    assert run.status == "completed", run.failed_steps
    assert run.results["slow"] is False
    assert run.results["patient"] is True  # the slow call's answer, from the cache
    assert run.results["gives_up"] == "gave up"
    assert priced.request_count == 1


@pytest.mark.parametrize("memory", [False, True])
async def test_a_cached_run_says_so_in_its_repr_and_the_listing(
    priced: FakeProviderServer, db_url: str, unique: str, memory: bool
) -> None:
    """A run answered from the cache costs $0 with no paid call: its repr and the run
    listing (``bn.runs``, ``baton-nb runs``) say how many calls the cache answered."""
    db = f"memory://listing-{unique}" if memory else db_url
    first = await _workflow(f"listed-{unique}", db, cache=True).run(display=False)
    second = await _workflow(f"listed-again-{unique}", db, cache=True).run(display=False)
    assert priced.request_count == 3
    assert repr(first).endswith(f"cost {first.cost_text()}>")
    assert repr(second).endswith("cost $0, 3 calls from the cache>")
    listed = {r.id: r for r in await bn.runs(db=db, limit=None)}
    assert (listed[first.id].calls, listed[first.id].cached_calls) == (3, 0)
    assert (listed[second.id].calls, listed[second.id].cached_calls) == (0, 3)
    assert listed[second.id].to_dict()["cached_calls"] == 3
    table = str(await bn.runs(db=db, workflow=f"listed-again-{unique}"))
    header, row = table.splitlines()
    assert header.split()[-3:] == ["calls", "cached", "cost_usd"]
    assert row.split()[-3:] == ["0", "3", "0"]
