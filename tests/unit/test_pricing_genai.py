"""baton_nb's prices against genai-prices, its primary source: the cross-check over every
model both know (``tests/pricing_audit.py``), every known difference justified, the
coverage of current first-party models, and never a sibling's price.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from baton_nb._usage import Usage
from baton_nb.pricing import _api, _genai, _registry, lookup, price
from baton_nb.pricing._parse import load_price_file
from tests import pricing_audit
from tests.pricing_audit import SHAPES, Audit, Outcome

UTC = timezone.utc
NOW = pricing_audit.NOW


@pytest.fixture(autouse=True)
def _fresh_pricing() -> Iterator[None]:
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()


@pytest.fixture(scope="module")
def audit() -> Audit:
    _registry.reset()
    return pricing_audit.run()


# Why baton_nb and genai-prices may give a different cost for the same call. Every
# difference the audit finds must be one of these (docs/pricing.md lists them too).
KNOWN_CAUSES = {
    "override": (
        "a shipped override (pricing/*.json) answered; each entry says in its 'note' what "
        "genai-prices lacks or gets wrong (checked entry by entry below)"
    ),
    "batch before genai-prices dates it": (
        "genai-prices applies batch rates from the day it checked them (2026-10-14 for "
        "most models); the Batch APIs and their 50% discount are older"
    ),
    "a part of the usage has no rate": (
        "web searches on a model without a web-search price, output tokens on an embedding "
        "model: genai-prices charges them 0, baton_nb says the cost is unknown (None)"
    ),
    "genai-prices matches nothing by this name": (
        "a model whose own id (codestral, ft:gpt-4o) genai-prices' match rule does not "
        "accept: baton_nb prices a model listed by its id"
    ),
}


def test_every_model_both_know_is_compared_under_30_usage_shapes(audit: Audit) -> None:
    assert len(SHAPES) >= 30
    today = Counter(
        (o.pair.provider, o.pair.model_id) for o in audit.outcomes if o.pair.what == "today"
    )
    assert len(today) >= 1000
    assert set(today.values()) == {len(SHAPES)}
    kinds = Counter(o.pair.what for o in audit.outcomes)
    assert kinds["batch"] > 1000 and kinds["name"] > 1000 and kinds["history"] > 1000
    for first_party in ("openai", "anthropic", "google", "x-ai", "mistral", "deepseek"):
        assert any(provider == first_party for provider, _ in today)


def test_every_difference_has_a_known_cause(audit: Audit) -> None:
    causes = audit.by_cause()
    unexplained = [o for o in audit.mismatches if o.cause == "unexplained"]
    assert not unexplained, _show(unexplained)
    assert set(causes) <= set(KNOWN_CAUSES), causes
    assert len(audit.mismatches) < len(audit.outcomes) * 0.15


def _show(outcomes: list[Outcome]) -> str:
    return "\n".join(
        f"{o.pair.provider}/{o.pair.name} {o.pair.shape} batch={o.pair.batch} "
        f"{o.pair.at:%Y-%m-%d}: baton_nb {o.ours} genai-prices {o.theirs}"
        for o in outcomes[:20]
    )


def _overrides() -> dict[str, str]:
    """Every shipped override entry (``provider/id``, as lookup names it) and its note."""
    out = {}
    for path in sorted(_registry.data_dir().glob("*.json")):
        for table in load_price_file(path).providers:
            provider = _genai.find_provider(table.provider)
            for spec in table.models:
                out[f"{provider.id if provider else table.provider}/{spec.id}"] = spec.note or ""
    return out


def test_every_override_says_why() -> None:
    for model, note in _overrides().items():
        assert len(note) > 40 and "genai-prices" in note, model


# What each override may change: the pairs where it differs from genai-prices. An override
# that differs anywhere else is wrong (or genai-prices changed): the test names it.
def _batch_only(o: Outcome) -> bool:
    return o.pair.batch


def _before(day: str) -> object:
    return lambda o: o.pair.at < datetime.fromisoformat(day).replace(tzinfo=UTC)


OVERRIDE_SCOPE = {
    "anthropic/claude-3-haiku": _batch_only,
    "anthropic/claude-3-sonnet": _batch_only,
    "anthropic/claude-3-opus-latest": _batch_only,
    "anthropic/claude-3-5-haiku-latest": _batch_only,
    "anthropic/claude-3-5-sonnet": _batch_only,
    "anthropic/claude-3-7-sonnet-latest": _batch_only,
    "anthropic/claude-opus-4-0": _batch_only,
    "anthropic/claude-opus-4-1": _batch_only,
    "anthropic/claude-sonnet-4-0": lambda o: (
        o.pair.batch or SHAPES[o.pair.shape].input_tokens > 200_000
    ),
    "google/gemini-2.0-flash": _batch_only,
    "google/gemini-2.0-flash-lite": _batch_only,
    "google/gemini-3-pro-preview": _batch_only,
    "google/gemini-1.5-flash": _before("2024-08-12"),
    "google/gemini-1.5-pro": lambda o: (
        _before("2024-10-01")(o) or SHAPES[o.pair.shape].cached_input_tokens > 0  # type: ignore[operator]
    ),
    "openai/gpt-4o": _before("2024-10-02"),
    "openai/o3": _before("2025-06-10"),
    "openai/gpt-4.5-preview": _batch_only,
}


def test_each_override_differs_where_it_says_and_nowhere_else(audit: Audit) -> None:
    shipped = _overrides()
    genai_lacks = {m for m in shipped if _genai.same_model(*m.split("/", 1)) is None}
    assert set(OVERRIDE_SCOPE) | genai_lacks == set(shipped), "a new override needs a scope here"
    by_override: dict[str, list[Outcome]] = {}
    for outcome in audit.mismatches:
        if outcome.cause and outcome.cause.startswith("override "):
            by_override.setdefault(outcome.cause.removeprefix("override "), []).append(outcome)
    for model, allowed in OVERRIDE_SCOPE.items():
        found = by_override.get(model, [])
        assert found, f"{model}: no longer differs from genai-prices: drop the override"
        stray = [o for o in found if not allowed(o)]  # type: ignore[operator]
        assert not stray, f"{model} differs where it should not:\n{_show(stray)}"


def test_the_fast_sum_equals_genai_prices_engine() -> None:
    """``_token_cost`` (baton_nb's sum for the units a Usage has) against genai-prices'
    ``ModelPrice.calc_price``, for every model of every provider genai-prices lists,
    standard and batch."""
    from decimal import localcontext

    from baton_nb.pricing._cost import _EXACT, _genai_usage, _token_cost, tidy

    # every shape is compared in scope by the audit (bn.price against calc_price); across
    # every provider, the shapes that exercise every unit
    names = ("plain", "mixed cache writes", "reasoning", "long 200k+1", "272k+1",
             "1M+1 cached", "web searches and cache")  # fmt: skip
    shapes = {n: SHAPES[n] for n in names}
    compared = 0
    for provider in pricing_audit.providers(everything=True):
        for model in provider.models:
            prices = _genai.prices_at(model, NOW)
            for engine in (prices.standard, prices.batch):
                for name, usage in [] if engine is None else shapes.items():
                    fast = _token_cost(engine, usage, "5m")
                    assert fast is not None, (provider.id, model.id)
                    with localcontext(_EXACT):
                        slow = engine.calc_price(_genai_usage(usage, "5m"))
                    fees = slow["total_price"] - slow["input_price"] - slow["output_price"]
                    assert (fast.total, fast.fees) == (
                        tidy(slow["total_price"]),
                        tidy(fees),
                    ), (provider.id, model.id, name)
                    compared += 1
    assert compared > 15_000


# Documented examples (docs/pricing.md, "Where baton_nb differs from genai-prices").
def _genai_cost(model: str, provider: str, usage: Usage, at: datetime, batch: bool) -> Decimal:
    pair = pricing_audit.Pair(provider, model, model, "plain", batch, at, "example")
    SHAPES["__example"] = usage
    try:
        cost, _ = pricing_audit.theirs(
            pricing_audit.Pair(provider, model, model, "__example", batch, at, "example")
        )
    finally:
        del SHAPES["__example"]
    assert cost is not None, pair
    return cost


LONG = Usage(300_000, 100_000, 10_000, 4_000)
# fmt: off
EXAMPLES = [
    # (name, provider, usage, at, batch, baton_nb, genai-prices)
    # 190k plain x 6 + 100k read x 0.60 + 10k write x 7.50 + 4k x 22.50; genai-prices: x 1/2
    ("claude-sonnet-4-0", "anthropic", LONG, NOW, False, "1.365", "0.6975"),
    # Flash-8B $0.0375/$0.15; genai-prices prices it as Flash, $0.075/$0.30
    ("gemini-1.5-flash-8b", "google", Usage(100_000, output_tokens=10_000), NOW, False,
     "0.00525", "0.0105"),
    # the gpt-4o alias at $5/$15 until 2024-10-02
    ("gpt-4o", "openai", Usage(10**6, output_tokens=10**6), datetime(2024, 9, 1, tzinfo=UTC),
     False, "20", "12.5"),
    # o3's launch cached-input rate
    ("o3", "openai", Usage(10**6, 10**6), datetime(2025, 5, 1, tzinfo=UTC), False, "2.5", "0.5"),
    # batch at half price before 2026-10-14
    ("claude-haiku-4-5", "anthropic", Usage(10**6), datetime(2026, 1, 1, tzinfo=UTC), True,
     "0.5", "1"),
]
# fmt: on


@pytest.mark.parametrize(("name", "provider", "usage", "at", "batch", "ours", "theirs"), EXAMPLES)
def test_documented_differences(
    name: str, provider: str, usage: Usage, at: datetime, batch: bool, ours: str, theirs: str
) -> None:
    assert price(f"{provider}/{name}", usage, at=at, batch=batch) == Decimal(ours)
    assert _genai_cost(name, provider, usage, at, batch) == Decimal(theirs)


# ── coverage: every current model of the first-party vendors has a price ─────────

VENDORS = ("openai", "anthropic", "google", "x-ai", "mistral", "deepseek")
TOKENS = Usage(10_000, 2_000, 0, 500)


def _vendor_models() -> list[tuple[str, str]]:
    return [(p.id, m.id) for p in pricing_audit.providers() if p.id in VENDORS for m in p.models]


def test_every_current_first_party_model_gets_its_own_price() -> None:
    models = _vendor_models()
    assert len(models) > 250
    problems = []
    for provider, model_id in models:
        found = lookup(f"{provider}/{model_id}", at=NOW)
        if found is None or found.model.lower() != model_id.lower():
            problems.append(f"{provider}/{model_id} -> {found and found.model_ref}")
            continue
        standard, _ = found.engine
        if standard.input_mtok is None and standard.output_mtok is None:
            continue  # priced per image, second or page, not per token
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            usage = TOKENS if standard.output_mtok is not None else Usage(10_000)
            if price(f"{provider}/{model_id}", usage, at=NOW) is None:
                problems.append(f"{provider}/{model_id}: no price")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # the models the issue found priced as another model
        ("openai/gpt-5.3", "openai/gpt-5.3"),
        ("openai/gpt-5.4", "openai/gpt-5.4"),
        ("openai/gpt-5.4-pro", "openai/gpt-5.4-pro"),
        ("openai/gpt-5.5", "openai/gpt-5.5"),
        ("openai/gpt-5.5-pro", "openai/gpt-5.5-pro"),
        ("openai/gpt-5.6-sol", "openai/gpt-5.6-sol"),
        ("gpt-5.5-pro-2026-04-23", "openai/gpt-5.5-pro"),
        ("anthropic/claude-opus-4-6", "anthropic/claude-opus-4-6"),
        ("anthropic/claude-opus-4-7", "anthropic/claude-opus-4-7"),
        ("anthropic/claude-opus-4-8", "anthropic/claude-opus-4-8"),
        ("claude-opus-4-7-20260416", "anthropic/claude-opus-4-7"),
        ("deepseek/deepseek-chat", "deepseek/deepseek-chat"),
        ("deepseek-chat", "deepseek/deepseek-chat"),
        ("openai/gpt-4-1106-vision-preview", "openai/gpt-4-vision-preview"),
        # dated snapshots of the same model
        ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("anthropic/claude-sonnet-4-20250514", "anthropic/claude-sonnet-4-0"),
        ("anthropic/claude-sonnet-4@20250514", "anthropic/claude-sonnet-4-0"),
        ("google/models/gemini-1.5-pro-002", "google/gemini-1.5-pro"),
        ("gemini/gemini-2.5-flash", "google/gemini-2.5-flash"),
        ("xai/grok-4", "x-ai/grok-4-0709"),
    ],
)
def test_names_find_their_own_model(name: str, expected: str) -> None:
    found = lookup(name, at=NOW)
    assert found is not None and found.model_ref == expected


# ── never a sibling ────────────────────────────────────────────────────────────

SIBLINGS = (".9", "-9", "-next", "x", "-pro-max", "-2")


def test_no_family_sibling_is_ever_matched() -> None:
    """A name that is not a model's id, alias or dated snapshot finds nothing: for every
    first-party model, its id with a version or variant appended (``gpt-5.5`` -> ``gpt-5.5.9``,
    ``claude-opus-4-7`` -> ``claude-opus-4-7-9``) is unknown, not that model."""
    problems = []
    for provider, model_id in _vendor_models():
        for suffix in SIBLINGS:
            name = f"{provider}/{model_id}{suffix}"
            found = lookup(name, at=NOW)
            if found is not None and found.model.lower() == model_id.lower():
                problems.append(f"{name} -> {found.model_ref} ({found.matched})")
    assert not problems, "\n".join(problems[:30])


@pytest.mark.parametrize(
    "name",
    [
        "openai/gpt-5.9",
        "openai/gpt-5.5-mini",
        "anthropic/claude-opus-4-9",
        "anthropic/claude-opus-4-7-pro",
        "google/gemini-9.9-pro",
        "openai/gpt-4o-turbo",
        "openai/gpt-4ox",
    ],
)
def test_an_unlisted_sibling_is_unknown(name: str) -> None:
    assert lookup(name, at=NOW) is None


@pytest.mark.parametrize(
    "name",
    [
        # vendor-less or foreign names never take a reseller's price ...
        "meta-llama/llama-3.3-70b-instruct",
        "llama-3.3-70b-versatile",
        "vllm/llama-3.3-70b-versatile",
        "local/gpt-oss-120b",
        "deepseek-ai/DeepSeek-V3",
    ],
)
def test_no_reseller_price_for_a_name_the_reseller_was_not_called_with(name: str) -> None:
    assert lookup(name, at=NOW) is None


def test_a_called_reseller_gives_its_own_price() -> None:
    groq = lookup("groq/llama-3.3-70b-versatile", at=NOW)
    openrouter = lookup("openrouter/meta-llama/llama-3.3-70b-instruct", at=NOW)
    together = lookup("together/deepseek-ai/DeepSeek-V3", at=NOW)
    assert groq is not None and groq.provider == "groq"
    assert openrouter is not None and openrouter.provider == "openrouter"
    assert together is not None and together.price_source == "baton_nb override"
