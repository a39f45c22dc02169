"""Cost of LLM calls: genai-prices under the shipped overrides; matching, tiers, variants,
periods."""

from __future__ import annotations

import decimal
import importlib.metadata
import warnings
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from baton_nb._usage import Usage
from baton_nb.pricing import (
    ModelPrice,
    UnknownPriceWarning,
    _api,
    _registry,
    known_models,
    lookup,
    price,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 20, tzinfo=UTC)
GENAI = importlib.metadata.version("genai-prices")


@pytest.fixture(autouse=True)
def _fresh_pricing() -> Iterator[None]:
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()
    _api._warned.clear()


def U(inp: int = 0, cached: int = 0, write: int = 0, out: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        input_tokens=inp,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        output_tokens=out,
        reasoning_tokens=reasoning,
    )


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


# (case id, model, usage, keyword arguments of price(), expected USD)
CASES: list[tuple[str, str, Usage, dict[str, Any], str]] = [
    # --- OpenAI
    ("openai plain", "openai/gpt-4o-mini", U(1000, out=100), {}, "0.00021"),
    # 6000 plain x 0.15 + 4000 cached x 0.075 + 500 x 0.60
    ("openai cached input", "openai/gpt-4o-mini", U(10_000, cached=4000, out=500), {}, "0.0015"),
    (
        "dated snapshot of the same model",
        "openai/gpt-4o-mini-2024-07-18",
        U(10**6),
        {},
        "0.15",
    ),
    ("dated snapshot of gpt-4o", "openai/gpt-4o-2024-11-20", U(10**6, out=10**6), {}, "12.5"),
    (
        "exact snapshot id beats its model",
        "openai/gpt-4o-2024-05-13",
        U(10**6, out=10**6),
        {},
        "20",
    ),
    ("alias", "openai/o4-mini-high", U(10**6, out=10**6), {"at": NOW}, "5.5"),
    (
        "price period before the alias moved",
        "gpt-4o",
        U(10**6, out=10**6),
        {"at": at("2024-09-01")},
        "20",
    ),
    (
        "price period after the alias moved",
        "gpt-4o",
        U(10**6, out=10**6),
        {"at": at("2024-10-02")},
        "12.5",
    ),
    # reasoning tokens are inside output_tokens: 2000 x 2 + 5000 x 8, not + 4000 x 8 again
    (
        "reasoning not charged twice",
        "openai/o3",
        U(2000, out=5000, reasoning=4000),
        {"at": NOW},
        "0.044",
    ),
    (
        "o3 before the 80% cut",
        "openai/o3-2025-04-16",
        U(2000, cached=1000, out=5000, reasoning=4000),
        {"at": at("2025-05-01")},
        "0.2125",
    ),
    # batch: 80k x 0.625 + 20k cached x 0.0625 + 10k x 5
    (
        "openai batch with batch cached rate",
        "openai/gpt-5",
        U(100_000, cached=20_000, out=10_000),
        {"batch": True},
        "0.10125",
    ),
    # gpt-4o has no batch cached rate: cached keeps the standard 1.25
    (
        "openai batch, cached at standard rate",
        "openai/gpt-4o",
        U(100_000, cached=50_000, out=10_000),
        {"batch": True, "at": NOW},
        "0.175",
    ),
    (
        "bare name found in any table",
        "gpt-4.1-nano-2025-04-14",
        U(10**6, cached=10**6, out=10**6),
        {},
        "0.425",
    ),
    # --- Anthropic: 30k plain x 3 + 60k read x 0.30 + 10k write x 3.75 + 2k x 15
    (
        "anthropic cache read + 5m write",
        "anthropic/claude-sonnet-4-5",
        U(100_000, cached=60_000, write=10_000, out=2000),
        {},
        "0.1755",
    ),
    (
        "anthropic 1h cache write",
        "anthropic/claude-sonnet-4-5",
        U(100_000, cached=60_000, write=10_000, out=2000),
        {"cache_write_ttl": "1h"},
        "0.198",
    ),
    # above 200k the whole call is at 6 / 0.60 / 22.50
    (
        "anthropic long context tier",
        "anthropic/claude-sonnet-4-5-20250929",
        U(250_000, cached=50_000, out=1000),
        {},
        "1.2525",
    ),
    (
        "tier threshold is exclusive",
        "anthropic/claude-sonnet-4-5",
        U(200_000, out=1000),
        {},
        "0.615",
    ),
    ("sonnet 4 long context", "anthropic/claude-sonnet-4-20250514", U(300_000), {}, "1.8"),
    (
        "anthropic batch in the long context tier",
        "anthropic/claude-sonnet-4-5",
        U(250_000, out=1000),
        {"batch": True},
        "0.76125",
    ),
    (
        "anthropic batch 1h write",
        "anthropic/claude-haiku-4-5",
        U(10_000, write=10_000),
        {"batch": True, "cache_write_ttl": "1h"},
        "0.01",
    ),
    ("anthropic -latest alias", "anthropic/claude-3-5-sonnet-latest", U(10**6), {}, "3"),
    ("anthropic dated snapshot", "claude-3-5-sonnet-20241022", U(10**6), {}, "3"),
    ("opus 4.1 snapshot is not opus 4", "claude-opus-4-1-20250805", U(out=10**6), {}, "75"),
    (
        "opus 4.5 snapshot is not opus 4",
        "anthropic/claude-opus-4-5-20251101",
        U(out=10**6),
        {},
        "25",
    ),
    ("vertex-style @ snapshot", "anthropic/claude-sonnet-4@20250514", U(100_000), {}, "0.3"),
    # --- Google: tier above 200k: 200k x 2.50 + 100k cached x 0.25 + 10k x 15
    (
        "gemini long context tier",
        "google/gemini-2.5-pro",
        U(300_000, cached=100_000, out=10_000, reasoning=8000),
        {},
        "0.675",
    ),
    ("gemini below the tier", "gemini/gemini-2.5-pro", U(100_000, out=10_000), {}, "0.225"),
    (
        "gemini batch long context",
        "google/gemini-2.5-pro",
        U(300_000, out=10_000),
        {"batch": True},
        "0.45",
    ),
    (
        "gemini REST model name",
        "google/models/gemini-2.0-flash-001",
        U(10**6, out=10**6),
        {},
        "0.5",
    ),
    (
        "gemini 1.5 flash before the price cut",
        "google/gemini-1.5-flash",
        U(100_000, out=1000),
        {"at": at("2024-06-01")},
        "0.03605",
    ),
    (
        "gemini 1.5 flash after the price cut",
        "google/gemini-1.5-flash-002",
        U(100_000, out=1000),
        {"at": at("2024-09-01")},
        "0.0078",
    ),
    (
        "gemini 1.5 flash 128k tier",
        "google/gemini-1.5-flash",
        U(200_000),
        {"at": at("2024-09-01")},
        "0.03",
    ),
    ("flash-lite is not flash", "google/gemini-2.5-flash-lite-preview-06-17", U(10**6), {}, "0.1"),
    # --- open models
    (
        "openrouter vendor/model",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        U(10**6, out=10**6),
        {"at": NOW},
        "1.38",
    ),
    (
        "openrouter earlier price period",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        U(10**6, out=10**6),
        {"at": at("2026-10-20")},
        "0.42",
    ),
    (
        "openrouter free variant",
        "openrouter/deepseek/deepseek-r1:free",
        U(10**6, out=10**6),
        {},
        "0",
    ),
    (
        "openrouter falls back to the vendor's table",
        "openrouter/anthropic/claude-sonnet-4.5",
        U(100_000),
        {},
        "0.3",
    ),
    (
        "groq batch keeps the cached rate",
        "groq/openai/gpt-oss-120b",
        U(100_000, cached=100_000, out=100_000),
        {"batch": True},
        "0.0375",
    ),
    (
        "together ids are case-insensitive",
        "together/meta-llama/llama-3.3-70b-instruct-turbo",
        U(10**6, out=10**6),
        {},
        "1.76",
    ),
    ("no tokens cost nothing", "openai/gpt-4o", U(), {}, "0"),
]


@pytest.mark.parametrize(
    ("model", "usage", "kwargs", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_cost(model: str, usage: Usage, kwargs: dict[str, Any], expected: str) -> None:
    cost = price(model, usage, **kwargs)
    assert isinstance(cost, Decimal)
    assert cost == Decimal(expected)


def test_there_are_at_least_twenty_cost_cases() -> None:
    assert len(CASES) >= 20


def test_unknown_model_is_none_with_one_warning() -> None:
    with pytest.warns(UnknownPriceWarning, match=r"openai/gpt-9000.*bn\.configure\(pricing="):
        assert price("openai/gpt-9000", U(1000, out=10)) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert price("openai/gpt-9000", U(5, out=5)) is None
        assert price("OpenAI/GPT-9000", U(5, out=5)) is None
    assert caught == []


def test_unknown_warning_points_at_the_callers_line() -> None:
    with pytest.warns(UnknownPriceWarning) as caught:
        price("openai/gpt-9001", U(1))
    assert caught[0].filename == __file__


@pytest.mark.anyio
async def test_unknown_warning_names_the_model_as_called_and_points_at_user_code() -> None:
    from baton_nb.llm import LLMRequest, complete, configure, reset_configuration

    reset_configuration()
    configure(providers={"mock": {"latency": 0.0}})
    try:
        with pytest.warns(UnknownPriceWarning) as caught:
            c = await complete(
                LLMRequest("mock/no-such-model-9", ({"role": "user", "content": "hi"},))
            )
    finally:
        reset_configuration()
    assert c.cost is None
    message = str(caught[0].message)
    assert "model 'mock/no-such-model-9': " in message, message  # priced as it was called
    assert caught[0].filename == __file__  # not baton_nb/llm/_cost.py


@pytest.mark.anyio
async def test_a_near_miss_of_a_priced_model_says_did_you_mean() -> None:
    """A typo in a model name completes on mock/ (any name answers) with an unknown cost:
    the warning names the priced model it is close to, as the user would write it."""
    from baton_nb.llm import LLMRequest, complete, configure, reset_configuration

    reset_configuration()
    configure(providers={"mock": {"latency": 0.0}})
    try:
        with pytest.warns(UnknownPriceWarning) as caught:
            await complete(LLMRequest("mock/gpt-4o-mnii", ({"role": "user", "content": "hi"},)))
    finally:
        reset_configuration()
    assert "Did you mean 'mock/gpt-4o-mini'?" in str(caught[0].message)
    with pytest.warns(UnknownPriceWarning, match=r"Did you mean 'openai/gpt-4o-mini'\?"):
        price("openai/gpt-4o-mnii", U(1))
    with pytest.warns(UnknownPriceWarning) as caught:  # nothing close: no guess
        price("openai/zz-no-such-model-at-all", U(1))
    assert "Did you mean" not in str(caught[0].message)


def test_price_call_names_the_called_model_only_when_it_differs() -> None:
    from baton_nb.pricing import CallPricing, price_call

    with pytest.warns(UnknownPriceWarning, match=r"model 'openai/gpt-9002': its cost"):
        cost, how = price_call("openai/gpt-9002", U(1), called_as="openai/gpt-9002")
    assert (cost, how) == (None, CallPricing("openai/gpt-9002"))
    cost, how = price_call("openai/gpt-4o-mini", U(1000), called_as="x/y", at=NOW)
    assert cost == Decimal("0.00015")
    assert how == CallPricing(
        "openai/gpt-4o-mini", f"genai-prices {GENAI}", "openai/gpt-4o-mini", Decimal(0)
    )


def test_unknown_warning_is_a_user_warning() -> None:
    assert issubclass(UnknownPriceWarning, UserWarning)
    with pytest.warns(UserWarning):
        assert price("no-such-provider/some-model", U(1)) is None


def test_only_a_dated_snapshot_extends_a_name() -> None:
    with pytest.warns(UnknownPriceWarning):
        assert price("openai/gpt-4ox", U(1000)) is None
    assert lookup("gpt-4") is not None
    assert lookup("gpt-4o-turbo-ish") is None  # not a snapshot of gpt-4o: another model
    assert lookup("gpt-4xyz") is None
    assert lookup("gpt-4o-2099-01-01") is not None  # a date is a snapshot of gpt-4o


def test_unknown_provider_prefix_is_not_searched_elsewhere() -> None:
    assert lookup("groq/gpt-4o") is None  # Groq does not serve gpt-4o
    assert lookup("anthropic/gpt-4o") is None


def test_lookup_returns_rates_in_force() -> None:
    mp = lookup("openai/gpt-4o-2024-08-06", at=NOW)
    assert isinstance(mp, ModelPrice)
    assert (mp.provider, mp.model, mp.matched) == ("openai", "gpt-4o", "alias")
    assert mp.price_source == f"genai-prices {GENAI}"
    assert mp.rates.input == Decimal("2.5")
    assert mp.rates.cached_input == Decimal("1.25")
    assert mp.rates.cache_write == mp.rates.input  # OpenAI has no cache-write surcharge
    assert mp.batch is not None and mp.batch.input == Decimal("1.25")


def test_lookup_period_bounds() -> None:
    old = lookup("gpt-4o", at=at("2024-09-30"))
    new = lookup("gpt-4o", at=at("2024-10-02"))
    assert old is not None and new is not None
    # the shipped override holds the launch price until the alias moved ...
    assert (old.valid_from, old.valid_until) == (date(2024, 5, 13), date(2024, 10, 2))
    assert old.price_source == "baton_nb override"
    # ... then genai-prices, which dates no period for gpt-4o
    assert (new.valid_from, new.valid_until) == (None, None)
    assert new.price_source == f"genai-prices {GENAI}"
    assert old.rates.input == Decimal(5) and new.rates.input == Decimal("2.5")
    # genai-prices' dated periods are reported too
    o3 = lookup("openai/o3", at=NOW)
    assert o3 is not None and o3.valid_from == date(2025, 6, 10) and o3.valid_until is None


def test_before_the_first_period_uses_the_first_period() -> None:
    mp = lookup("openai/o3", at=at("2020-01-01"))
    assert mp is not None and mp.valid_from == date(2025, 4, 16)
    assert mp.price_source == "baton_nb override"


def test_at_is_compared_in_utc() -> None:
    five_east = timezone(timedelta(hours=5))
    # 01:00 on 2 Oct at UTC+5 is still 1 Oct in UTC: the old gpt-4o price
    local = datetime(2024, 10, 2, 1, 0, tzinfo=five_east)
    assert price("gpt-4o", U(10**6), at=local) == Decimal(5)
    # a naive datetime is taken as UTC
    assert price("gpt-4o", U(10**6), at=datetime(2024, 10, 2, 1, 0)) == Decimal("2.5")


def test_lookup_tiers_and_rates_for() -> None:
    mp = lookup("anthropic/claude-sonnet-4-5")
    assert mp is not None
    assert [t.above for t in mp.tiers] == [200_000]
    assert mp.rates_for(200_000).input == Decimal(3)
    assert mp.rates_for(200_001).input == Decimal(6)
    assert mp.rates_for(200_001, batch=True).cache_write_1h == Decimal(6)
    assert mp.rates_for(10, batch=True).output == Decimal("7.5")


def test_alias_and_snapshot_reported() -> None:
    alias = lookup("anthropic/claude-3-5-sonnet-latest")
    snapshot = lookup("anthropic/claude-3-5-sonnet-20241022")
    assert alias is not None and alias.matched == "alias"
    assert snapshot is not None and snapshot.matched == "snapshot"
    assert alias.model == snapshot.model == "claude-3-5-sonnet"


def test_bare_and_google_prefixes_agree() -> None:
    usage = U(123_456, cached=1000, out=789)
    expected = price("google/gemini-2.5-flash", usage)
    assert price("gemini/gemini-2.5-flash", usage) == expected
    assert price("gemini-2.5-flash", usage) == expected


def test_openrouter_vendor_fallback_matches_the_vendor() -> None:
    usage = U(50_000, cached=10_000, out=2000)
    assert price("openrouter/openai/gpt-4o-mini", usage) == price("openai/gpt-4o-mini", usage)
    assert price("openrouter/google/gemini-2.5-pro", usage) == price("google/gemini-2.5-pro", usage)


def test_cost_is_exact_whatever_the_decimal_context() -> None:
    usage = U(123_457, cached=7, write=11, out=98_765)
    expected = price("anthropic/claude-sonnet-4-5", usage)
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        assert price("anthropic/claude-sonnet-4-5", usage) == expected
    # 123439 x 3 + 7 x 0.3 + 11 x 3.75 + 98765 x 15 = 1851835.35 micro-dollars
    assert expected == Decimal("1.85183535")


def test_more_cached_than_prompt_tokens_never_goes_negative() -> None:
    cost = price("openai/gpt-4o-mini", U(10, cached=1000), at=NOW)
    assert cost == Decimal("0.000075")


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="cache_write_ttl"):
        price("anthropic/claude-haiku-4-5", U(1), cache_write_ttl="10m")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Usage"):
        price("openai/gpt-4o", {"input_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a str"):
        lookup(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="datetime"):
        lookup("gpt-4o", at="2024-01-01")  # type: ignore[arg-type]


def test_known_models() -> None:
    models = known_models()
    assert models == sorted(models)
    for model in (
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/gpt-4.1",
        "openai/gpt-5",
        "openai/o1",
        "openai/o3",
        "openai/o4-mini",
        "anthropic/claude-sonnet-4-5",
        "anthropic/claude-haiku-4-5",
        "anthropic/claude-opus-4-1",
        "anthropic/claude-3-5-haiku-latest",
        "google/gemini-2.5-pro",
        "google/gemini-2.5-flash-lite",
        "google/gemini-2.0-flash",
        "google/gemini-1.5-pro",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        "groq/llama-3.3-70b-versatile",
        "together/deepseek-ai/DeepSeek-V3",  # a shipped override: genai-prices lacks it
        "openai/gpt-5.5",
        "anthropic/claude-opus-4-7",
        "x-ai/grok-4.3",
    ):
        assert model in models
    assert len(models) >= 1000


def test_genai_prices_is_imported_on_first_use_and_never_updates() -> None:
    import subprocess
    import sys

    check = (
        "import sys, baton_nb as bn; bn.Usage(1); import baton_nb.pricing;"
        "print('genai_prices' in sys.modules);"
        "bn.price('openai/gpt-4o-mini', bn.Usage(1));"
        "import genai_prices.update_prices as u;"
        "print('genai_prices' in sys.modules, u._shared_updater.thread is None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "True", "True"]


def test_each_tier_prices_the_whole_call_in_any_order_of_calls() -> None:
    # The rates of each tier reached are kept per price: a call below the tier after one
    # above it (and back) is priced at its own tier, the same as genai-prices computes.
    from genai_prices.types import ModelPrice as GenaiPrice
    from genai_prices.types import Tier as GenaiTier
    from genai_prices.types import TieredPrices

    from baton_nb.pricing._cost import _genai_usage, engine_cost, tidy

    tiered = GenaiPrice(
        input_mtok=TieredPrices(Decimal("1.25"), [GenaiTier(200_000, Decimal("2.5"))]),
        cache_read_mtok=TieredPrices(Decimal("0.125"), [GenaiTier(200_000, Decimal("0.25"))]),
        output_mtok=TieredPrices(Decimal("10"), [GenaiTier(200_000, Decimal("15"))]),
        requests_kcount=Decimal("0.35"),
    )
    for prompt in (1_000, 250_000, 200_000, 200_001, 5):
        usage = U(prompt, cached=prompt // 3, out=777)
        expected = tiered.calc_price(_genai_usage(usage, "5m"))
        cost = engine_cost(tiered, usage)
        assert cost.total == tidy(expected["total_price"]), prompt
        assert cost.fees == Decimal("0.00035")
