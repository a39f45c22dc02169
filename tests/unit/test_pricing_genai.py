"""Cross-check the shipped tables against the `genai-prices` package: same usage, same cost.

Where baton_nb deliberately differs, the case is listed in KNOWN_DIFFERENCES with the
reason (and in docs/pricing.md); the test then checks that the two really do differ, so the
list cannot go stale silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal

import pytest

from baton_nb._usage import Usage
from baton_nb.pricing import _api, _registry, price

genai_prices = pytest.importorskip("genai_prices")

# genai-prices' batch variants and current OpenRouter prices start in October 2026
AT = datetime(2026, 11, 20, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_pricing() -> Iterator[None]:
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()


@dataclass(frozen=True)
class Case:
    model: str  # baton_nb's name
    ref: str  # genai-prices model_ref
    provider_id: str
    usage: Usage
    batch: bool = False
    ttl: Literal["5m", "1h"] = "5m"
    at: datetime = AT


def u(inp: int, cached: int = 0, write: int = 0, out: int = 0, reasoning: int = 0) -> Usage:
    return Usage(inp, cached, write, out, reasoning)


SMALL = u(12_345, cached=2_000, out=678)
REASONING = u(20_000, cached=5_000, out=9_000, reasoning=7_000)
CACHE = u(80_000, cached=50_000, write=20_000, out=3_000)
LONG = u(350_000, cached=100_000, write=10_000, out=4_000)
LONG_NO_WRITE = u(350_000, cached=100_000, out=4_000)
PLAIN = u(1_000_000, out=250_000)

CASES: dict[str, Case] = {
    # OpenAI
    "gpt-4o": Case("openai/gpt-4o", "gpt-4o", "openai", SMALL),
    "gpt-4o-2024-11-20": Case("openai/gpt-4o-2024-11-20", "gpt-4o-2024-11-20", "openai", SMALL),
    "gpt-4o-2024-05-13": Case("openai/gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "openai", PLAIN),
    "gpt-4o-mini": Case("openai/gpt-4o-mini", "gpt-4o-mini", "openai", SMALL),
    "gpt-4o-mini batch": Case("openai/gpt-4o-mini", "gpt-4o-mini", "openai", SMALL, batch=True),
    "gpt-4.1": Case("openai/gpt-4.1", "gpt-4.1", "openai", SMALL),
    "gpt-4.1-mini": Case(
        "openai/gpt-4.1-mini-2025-04-14", "gpt-4.1-mini-2025-04-14", "openai", SMALL
    ),
    "gpt-4.1-nano": Case("openai/gpt-4.1-nano", "gpt-4.1-nano", "openai", SMALL),
    "gpt-5": Case("openai/gpt-5", "gpt-5", "openai", REASONING),
    "gpt-5 batch": Case("openai/gpt-5", "gpt-5", "openai", REASONING, batch=True),
    "gpt-5-mini": Case("openai/gpt-5-mini", "gpt-5-mini", "openai", REASONING),
    "gpt-5-nano": Case("openai/gpt-5-nano", "gpt-5-nano", "openai", REASONING),
    "gpt-5.1": Case("openai/gpt-5.1", "gpt-5.1", "openai", REASONING),
    "gpt-5.2": Case("openai/gpt-5.2", "gpt-5.2", "openai", REASONING),
    "o1": Case("openai/o1", "o1", "openai", REASONING),
    "o3": Case("openai/o3", "o3", "openai", REASONING),
    "o3-mini": Case("openai/o3-mini", "o3-mini", "openai", REASONING),
    "o4-mini": Case("openai/o4-mini", "o4-mini", "openai", REASONING),
    # Anthropic
    "claude-3-haiku": Case(
        "anthropic/claude-3-haiku-20240307", "claude-3-haiku-20240307", "anthropic", CACHE
    ),
    "claude-3-opus": Case(
        "anthropic/claude-3-opus-latest", "claude-3-opus-latest", "anthropic", CACHE
    ),
    "claude-3-5-haiku": Case(
        "anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", "anthropic", CACHE
    ),
    "claude-3-5-sonnet": Case(
        "anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", "anthropic", CACHE
    ),
    "claude-3-7-sonnet": Case(
        "anthropic/claude-3-7-sonnet-latest", "claude-3-7-sonnet-latest", "anthropic", CACHE
    ),
    "claude-sonnet-4": Case(
        "anthropic/claude-sonnet-4-20250514", "claude-sonnet-4-20250514", "anthropic", CACHE
    ),
    "claude-opus-4-1": Case("anthropic/claude-opus-4-1", "claude-opus-4-1", "anthropic", CACHE),
    "claude-opus-4-1 1h": Case(
        "anthropic/claude-opus-4-1", "claude-opus-4-1", "anthropic", CACHE, ttl="1h"
    ),
    "claude-sonnet-4-5": Case(
        "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic", CACHE
    ),
    "claude-sonnet-4-5 long": Case(
        "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic", LONG
    ),
    "claude-sonnet-4-5 long 1h": Case(
        "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic", LONG, ttl="1h"
    ),
    "claude-sonnet-4-5 long batch": Case(
        "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic", LONG, batch=True
    ),
    "claude-haiku-4-5": Case("anthropic/claude-haiku-4-5", "claude-haiku-4-5", "anthropic", CACHE),
    "claude-haiku-4-5 batch 1h": Case(
        "anthropic/claude-haiku-4-5", "claude-haiku-4-5", "anthropic", CACHE, batch=True, ttl="1h"
    ),
    "claude-opus-4-5": Case(
        "anthropic/claude-opus-4-5-20251101", "claude-opus-4-5-20251101", "anthropic", CACHE
    ),
    # Google
    "gemini-2.5-pro": Case("google/gemini-2.5-pro", "gemini-2.5-pro", "google", REASONING),
    "gemini-2.5-pro long": Case("google/gemini-2.5-pro", "gemini-2.5-pro", "google", LONG_NO_WRITE),
    "gemini-2.5-pro long batch": Case(
        "google/gemini-2.5-pro", "gemini-2.5-pro", "google", LONG_NO_WRITE, batch=True
    ),
    "gemini-2.5-flash": Case("gemini/gemini-2.5-flash", "gemini-2.5-flash", "google", REASONING),
    "gemini-2.5-flash batch": Case(
        "gemini/gemini-2.5-flash", "gemini-2.5-flash", "google", PLAIN, batch=True
    ),
    "gemini-2.5-flash-lite": Case(
        "google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "google", SMALL
    ),
    "gemini-2.0-flash": Case("google/gemini-2.0-flash", "gemini-2.0-flash", "google", SMALL),
    "gemini-2.0-flash-lite": Case(
        "google/gemini-2.0-flash-lite", "gemini-2.0-flash-lite", "google", PLAIN
    ),
    "gemini-1.5-flash long": Case(
        "google/gemini-1.5-flash", "gemini-1.5-flash", "google", LONG_NO_WRITE
    ),
    "gemini-1.5-pro": Case("google/gemini-1.5-pro", "gemini-1.5-pro", "google", PLAIN),
    "gemini-3-pro-preview long": Case(
        "google/gemini-3-pro-preview", "gemini-3-pro-preview", "google", LONG_NO_WRITE
    ),
    # open models
    "groq llama-3.3-70b": Case(
        "groq/llama-3.3-70b-versatile", "llama-3.3-70b-versatile", "groq", PLAIN
    ),
    "groq gpt-oss-120b": Case("groq/openai/gpt-oss-120b", "openai/gpt-oss-120b", "groq", SMALL),
    "groq gpt-oss-120b batch": Case(
        "groq/openai/gpt-oss-120b", "openai/gpt-oss-120b", "groq", SMALL, batch=True
    ),
    "together llama-3.3-70b": Case(
        "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together",
        PLAIN,
    ),
    "openrouter llama-3.3-70b": Case(
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        "meta-llama/llama-3.3-70b-instruct",
        "openrouter",
        PLAIN,
    ),
    "openrouter deepseek-r1": Case(
        "openrouter/deepseek/deepseek-r1", "deepseek/deepseek-r1", "openrouter", REASONING
    ),
    "openrouter mistral-small-3.2": Case(
        "openrouter/mistralai/mistral-small-3.2-24b-instruct",
        "mistralai/mistral-small-3.2-24b-instruct",
        "openrouter",
        SMALL,
    ),
    # deliberate differences (see KNOWN_DIFFERENCES)
    "claude-sonnet-4 long": Case(
        "anthropic/claude-sonnet-4-0", "claude-sonnet-4-0", "anthropic", LONG
    ),
    "gemini-1.5-pro cached": Case(
        "google/gemini-1.5-pro-002", "gemini-1.5-pro-002", "google", SMALL
    ),
    "gemini-1.5-flash-8b": Case(
        "google/gemini-1.5-flash-8b", "gemini-1.5-flash-8b", "google", PLAIN
    ),
    "o3 before the price cut": Case(
        "openai/o3", "o3", "openai", REASONING, at=datetime(2025, 5, 1, tzinfo=timezone.utc)
    ),
    "gpt-4o before 2024-10-02": Case(
        "openai/gpt-4o", "gpt-4o", "openai", PLAIN, at=datetime(2024, 9, 1, tzinfo=timezone.utc)
    ),
    "gemini-1.5-flash before the cut": Case(
        "google/gemini-1.5-flash",
        "gemini-1.5-flash",
        "google",
        PLAIN,
        at=datetime(2024, 6, 1, tzinfo=timezone.utc),
    ),
    "gemini-1.5-pro before the cut": Case(
        "google/gemini-1.5-pro",
        "gemini-1.5-pro",
        "google",
        PLAIN,
        at=datetime(2024, 9, 1, tzinfo=timezone.utc),
    ),
    "claude batch before genai-prices lists it": Case(
        "anthropic/claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "anthropic",
        CACHE,
        batch=True,
        at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    ),
}

KNOWN_DIFFERENCES: dict[str, str] = {
    "claude-sonnet-4 long": (
        "Anthropic charges Claude Sonnet 4 prompts over 200k tokens (1M-context beta) at "
        "$6/$22.50; genai-prices has no long-context tier for Sonnet 4."
    ),
    "gemini-1.5-pro cached": (
        "Gemini 1.5 Pro has a context-cache rate ($0.3125, $0.625 over 128k); genai-prices "
        "lists none for gemini-1.5-pro and charges cached tokens as input."
    ),
    "gemini-1.5-flash-8b": (
        "Flash-8B costs half of Flash; genai-prices matches gemini-1.5-flash-8b to "
        "gemini-1.5-flash (substring match)."
    ),
    "o3 before the price cut": (
        "Before 2025-06-10 o3 cost $10/$40 with cached input at $2.50; genai-prices' first "
        "o3 period has cached input at $0.50."
    ),
    "gpt-4o before 2024-10-02": (
        "Until 2024-10-02 the gpt-4o alias served gpt-4o-2024-05-13 at $5/$15; genai-prices "
        "prices gpt-4o at $2.50/$10 at every date."
    ),
    "gemini-1.5-flash before the cut": (
        "Gemini 1.5 Flash cost $0.35/$1.05 until 2024-08-12; genai-prices has only the later price."
    ),
    "gemini-1.5-pro before the cut": (
        "Gemini 1.5 Pro cost $3.50/$10.50 until 2024-10-01; genai-prices has only the later price."
    ),
    "claude batch before genai-prices lists it": (
        "Anthropic's batch discount (50%) predates 2026-10-14, the start date genai-prices "
        "gives its batch variants; before it genai-prices charges batch calls in full."
    ),
}


def genai_cost(case: Case) -> Decimal:
    usage = case.usage
    fields: dict[str, int] = {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
    }
    if case.ttl == "1h":
        fields["cache_write_1h_tokens"] = usage.cache_write_tokens
    result = genai_prices.calc_price(
        genai_prices.Usage(**fields),
        case.ref,
        provider_id=case.provider_id,
        genai_request_timestamp=case.at,
        price_context={"processing": "batch"} if case.batch else None,
    )
    total = result.total_price
    assert isinstance(total, Decimal)
    return total


def ours(case: Case) -> Decimal:
    cost = price(case.model, case.usage, at=case.at, batch=case.batch, cache_write_ttl=case.ttl)
    assert cost is not None, case.model
    return cost


SAME = [name for name in CASES if name not in KNOWN_DIFFERENCES]


def test_enough_models_are_cross_checked() -> None:
    assert len({CASES[name].model for name in SAME}) >= 15
    assert set(KNOWN_DIFFERENCES) <= set(CASES)


@pytest.mark.parametrize("name", SAME)
def test_same_cost_as_genai_prices(name: str) -> None:
    case = CASES[name]
    assert ours(case) == genai_cost(case)


@pytest.mark.parametrize("name", list(KNOWN_DIFFERENCES))
def test_known_difference_is_real(name: str) -> None:
    case = CASES[name]
    assert ours(case) != genai_cost(case), f"no longer differs: drop {name!r} from the list"
