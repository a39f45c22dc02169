"""Coverage figures: does ``bn.price`` give each current first-party model its own price?

For every model genai-prices prices per token for OpenAI, Anthropic, Google, xAI, Mistral
and DeepSeek, asked for as ``provider/id``: priced at its own price (genai-prices' or a
justified override's), unknown, or silently priced as another model. Uses only the public
``lookup`` / ``price`` API, so it also measures an older checkout::

    python -m tests.pricing_coverage                  # this checkout
    PYTHONPATH=/path/to/old/checkout python tests/pricing_coverage.py
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal, localcontext

import genai_prices
from genai_prices import data_snapshot

from baton_nb._usage import Usage
from baton_nb.pricing import lookup, price

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
VENDORS = ("openai", "anthropic", "google", "x-ai", "mistral", "deepseek")
USAGE = Usage(10_000, 2_000, 0, 500)


def _theirs(model: object, provider: object) -> Decimal:
    usage = genai_prices.Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=500)
    with localcontext() as ctx:
        ctx.prec = 60
        result = model.calc_price(usage, provider, genai_request_timestamp=NOW)  # type: ignore[attr-defined]
    return Decimal(result.total_price).normalize()


def coverage() -> tuple[Counter[str], list[str]]:
    counts: Counter[str] = Counter()
    notes: list[str] = []
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id not in VENDORS:
            continue
        for model in provider.models:
            rates = model.get_prices(NOW)
            if rates.input_mtok is None or rates.output_mtok is None:
                continue  # priced per image, second or page
            name = f"{provider.id}/{model.id}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = price(name, USAGE, at=NOW)
            theirs = _theirs(model, provider)
            found = lookup(name, at=NOW)
            if ours is None:
                counts["unknown"] += 1
            elif found is not None and found.model.lower() != model.id.lower() and ours != theirs:
                counts["priced as another model"] += 1
                ratio = ours / theirs if theirs else Decimal(0)
                notes.append(f"{name} -> {found.provider}/{found.model}: {ratio:.2f}x its price")
            else:
                counts["its own price"] += 1
                if ours != theirs:
                    source = getattr(found, "price_source", "")
                    notes.append(f"{name}: {ours} vs genai-prices {theirs} ({source})")
    return counts, notes


def main() -> int:
    counts, notes = coverage()
    total = sum(counts.values())
    print(f"{total} models priced per token by genai-prices {genai_prices.__version__}")
    for what in ("its own price", "unknown", "priced as another model"):
        print(f"  {what}: {counts[what]}")
    for note in notes:
        print(f"    {note}")
    return 1 if counts["priced as another model"] else 0


if __name__ == "__main__":
    sys.exit(main())
