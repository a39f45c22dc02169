"""Price files: the shipped ones are valid, user files override them, bad files fail clearly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from baton_nb._errors import ConfigurationError
from baton_nb._usage import Usage
from baton_nb.pricing import (
    PriceFile,
    _api,
    _registry,
    configure_pricing,
    known_models,
    load_price_file,
    lookup,
    price,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "pricing").glob("*.json"))


@pytest.fixture(autouse=True)
def _fresh_pricing() -> Iterator[None]:
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()
    _api._warned.clear()


def write(tmp_path: Path, data: Any, name: str = "my_prices.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def provider(models: dict[str, Any], name: str = "openai", **extra: Any) -> dict[str, Any]:
    return {"provider": name, **extra, "models": models}


def one(frm: str = "2024-01-01", **rates: Any) -> dict[str, Any]:
    return {"periods": [{"from": frm, "input": "1", "output": "2", **rates}]}


# --- shipped tables


def test_shipped_files_are_found_in_the_source_tree() -> None:
    assert _registry.data_dir() == REPO / "pricing"
    names = {p.stem for p in SHIPPED}
    assert {"openai", "anthropic", "google", "together"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_file_is_valid(path: Path) -> None:
    loaded = load_price_file(path)
    assert isinstance(loaded, PriceFile)
    assert loaded.providers[0].provider == path.stem
    assert loaded.models()


def test_shipped_prices_are_strings_in_the_json() -> None:
    def walk(value: Any) -> Iterator[Any]:
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)
        else:
            yield value

    for path in SHIPPED:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert not any(isinstance(v, float) for v in walk(data)), path


def test_long_context_tiers_are_shipped() -> None:
    for model in (
        "google/gemini-2.5-pro",
        "anthropic/claude-sonnet-4",
        "anthropic/claude-sonnet-4-5",
    ):
        mp = lookup(model)
        assert mp is not None and [t.above for t in mp.tiers] == [200_000], model
    for model in ("anthropic/claude-sonnet-4-5", "anthropic/claude-opus-4-1"):
        mp = lookup(model)
        assert mp is not None and mp.rates.cache_write_1h == 2 * mp.rates.input


# --- configure_pricing


def test_user_prices_win_and_add_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        provider(
            {
                "gpt-4o-mini": one(input="100", output="200"),
                "my-finetune": one() | {"aliases": ["my-ft"]},
            }
        ),
    )
    configure_pricing(path)
    assert price("openai/gpt-4o-mini", Usage(input_tokens=10**6)) == Decimal(100)
    # a dated snapshot now finds the user's gpt-4o-mini by prefix, and its shipped alias too
    assert price("openai/gpt-4o-mini-2024-07-18", Usage(output_tokens=10**6)) == Decimal(200)
    assert price("openai/my-ft", Usage(input_tokens=10**6)) == Decimal(1)
    assert "openai/my-finetune" in known_models()
    # the rest of the shipped table is untouched
    assert price("openai/gpt-4o", Usage(input_tokens=10**6)) == Decimal("2.5")


def test_user_file_with_a_new_provider_and_provider_alias(tmp_path: Path) -> None:
    data = {
        "providers": [
            provider({"llama3.1:8b": one(input="0", output="0")}, name="local"),
            provider({"gemini-2.5-flash": one(input="9", output="9")}, name="gemini"),
        ]
    }
    configure_pricing(write(tmp_path, data))
    assert price("local/llama3.1:8b", Usage(input_tokens=5, output_tokens=5)) == Decimal(0)
    # `gemini` is an alias of the shipped `google` provider: the user's price lands there
    assert price("google/gemini-2.5-flash", Usage(input_tokens=10**6)) == Decimal(9)
    assert price("google/gemini-2.5-pro", Usage(input_tokens=100_000)) == Decimal("0.125")


def test_user_file_wins_over_overrides_and_genai_prices(tmp_path: Path) -> None:
    data = {
        "providers": [
            provider({"gemini-1.5-flash-8b": one(input="5")}, name="google"),  # an override's
            provider({"claude-opus-4-7": one(input="6")}, name="anthropic"),  # genai-prices'
        ]
    }
    configure_pricing(write(tmp_path, data))
    for name, rate in (
        ("google/gemini-1.5-flash-8b", "5"),
        ("anthropic/claude-opus-4-7", "6"),
        ("anthropic/claude-opus-4.7", "6"),  # genai-prices' alias of the model replaced
        ("anthropic/claude-opus-4-7-20260416", "6"),  # a dated snapshot of it
    ):
        found = lookup(name)
        assert found is not None and found.price_source.startswith("user file"), name
        assert price(name, Usage(input_tokens=10**6)) == Decimal(rate), name


def test_until_hands_over_to_the_next_source(tmp_path: Path) -> None:
    old_price = {"gpt-4o-mini": one("2024-07-18", input="9") | {"until": "2025-01-01"}}
    configure_pricing(write(tmp_path, provider(old_price)))
    before = lookup("openai/gpt-4o-mini", at=datetime(2024, 12, 31, tzinfo=timezone.utc))
    after = lookup("openai/gpt-4o-mini", at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert before is not None and before.rates.input == Decimal(9)
    assert before.valid_until == date(2025, 1, 1)
    assert after is not None and after.price_source.startswith("genai-prices")


def test_later_configure_wins(tmp_path: Path) -> None:
    configure_pricing(write(tmp_path, provider({"gpt-4o": one(input="7")}), "a.json"))
    configure_pricing(write(tmp_path, provider({"gpt-4o": one(input="8")}), "b.json"))
    assert price("openai/gpt-4o", Usage(input_tokens=10**6)) == Decimal(8)


def test_configure_accepts_pathlike_and_str(tmp_path: Path) -> None:
    path = write(tmp_path, provider({"gpt-4o": one(input="7")}))
    configure_pricing(str(path))
    assert price("openai/gpt-4o", Usage(input_tokens=10**6)) == Decimal(7)


def test_bad_file_changes_nothing(tmp_path: Path) -> None:
    bad = provider({"gpt-4o": one(input="7"), "gpt-4o-mini": one(input=7)})
    with pytest.raises(ValueError):
        configure_pricing(write(tmp_path, bad))
    assert price("openai/gpt-4o", Usage(input_tokens=10**6)) == Decimal("2.5")


# --- strict validation: (case, file content, fragments the message must contain)
BAD: list[tuple[str, Any, tuple[str, ...]]] = [
    ("float price", provider({"m": one(input=0.5)}), ("'m'", "periods[0]", "'input'", '"2.50"')),
    ("int price", provider({"m": one(output=2)}), ("'output'", "decimal string")),
    ("negative price", provider({"m": one(input="-1")}), ("'input'", "non-negative")),
    ("exponent price", provider({"m": one(input="1e-3")}), ("'input'",)),
    ("unknown model field", provider({"m": one() | {"price": "1"}}), ("unknown field 'price'",)),
    (
        "unknown period field",
        provider({"m": one(cache_read="1")}),
        ("periods[0]", "unknown field 'cache_read'"),
    ),
    ("unknown file field", provider({"m": one()}, currency="EUR"), ("unknown field 'currency'",)),
    ("bad date", provider({"m": one(frm="2024-13-01")}), ("'from'", "not a real date")),
    ("date format", provider({"m": one(frm="01/02/2024")}), ("'from'", "YYYY-MM-DD")),
    ("missing from", provider({"m": {"periods": [{"input": "1", "output": "1"}]}}), ("'from'",)),
    (
        "missing output",
        provider({"m": {"periods": [{"from": "2024-01-01", "input": "1"}]}}),
        ("'output'",),
    ),
    ("no periods", provider({"m": {"periods": []}}), ("'periods'", "at least one")),
    (
        "periods out of order",
        provider(
            {"m": {"periods": [one("2025-01-01")["periods"][0], one("2024-01-01")["periods"][0]]}}
        ),
        ("increasing 'from' order",),
    ),
    ("no models", provider({}), ("'models'",)),
    ("missing provider", {"models": {"m": one()}}, ("missing required field 'provider'",)),
    ("provider with slash", provider({"m": one()}, name="open/ai"), ("'provider'",)),
    ("duplicate ids", provider({"M": one(), "m": one()}), ("appears twice",)),
    ("alias is an id", provider({"a": one(), "b": one() | {"aliases": ["a"]}}), ("alias 'a'",)),
    (
        "tier above not int",
        provider({"m": one(tiers=[{"above": "200k", "input": "2", "output": "4"}])}),
        ("tiers[0]", "'above'"),
    ),
    (
        "tier must restate rates",
        provider(
            {"m": one(cached_input="0.1", tiers=[{"above": 10, "input": "2", "output": "4"}])}
        ),
        ("tiers[0]", "'cached_input'"),
    ),
    (
        "tier needs batch when period has batch",
        provider(
            {"m": one(batch={"input": "0.5"}, tiers=[{"above": 10, "input": "2", "output": "4"}])}
        ),
        ("tiers[0]", "'batch'"),
    ),
    ("empty batch", provider({"m": one(batch={})}), ("'batch'", "empty")),
    (
        "unknown batch field",
        provider({"m": one(batch={"discount": "0.5"})}),
        ("unknown field 'discount'",),
    ),
    ("not an object", ["openai"], ("JSON object",)),
    (
        "until before the last period",
        provider({"m": one("2025-01-01") | {"until": "2024-06-01"}}),
        ("'until'", "must come after"),
    ),
    ("until not a date", provider({"m": one() | {"until": "soon"}}), ("'until'", "YYYY-MM-DD")),
]


@pytest.mark.parametrize(("data", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_file_is_a_clear_value_error(
    tmp_path: Path, data: Any, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as info:
        configure_pricing(path)
    message = str(info.value)
    assert isinstance(info.value, ConfigurationError)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"provider": "openai", "models": {', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON.*line 1"):
        configure_pricing(path)


def test_duplicate_json_keys(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"provider": "openai", "provider": "x", "models": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup\.json: key 'provider' appears twice"):
        configure_pricing(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.json not found"):
        configure_pricing(tmp_path / "nope.json")
