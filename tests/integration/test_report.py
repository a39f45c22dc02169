"""Cost reports of real runs (mock provider) on SQLite and Postgres: CSV sums against
``run.cost`` with fan-out, retries, replays and unknown prices; reports across runs."""

from __future__ import annotations

import csv
import decimal
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb._errors import ConfigurationError
from baton_nb.store import Store, WorkflowRun

pytestmark = pytest.mark.anyio

A, B, C = "mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.5-flash"
UNPRICED = "mock/no-such-model-for-reports"


def build(db: str, name: str) -> bn.Workflow:
    """Fan-out over 3 models (C fails, its retry replays its paid call; quorum 2), a flaky
    step whose retry replays, a call without a known price, and a synthesis."""
    wf = bn.Workflow(name, db=db)

    @wf.step(models=[A, B, C], quorum=2, max_attempts=2, backoff=lambda a: 0)
    async def answer(ctx: bn.Context) -> str:
        completion = await ctx.complete(prompt="what is a DAG?")
        if ctx.model == C:
            raise RuntimeError("model C is down")
        return completion.text

    @wf.step(deps=["answer"], max_attempts=2, backoff=lambda a: 0)
    async def flaky(ctx: bn.Context) -> str:
        completion = await ctx.complete(model=A, prompt="flaky call")
        if ctx.attempt == 1:
            raise RuntimeError("flaky")
        return completion.text

    @wf.step(deps=["answer"])
    async def unpriced(ctx: bn.Context) -> str:
        return (await ctx.complete(model=UNPRICED, prompt="no price")).text

    @wf.step(deps=["answer", "flaky", "unpriced"])
    async def merge(ctx: bn.Context) -> str:
        return (await ctx.synthesize(ctx.results["answer"], model=A)).text

    return wf


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A record without latency (float sums may differ in the last digit between SQL and Python)."""
    return tuple(
        v.normalize() if isinstance(v, Decimal) else v
        for k, v in record.items()
        if k != "latency_ms"
    )


@pytest.mark.filterwarnings("ignore::baton_nb.pricing.UnknownPriceWarning")
async def test_csv_sums_match_run_cost(db_url: str, unique: str) -> None:
    run = await build(db_url, f"report-{unique}").run(display=False)
    assert run.status == "completed", run.steps
    loaded = await bn.Run.load(run.id, db=db_url)
    report = run.report()
    rows = parse_csv(report.to_csv())
    by_step = {r["step"]: r for r in rows}
    assert set(by_step) == {
        f"answer[{A}]",
        f"answer[{B}]",
        f"answer[{C}]",
        "flaky",
        "unpriced",
        "merge",
    }
    assert all(r["run_id"] == run.id and r["workflow"] == f"report-{unique}" for r in rows)
    # retries answered from the store: counted apart, not paid twice
    assert (by_step["flaky"]["calls"], by_step["flaky"]["replayed_calls"]) == ("1", "1")
    assert (by_step[f"answer[{C}]"]["calls"], by_step[f"answer[{C}]"]["replayed_calls"]) == (
        "1",
        "1",
    )
    # unknown price: empty, not 0; the report says it is incomplete
    assert by_step["unpriced"]["cost_usd"] == "" and by_step["unpriced"]["model"] == UNPRICED
    assert not report.complete and report.unpriced_calls == 1
    priced = sum(Decimal(r["cost_usd"]) for r in rows if r["cost_usd"])
    assert priced == report.total == run.known_cost == loaded.known_cost > 0
    # a run with a call of unknown price has no known cost: None, never the priced part
    assert run.cost is None and loaded.cost is None and run.unpriced_calls == 1
    assert "+ 1 call of unknown price" in repr(run)
    assert sum(int(r["output_tokens"]) for r in rows) == run.tokens.output_tokens
    assert sum(int(r["calls"]) for r in rows) == sum(1 for c in run.calls if not c.replayed)
    # the same report read back with SQL aggregation
    stored = await bn.report(db_url, run_ids=[run.id])
    assert [key(r) for r in stored.to_records()] == [key(r) for r in report.to_records()]
    assert stored.total == run.known_cost and not stored.complete
    comparison = stored.fanout()["answer"]
    assert list(comparison) == [A, B, C]
    assert (comparison[C].failed, comparison[C].retries) == (1, 1)
    assert comparison[C].errors == ["RuntimeError: model C is down"]
    assert comparison[A].failed == 0 and comparison[A].cost is not None


async def test_resume_replays_paid_calls_and_reports_them_once(db_url: str, unique: str) -> None:
    fail = {"on": True}
    wf = bn.Workflow(f"resume-report-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        completion = await ctx.complete(model=A, prompt="paid once")
        if fail["on"]:
            raise RuntimeError("crash after the call")
        return completion.text

    first = await wf.run(display=False)
    assert first.status == "failed"
    paid = first.cost
    fail["on"] = False
    resumed = await wf.run(run_id=first.id, display=False)
    assert resumed.status == "completed"
    report = await bn.report(db_url, run_ids=[first.id])
    (row,) = report.rows
    assert (row.calls, row.replayed_calls) == (1, 1)
    assert report.total == paid == (await bn.Run.load(first.id, db=db_url)).cost


async def _backdate(db: str, run_id: str, days: int) -> None:
    table = WorkflowRun.__table__  # type: ignore[attr-defined]
    async with await Store.open(db) as store, store.engine.begin() as conn:
        row = (await conn.execute(sa.select(table).where(table.c.id == run_id))).mappings().one()
        shift = timedelta(days=days)
        await conn.execute(
            sa.update(table)
            .where(table.c.id == run_id)
            .values(
                created_at=row["created_at"] - shift,
                started_at=row["started_at"] - shift,
                finished_at=row["finished_at"] - shift,
            )
        )


def simple(db: str, name: str) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step(models=[A, B])
    async def answer(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt=f"hi from {ctx.params.get('n')}")).text

    return wf


async def test_reports_and_listings_across_runs(db_url: str, unique: str) -> None:
    wf_a, wf_b = simple(db_url, f"a-{unique}"), simple(db_url, f"b-{unique}")
    runs_a = [await wf_a.run(params={"n": n}, display=False) for n in range(3)]
    run_b = await wf_b.run(display=False)
    await _backdate(db_url, runs_a[0].id, days=10)

    everything = await bn.report(db_url, workflow=f"a-{unique}")
    assert everything.run_ids == [r.id for r in runs_a]  # oldest first
    assert everything.total == sum((r.cost for r in runs_a), Decimal(0))
    assert everything.calls == 6 and everything.complete
    recent = await bn.report(db_url, workflow=f"a-{unique}", since="7d")
    assert recent.run_ids == [runs_a[1].id, runs_a[2].id]
    old = await bn.report(db_url, workflow=f"a-{unique}", until=timedelta(days=7))
    assert old.run_ids == [runs_a[0].id]
    only_b = await bn.report(db_url, run_ids=[run_b.id])
    assert only_b.run_ids == [run_b.id] and only_b.total == run_b.cost
    both = await bn.report(db_url, run_ids=[run_b.id, runs_a[2].id])
    assert set(both.by_run()) == {run_b.id, runs_a[2].id}
    with pytest.raises(bn.RunNotFound, match=f"nope-{unique}"):
        await bn.report(db_url, run_ids=[run_b.id, f"nope-{unique}"])

    listed = await bn.runs(db_url, workflow=f"a-{unique}")
    assert [r.id for r in listed] == [r.id for r in reversed(runs_a)]  # newest first
    for summary in listed:
        run = next(r for r in runs_a if r.id == summary.id)
        assert summary.cost == run.cost and summary.cost_complete
        assert (summary.steps, summary.steps_completed, summary.calls) == (2, 2, 2)
        assert summary.status == "completed" and summary.duration is not None
        assert summary.tokens == run.tokens.total_tokens
    assert [r.id for r in await bn.runs(db_url, workflow=f"a-{unique}", limit=1)] == [runs_a[2].id]
    assert len(await bn.runs(db_url, workflow=f"a-{unique}", since="7d")) == 2
    assert await bn.runs(db_url, workflow=f"a-{unique}", status="failed") == []
    assert "completed" in str(listed) and "<table>" in listed._repr_html_()  # type: ignore[attr-defined]
    assert listed[0].to_dict()["cost_usd"] == bn.reports.fmt_money(runs_a[2].cost)
    with pytest.raises(ConfigurationError, match="unknown status"):
        await bn.runs(db_url, status="done")
    with pytest.raises(ConfigurationError, match="limit"):
        await bn.runs(db_url, limit=-1)


def _bare(value: Decimal) -> bool:
    """No trailing fractional zeros (Postgres NUMERIC(30,12) pads to 12 places)."""
    return value == 0 or not str(value).endswith("0") or value.as_tuple().exponent == 0


async def test_costs_read_back_carry_no_numeric_padding(db_url: str, unique: str) -> None:
    run = await simple(db_url, f"pad-{unique}").run(display=False)
    assert run.status == "completed" and run.cost > 0
    loaded = await bn.Run.load(run.id, db=db_url)
    calls = [c.cost for c in loaded.calls]
    assert all(c is not None and _bare(c) for c in calls), calls
    assert _bare(loaded.cost) and loaded.cost == run.cost
    listed = await bn.runs(db_url, workflow=f"pad-{unique}")
    assert listed[0].cost == run.cost and _bare(listed[0].cost), listed[0].cost
    report = await bn.report(db_url, run_ids=[run.id])
    assert all(_bare(r.known_cost) for r in report.rows), [r.known_cost for r in report.rows]
    assert report.total == run.cost and _bare(report.total)
    assert repr(report.total) == repr(run.report().total)


@pytest.mark.parametrize("store", ["db", "memory"])
async def test_totals_are_exact_whatever_the_decimal_context(
    db_url: str, unique: str, store: str
) -> None:
    """Under a caller's decimal.getcontext().prec = 3 (a notebook rounding for display)
    run.cost, the report's totals and the stored summaries were rounded to 3 digits
    (0.00138 for 0.0013816); each call's cost was exact. Totals are exact sums now."""
    url = db_url if store == "db" else f"memory://prec-{unique}"
    name = f"prec-{unique}"
    wf = bn.Workflow(name, db=url)

    @wf.step(models=[A, "mock/claude-sonnet-4-5", "mock/gemini-2.5-pro"])
    async def answer(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="Explain the weather in Paris in detail")).text

    with decimal.localcontext(decimal.Context(prec=3)):
        run = await wf.run(display=False)
        report = run.report()
        stored = await bn.report(url, run_ids=[run.id])
        loaded = await bn.Run.load(run.id, db=url)
        (listed,) = await bn.runs(url, workflow=name)
    costs = [c.cost for c in run.calls if c.cost is not None]
    exact = sum(costs, Decimal(0))  # the default context: 28 digits
    assert len(costs) == 3 and len(exact.as_tuple().digits) > 3, exact
    assert run.cost == loaded.cost == listed.cost == exact
    assert report.total == stored.total == report.by_step()["answer"].cost == exact
    assert sum(t.cost or 0 for t in stored.by_model().values()) == exact
    assert run.step_totals("answer").cost == exact


async def test_empty_database_reports_nothing(sqlite_url: str) -> None:
    report = await bn.report(sqlite_url)
    assert report.rows == [] and report.total == 0
    assert await bn.runs(sqlite_url) == []


async def test_rows_come_in_dag_order_items_in_item_order_models_as_declared(
    db_url: str, unique: str
) -> None:
    """Map children are stored when their items are known, after every other step: rows
    used to list them last (and ``step[10]`` before ``step[2]`` where sorted by name)."""
    wf = bn.Workflow(f"order-{unique}", db=db_url)
    models = [C, A, B]  # declared order, not alphabetical

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(12))

    @wf.step(map_over="items")
    async def work(ctx: bn.Context) -> str:
        await anyio.sleep(0.001 * (12 - ctx.item))  # later items finish first
        return (await ctx.complete(model=A, prompt=f"item {ctx.item}")).text

    @wf.step(deps=["work"], models=models)
    async def judge(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="judge")).text

    @wf.step(deps=["judge"])
    async def summary(ctx: bn.Context) -> str:
        return (await ctx.synthesize(ctx.results["judge"], model=B)).text

    run = await wf.run(display=False)
    assert run.status == "completed"
    expected = [
        *(f"work[{i}]" for i in range(12)),
        *(f"judge[{m}]" for m in models),
        "summary",
    ]
    in_memory = run.report()
    stored = await bn.report(db_url, run_ids=[run.id])
    assert [r.step for r in in_memory.rows] == expected
    assert [r.step for r in stored.rows] == expected
    assert [r["step"] for r in parse_csv(stored.to_csv())] == expected
    assert list(stored.by_model()) == [A, C, B]  # first seen, in DAG order
