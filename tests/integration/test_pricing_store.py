"""Prices in the store, on SQLite and Postgres: exact costs past 12 decimals, each call's
price source and matched model, re-pricing stored calls, and the schema migration."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.pricing import CallPricing, _api, _registry
from baton_nb.store import Store
from baton_nb.store._tables import ExactDecimal, UtcDateTime

pytestmark = pytest.mark.anyio
GENAI = f"genai-prices {importlib.metadata.version('genai-prices')}"
# 19 decimals per 1M tokens: a call of a few tokens costs more than 12 decimals
LONG_PRICE = "0.1234567890123456789"


@pytest.fixture(autouse=True)
def _fresh_pricing() -> Iterator[None]:
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()


def _price_file(tmp_path: Path, models: dict[str, str]) -> Path:
    path = tmp_path / "my_prices.json"
    data = {
        "provider": "acme",
        "models": {
            name: {"periods": [{"from": "2020-01-01", "input": rate, "output": rate}]}
            for name, rate in models.items()
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _workflow(db: str, name: str, price_as: str | None = None) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model="mock/gpt-4o-mini", prompt="hi")).text

    @wf.step(deps=["ask"])
    async def exotic(ctx: bn.Context) -> str:
        completion = await ctx.complete(model="mock/house-model", prompt="hi", price_as=price_as)
        return completion.text

    return wf


async def test_costs_past_12_decimals_are_exact_everywhere(
    db_url: str, unique: str, tmp_path: Path
) -> None:
    bn.configure(pricing=str(_price_file(tmp_path, {"exact-model": LONG_PRICE})))
    run = await _workflow(db_url, f"exact-{unique}", "acme/exact-model").run(display=False)
    exotic = next(c for c in run.calls if c.step == "exotic")
    assert exotic.cost is not None and -exotic.cost.as_tuple().exponent > 12  # type: ignore[operator]
    loaded = await bn.Run.load(run.id, db=db_url)
    report = await bn.report(db=db_url, run_ids=[run.id])
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert loaded.cost == run.cost == report.total
    assert [c.cost for c in loaded.calls] == [c.cost for c in run.calls]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == run.cost
    assert {r["step"]: r["cost_usd"] for r in rows}["exotic"] == format(exotic.cost, "f")


async def test_each_call_stores_its_price_source_and_model(
    db_url: str, unique: str, tmp_path: Path
) -> None:
    bn.configure(pricing=str(_price_file(tmp_path, {"exact-model": "1"})))
    run = await _workflow(db_url, f"source-{unique}", "acme/exact-model").run(display=False)
    expected = {
        "ask": CallPricing("mock/gpt-4o-mini", GENAI, "openai/gpt-4o-mini", Decimal(0)),
        "exotic": CallPricing(
            "acme/exact-model", "user file my_prices.json", "acme/exact-model", Decimal(0)
        ),
    }
    assert {c.step: c.pricing for c in run.calls} == expected
    loaded = await bn.Run.load(run.id, db=db_url)
    assert {c.step: c.pricing for c in loaded.calls} == expected
    report = await bn.report(db=db_url, run_ids=[run.id])
    rows = {r["step"]: r for r in csv.DictReader(io.StringIO(report.to_csv()))}
    assert (rows["ask"]["price_source"], rows["ask"]["price_model"]) == (
        GENAI,
        "openai/gpt-4o-mini",
    )
    assert rows["exotic"]["price_source"] == "user file my_prices.json"
    assert "user file my_prices.json" in str(report) and "acme/exact-model" in str(report)


async def test_reprice_prices_calls_that_were_unknown(
    db_url: str, unique: str, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = await _workflow(db_url, f"reprice-{unique}", "acme/new-model").run(display=False)
    assert run.unpriced_calls == 1
    before = await bn.report(db=db_url, run_ids=[run.id])
    assert not before.complete
    # the model gets a price later: re-pricing the stored calls finds it
    bn.configure(pricing=str(_price_file(tmp_path, {"new-model": "2"})))
    after = await bn.report(db=db_url, run_ids=[run.id], reprice=True)
    assert after.complete and after.total > before.total
    exotic = after.by_step()["exotic"]
    assert exotic.price_source == "user file my_prices.json"
    assert exotic.cost == Decimal(2) * exotic.usage.total_tokens / 10**6
    assert (await bn.Run.load(run.id, db=db_url)).report(reprice=True).total == after.total
    # nothing stored changed
    assert not (await bn.report(db=db_url, run_ids=[run.id])).complete


# ── the migration of databases made before prices were recorded ─────────────────


@pytest.fixture
async def old_db(db_url: str, unique: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database as baton_nb left it before migration 3: cost_usd NUMERIC(30, 12) on
    Postgres, no price columns, schema version 2, one stored call."""
    name = f"baton_test_old_{unique}"
    if not db_url.startswith("postgresql"):
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        import asyncpg
        from sqlalchemy.engine import make_url

        admin = await asyncpg.connect(db_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(db_url).set(database=name).render_as_string(hide_password=False)
    store = await Store.open(url)  # today's schema, then taken back to version 2
    try:
        async with store.begin() as conn:
            for column in (
                "cache_write_1h_tokens",
                "web_search_requests",
                "fees_usd",
                "priced_as",
                "price_source",
                "price_model",
            ):
                await conn.execute(sa.text(f"ALTER TABLE workflow_step_stats DROP COLUMN {column}"))
            if url.startswith("postgresql"):
                await conn.execute(
                    sa.text(
                        "ALTER TABLE workflow_step_stats ALTER COLUMN cost_usd TYPE NUMERIC(30, 12)"
                    )
                )
            await conn.execute(sa.text("DELETE FROM baton_schema_version WHERE version > 2"))
            when = datetime(2025, 1, 1, tzinfo=timezone.utc)
            typed = (
                sa.bindparam("t", type_=UtcDateTime()),
                sa.bindparam("cost", type_=ExactDecimal()),
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO workflow_runs (id, workflow, params, status, created_at, "
                    "failed_steps, executions) VALUES ('old-run', 'old', '{}', 'completed', "
                    ":t, '[]', 1)"
                ).bindparams(typed[0]),
                {"t": when},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO workflow_step_stats (run_id, step, model, provider, attempt, "
                    "call_index, input_tokens, cached_input_tokens, cache_write_tokens, "
                    "output_tokens, reasoning_tokens, cost_usd, latency_ms, replayed, "
                    "estimated, created_at) VALUES ('old-run', 'ask', 'openai/gpt-4o-mini', "
                    "'openai', 1, 0, 1000, 0, 0, 100, 0, :cost, 12.5, false, false, :t)"
                ).bindparams(*typed),
                {"cost": Decimal("0.00021"), "t": when},
            )
    finally:
        await store.close()
    try:
        yield url
    finally:
        if url.startswith("postgresql"):
            import asyncpg

            admin = await asyncpg.connect(db_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


async def test_migration_adds_price_columns_and_stores_costs_exactly(
    old_db: str, unique: str, tmp_path: Path
) -> None:
    from baton_nb.store._migrations import SCHEMA_VERSION

    loaded = await bn.Run.load("old-run", db=old_db)  # opening the store migrates it
    [call] = loaded.calls
    assert call.cost == Decimal("0.00021") and call.pricing is None
    assert call.usage == bn.Usage(1000, output_tokens=100)
    old = await bn.report(db=old_db, run_ids=["old-run"])
    assert old.total == Decimal("0.00021") and old.rows[0].price_source == ""
    # re-pricing an old row prices it by its model, at the day it was made
    repriced = await bn.report(db=old_db, run_ids=["old-run"], reprice=True)
    assert repriced.rows[0].price_model == "openai/gpt-4o-mini"
    # a new run on the migrated database keeps a cost past 12 decimals exactly
    bn.configure(pricing=str(_price_file(tmp_path, {"exact-model": LONG_PRICE})))
    run = await _workflow(old_db, f"after-{unique}", "acme/exact-model").run(display=False)
    assert (await bn.Run.load(run.id, db=old_db)).cost == run.cost
    store = await Store.open(old_db)
    try:
        async with store.connect() as conn:
            version = (
                await conn.execute(sa.text("SELECT MAX(version) FROM baton_schema_version"))
            ).scalar()
    finally:
        await store.close()
    assert version == SCHEMA_VERSION


async def test_a_mock_entry_of_a_price_file_prices_runs_and_reprice_as_bn_price_does(
    db_url: str, unique: str, tmp_path: Path
) -> None:
    """``mock/NAME`` has one lookup: bn.price, a run's calls and reprice=True (of calls
    stored before, priced as the bare NAME then) all find the file's mock entry."""
    wf = bn.Workflow(f"mock-entry-{unique}", db=db_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model="mock/brand-new-model", prompt="hi")).text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unknown = await wf.run(display=False)
    assert unknown.cost is None
    path = tmp_path / "mock_prices.json"
    rates = {"periods": [{"from": "2020-01-01", "input": "1", "output": "2"}]}
    path.write_text(json.dumps({"provider": "mock", "models": {"brand-new-model": rates}}))
    bn.configure(pricing=str(path))
    [call] = unknown.calls
    expected = bn.price("mock/brand-new-model", call.usage)
    assert expected is not None and expected > 0
    repriced = await bn.report(db=db_url, run_ids=[unknown.id], reprice=True)
    assert repriced.complete and repriced.total == expected
    assert repriced.rows[0].price_source == "user file mock_prices.json"
    store = await Store.open(db_url)
    try:  # a call stored before this lookup: priced as the bare name
        async with store.connect() as conn:
            await conn.execute(
                sa.text("UPDATE workflow_step_stats SET priced_as = 'brand-new-model' "
                        "WHERE run_id = :r"), {"r": unknown.id},
            )  # fmt: skip
    finally:
        await store.close()
    again = await bn.report(db=db_url, run_ids=[unknown.id], reprice=True)
    assert again.complete and again.total == expected
    fresh = await wf.run(display=False, params={"n": 2})
    assert fresh.cost == bn.price("mock/brand-new-model", fresh.calls[0].usage) == expected


async def test_an_explicit_price_as_is_not_replaced_by_a_mock_entry_of_the_same_name(
    db_url: str, unique: str, tmp_path: Path
) -> None:
    """``mock/gpt-4o`` called with ``price_as="gpt-4o"`` is priced as OpenAI's gpt-4o, not
    as a price file's ``mock`` entry for gpt-4o (as ``mock/other`` with the same price_as)."""
    path = tmp_path / "free_mock.json"
    rates = {"periods": [{"from": "2020-01-01", "input": "0", "output": "0"}]}
    path.write_text(json.dumps({"provider": "mock", "models": {"gpt-4o": rates}}))
    bn.configure(pricing=str(path))
    wf = bn.Workflow(f"price-as-{unique}", db=db_url)

    @wf.step()
    async def ask(ctx: bn.Context) -> list[str]:
        named = await ctx.complete(model="mock/gpt-4o", prompt="hi", price_as="gpt-4o")
        plain = await ctx.complete(model="mock/gpt-4o", prompt="hi")
        return [str(named.cost), str(plain.cost)]

    run = await wf.run(display=False)
    named_cost, plain_cost = run.results["ask"]
    named_call = next(c for c in run.calls if c.pricing and c.pricing.priced_as == "gpt-4o")
    assert named_cost == str(bn.price("openai/gpt-4o", named_call.usage)) != "0"
    assert plain_cost == "0"  # mock/gpt-4o without price_as: the file's mock entry
