"""Audit: baton_nb's prices against genai-prices' own ``calc_price``, pair by pair.

Every model genai-prices lists for the providers in scope, asked for by its id, under every
usage shape of ``SHAPES`` today, in batch where either side has batch rates, by each alias
and dated snapshot name genai-prices declares, and at the days around every dated price
change (genai-prices' and the shipped overrides'). Each pair is the same usage, model name,
provider, time and batch flag given to ``bn.price`` and to ``genai_prices.calc_price``;
where the two costs differ the pair is put down to a cause:

- ``override``: a shipped override answered (``pricing/*.json``; each entry's note says
  why it is better than genai-prices);
- ``batch before genai-prices dates it``: genai-prices applies its batch rates from the day
  it checked them (2026-10-14 for most), baton_nb from the model's first day;
- ``a part of the usage has no rate``: web searches on a model without a web-search
  price, output tokens on an embedding model: genai-prices charges them nothing, baton_nb
  reports the cost as unknown (``None``) rather than a cost that leaves them out;
- ``genai-prices matches another model``: genai-prices' match rules take a different model
  for the name (a sibling), baton_nb the named one;
- ``genai-prices matches nothing by this name``: a model's id (``codestral``,
  ``ft:gpt-4o``) or a name its own rule spells (``ft:gpt-4o-2024``) that its match rule
  does not accept; baton_nb prices a model by its id in genai-prices' data;
- ``unexplained``: anything else, a bug. ``tests/unit/test_pricing_genai.py`` requires none.

Run ``python -m tests.pricing_audit`` for the figures (``--all`` for every provider
genai-prices lists, not only the ones in scope).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any

import genai_prices
from genai_prices import data_snapshot

from baton_nb._usage import Usage
from baton_nb.pricing import _genai, lookup, price
from baton_nb.pricing._cost import missing_rate
from baton_nb.pricing._parse import load_price_file
from baton_nb.pricing._registry import OVERRIDE_SOURCE, data_dir

UTC = timezone.utc
# A fixed "today", so that the audit does not change with the calendar.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# The providers baton_nb calls (or prices by name) and the first-party vendors.
SCOPE = (
    "openai",
    "anthropic",
    "google",
    "x-ai",
    "mistral",
    "deepseek",
    "groq",
    "together",
    "openrouter",
)
HISTORY_SHAPES = ("plain", "cached", "mixed cache writes", "reasoning")
NAME_SHAPES = ("plain", "cached", "long 200k+1")


def _u(
    inp: int = 0,
    cached: int = 0,
    write: int = 0,
    write_1h: int = 0,
    out: int = 0,
    reasoning: int = 0,
    searches: int = 0,
) -> Usage:
    return Usage(inp, cached, write, out, reasoning, write_1h, searches)


SHAPES: dict[str, Usage] = {
    "zero": _u(),
    "plain": _u(12_345, out=678),
    "tiny primes": _u(7, out=3),
    "input only": _u(1_000_000),
    "output only": _u(out=1_000_000),
    "cached": _u(10_000, cached=4_000, out=500),
    "mostly cached": _u(100_000, cached=99_000, out=10),
    "cache write 5m": _u(10_000, write=3_000, out=200),
    "cache write 1h": _u(10_000, write=3_000, write_1h=3_000, out=200),
    "mixed cache writes": _u(100_000, cached=13_000, write=24_000, write_1h=13_000, out=5_000),
    "reasoning": _u(20_000, cached=5_000, out=9_000, reasoning=7_000),
    "all reasoning": _u(1_000, out=4_000, reasoning=4_000),
    "long output": _u(2_000, out=100_000),
    "32k": _u(32_000, out=1_000),
    "32k+1": _u(32_001, out=1_000),
    "100k": _u(100_000, cached=10_000, out=1_000),
    "100k+1": _u(100_001, cached=10_000, out=1_000),
    "128k": _u(128_000, cached=20_000, out=2_000),
    "128k+1": _u(128_001, cached=20_000, out=2_000),
    "long 200k-1": _u(199_999, cached=50_000, write=10_000, out=3_000),
    "long 200k": _u(200_000, cached=50_000, write=10_000, out=3_000),
    "long 200k+1": _u(200_001, cached=50_000, write=10_000, out=3_000),
    "256k+1": _u(256_001, out=1_000),
    "272k": _u(272_000, cached=100_000, out=4_000, reasoning=1_000),
    "272k+1": _u(272_001, cached=100_000, out=4_000, reasoning=1_000),
    "512k+1": _u(512_001, out=1_000),
    "524288+1": _u(524_289, out=1_000),
    "1M": _u(1_000_000, out=250_000),
    "1M+1 cached": _u(1_000_001, cached=400_000, out=1),
    "2M": _u(2_000_000, cached=500_000, write=100_000, write_1h=40_000, out=50_000),
    "web search": _u(5_000, out=300, searches=1),
    "web searches and cache": _u(50_000, cached=20_000, write=5_000, out=2_000, searches=3),
    "everything": _u(
        345_678, cached=123_456, write=23_456, write_1h=3_456, out=45_678, reasoning=5_678
    ),
}


@dataclass(frozen=True)
class Pair:
    provider: str
    name: str
    model_id: str
    shape: str
    batch: bool
    at: datetime
    what: str  # today | batch | name | history


@dataclass(frozen=True)
class Outcome:
    pair: Pair
    ours: Decimal | None
    theirs: Decimal | None
    cause: str | None  # None: same cost


def genai_usage(usage: Usage) -> Any:
    """The same usage in genai-prices' terms, written out here rather than taken from
    baton_nb (the audit checks baton_nb's conversion too)."""
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
        web_searches=usage.web_search_requests,
    )


def theirs(pair: Pair) -> tuple[Decimal | None, str | None]:
    """genai-prices' cost and the model it matched (``None`` if it finds none)."""
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            result = genai_prices.calc_price(
                genai_usage(SHAPES[pair.shape]),
                pair.name,
                provider_id=pair.provider,
                genai_request_timestamp=pair.at,
                price_context={"processing": "batch"} if pair.batch else None,
            )
        except LookupError:
            return None, None
    return result.total_price.normalize(), result.model.id


def ours(pair: Pair) -> Decimal | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return price(
            f"{pair.provider}/{pair.name}", SHAPES[pair.shape], at=pair.at, batch=pair.batch
        )


def compare(pair: Pair) -> Outcome:
    mine = ours(pair)
    cost, matched = theirs(pair)
    if mine == cost:
        return Outcome(pair, mine, cost, None)
    return Outcome(pair, mine, cost, _cause(pair, matched))


def _cause(pair: Pair, matched: str | None) -> str:
    found = lookup(f"{pair.provider}/{pair.name}", at=pair.at)
    if found is not None and ours(pair) is None:
        standard, batch = found.engine
        if missing_rate(
            batch if pair.batch and batch is not None else standard, SHAPES[pair.shape]
        ):
            return "a part of the usage has no rate"
    if found is not None and found.price_source == OVERRIDE_SOURCE:
        return f"override {found.model_ref}"
    if matched is not None and found is not None and matched.lower() != found.model.lower():
        return "genai-prices matches another model"
    if matched is None and found is not None:
        return "genai-prices matches nothing by this name"
    info = _model(pair.provider, pair.model_id)
    if pair.batch and info is not None:
        first = _genai.batch_starts(info)
        if first is not None and pair.at.date() < first:
            return "batch before genai-prices dates it"
    return "unexplained"


def _model(provider: str, model_id: str) -> Any | None:
    found = _genai.find_provider(provider)
    return next((m for m in found.models if m.id == model_id), None) if found else None


# ── which pairs ───────────────────────────────────────────────────────────────


def providers(everything: bool = False) -> list[Any]:
    listed = data_snapshot.get_snapshot().providers
    return [p for p in listed if everything or p.id in SCOPE]


def _has_batch(provider: str, model: Any) -> bool:
    if any(v.when == {"processing": "batch"} for v in model.price_variants or ()):
        return True
    found = lookup(f"{provider}/{model.id}", at=NOW)
    return found is not None and found.batch is not None


def _dated_names(model: Any) -> Iterator[tuple[str, str]]:
    """Alias names genai-prices declares, and a dated snapshot for each name it matches by
    prefix (``claude-3-5-sonnet`` -> ``claude-3-5-sonnet-20250101``)."""
    seen = {model.id.lower()}
    for name in _genai.model_names(model):
        if name.lower() not in seen:
            seen.add(name.lower())
            yield name, "alias"
    prefixes = [n for n in _genai.model_names(model) if model.match.is_match(n + "-20250101")]
    for name in prefixes[:1]:
        yield name + "-20250101", "snapshot"


def _history(provider: str, model: Any) -> list[date]:
    days: set[date] = set()
    for cond in model.prices if isinstance(model.prices, list) else ():
        start = getattr(cond.constraint, "start_date", None)
        if start is not None:
            days |= {start - timedelta(days=1), start}
    for variant in model.price_variants or ():
        start = getattr(variant.constraint, "start_date", None)
        if start is not None and variant.when == {"processing": "batch"}:
            days |= {start - timedelta(days=1), start}
    return sorted(days)


def _override_days() -> dict[tuple[str, str], list[date]]:
    """The days around each shipped override's periods and end, by (provider, model id)."""
    out: dict[tuple[str, str], list[date]] = {}
    for path in sorted(data_dir().glob("*.json")):
        for table in load_price_file(path).providers:
            for spec in table.models:
                days = {p.start for p in spec.periods}
                if spec.until is not None:
                    days |= {spec.until - timedelta(days=1), spec.until}
                days |= {d - timedelta(days=1) for d in list(days)}
                provider = _genai.find_provider(table.provider)
                key = (provider.id if provider else table.provider, spec.id.lower())
                out[key] = sorted(days)
    return out


def pairs(everything: bool = False) -> Iterator[Pair]:
    overrides = _override_days()
    for provider in providers(everything):
        for model in provider.models:
            pid, mid = provider.id, model.id
            for shape in SHAPES:
                yield Pair(pid, mid, mid, shape, False, NOW, "today")
            if _has_batch(pid, model):
                for shape in SHAPES:
                    yield Pair(pid, mid, mid, shape, True, NOW, "batch")
            for name, _kind in _dated_names(model):
                for shape in NAME_SHAPES:
                    yield Pair(pid, name, mid, shape, False, NOW, "name")
            days = set(_history(pid, model)) | set(overrides.get((pid, mid.lower()), ()))
            for day in sorted(days):
                when = datetime.combine(day, NOW.time(), UTC)
                for shape in HISTORY_SHAPES:
                    yield Pair(pid, mid, mid, shape, False, when, "history")
                    yield Pair(pid, mid, mid, shape, True, when, "history")
            if any(hasattr(c.constraint, "start_time") for c in _conditions(model)):
                night = NOW.replace(hour=20)  # a time-of-day price (DeepSeek's off-peak)
                for shape in HISTORY_SHAPES:
                    yield Pair(pid, mid, mid, shape, False, night, "history")


def _conditions(model: Any) -> list[Any]:
    return (
        [c for c in model.prices if c.constraint is not None]
        if isinstance(model.prices, list)
        else []
    )


# ── the figures ───────────────────────────────────────────────────────────────


@dataclass
class Audit:
    outcomes: list[Outcome]

    @property
    def compared(self) -> int:
        return len(self.outcomes)

    @property
    def mismatches(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.cause is not None]

    def by_cause(self) -> Counter[str]:
        return Counter(_cause_group(o.cause) for o in self.mismatches if o.cause)

    def by_override(self) -> Counter[str]:
        return Counter(
            o.cause for o in self.mismatches if o.cause and o.cause.startswith("override")
        )

    def summary(self) -> str:
        models = {(o.pair.provider, o.pair.model_id) for o in self.outcomes}
        names = {(o.pair.provider, o.pair.name) for o in self.outcomes}
        kinds = Counter(o.pair.what for o in self.outcomes)
        lines = [
            f"genai-prices {genai_prices.__version__}, providers: "
            + ", ".join(sorted({o.pair.provider for o in self.outcomes})),
            f"models {len(models):,}, names {len(names):,}, usage shapes {len(SHAPES)}",
            f"pairs compared {self.compared:,} ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items()))
            + ")",
            f"same cost {self.compared - len(self.mismatches):,}, "
            f"different {len(self.mismatches):,}",
        ]
        for cause, count in self.by_cause().most_common():
            lines.append(f"  {cause}: {count:,}")
        for cause, count in sorted(self.by_override().items()):
            lines.append(f"    {cause.removeprefix('override ')}: {count:,}")
        for outcome in [o for o in self.mismatches if o.cause == "unexplained"][:20]:
            p = outcome.pair
            lines.append(
                f"  UNEXPLAINED {p.provider}/{p.name} {p.shape} batch={p.batch} {p.at:%Y-%m-%d}: "
                f"baton_nb {outcome.ours} vs genai-prices {outcome.theirs}"
            )
        return "\n".join(lines)


def _cause_group(cause: str) -> str:
    return "override" if cause.startswith("override") else cause


def run(everything: bool = False) -> Audit:
    return Audit([compare(pair) for pair in pairs(everything)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--all", action="store_true", help="every provider genai-prices lists")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    audit = run(args.all)
    print(audit.summary())
    print(f"({time.perf_counter() - started:.1f} s)")
    return 1 if audit.by_cause().get("unexplained") else 0


if __name__ == "__main__":
    sys.exit(main())
