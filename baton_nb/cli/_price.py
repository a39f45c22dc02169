"""``baton-nb price MODEL``: where a model's price comes from, every rate, and a call's cost."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from decimal import Decimal
from typing import Any

import anyio.to_thread

from .._errors import ConfigurationError
from .._money import fmt_money
from .._usage import Usage
from ._output import out as _out

__all__ = ["PRICING_ENV", "add_price_arguments", "cmd_price", "use_price_file"]

PRICING_ENV = "BATON_NB_PRICING"  # the price file of the commands that price, given no --pricing

_MATCHED = {
    "exact": "its own id",
    "alias": "an alias",
    "snapshot": "a dated snapshot of it",
}
# genai-prices' per-unit keys that are not per 1M tokens: (label, divisor label)
_UNITS = {"kcount": "per 1,000", "mtok": "per 1M tokens", "mchars": "per 1M characters",
          "hours": "per hour", "gpixels": "per 1G pixels", "kpages": "per 1,000 pages"}  # fmt: skip


def use_price_file(given: str | None, *, from_env: bool) -> str | None:
    """Load the price file of ``--pricing`` (``given``), else, if ``from_env`` (the command
    prices calls), of ``$BATON_NB_PRICING``, as ``bn.configure(pricing=...)`` does; return
    its path (None: no file loaded). A bad file raises `ConfigurationError` naming the
    file, the model and the field, and changes nothing."""
    from ..pricing import configure_pricing

    if given is not None:
        configure_pricing(given)
        return given
    path = os.environ.get(PRICING_ENV) if from_env else None
    if not path:
        return None
    try:
        configure_pricing(path)
    except ConfigurationError as exc:  # the user typed no --pricing: say where it came from
        raise ConfigurationError(
            f"{exc} (the price file is the environment variable {PRICING_ENV}: fix or unset "
            "it, or pass --pricing PATH)"
        ) from None
    return path


def add_price_arguments(p: argparse.ArgumentParser, count: Any, when: Any) -> None:
    p.add_argument("model", metavar="MODEL", help="provider/model, e.g. openai/gpt-4o-mini")
    p.add_argument("--at", type=when, metavar="WHEN", help="prices in force then (default: now)")
    p.add_argument(
        "--input-tokens", type=count, metavar="N", help="price a call of N prompt tokens"
    )
    p.add_argument("--cached-tokens", type=count, metavar="N", help="... N of them cache reads")
    p.add_argument(
        "--cache-write-tokens", type=count, metavar="N", help="... N of them cache writes (5 m)"
    )
    p.add_argument(
        "--cache-write-1h-tokens", type=count, metavar="N", help="... N of them 1-hour cache writes"
    )
    p.add_argument("--output-tokens", type=count, metavar="N", help="... and N output tokens")
    p.add_argument("--reasoning-tokens", type=count, metavar="N", help="... N of them reasoning")
    p.add_argument("--web-searches", type=count, metavar="N", help="... and N web searches")
    p.add_argument("--batch", action="store_true", help="at the Batch API's rates")


def _usage(args: argparse.Namespace) -> Usage | None:
    counts = {
        "input_tokens": args.input_tokens,
        "cached_input_tokens": args.cached_tokens,
        "cache_write_tokens": args.cache_write_tokens,
        "cache_write_1h_tokens": args.cache_write_1h_tokens,
        "output_tokens": args.output_tokens,
        "reasoning_tokens": args.reasoning_tokens,
        "web_search_requests": args.web_searches,
    }
    if all(v is None for v in counts.values()):
        return None
    values = {k: v or 0 for k, v in counts.items()}
    # the 1-hour writes are cache writes too; the prompt holds every cached and written token
    values["cache_write_tokens"] += values["cache_write_1h_tokens"]
    cached_and_written = values["cached_input_tokens"] + values["cache_write_tokens"]
    values["input_tokens"] = max(values["input_tokens"], cached_and_written)
    values["output_tokens"] = max(values["output_tokens"], values["reasoning_tokens"])
    return Usage(**values)


async def cmd_price(args: argparse.Namespace) -> int:
    # the first price reads the overrides and imports genai-prices: off the event loop
    return await anyio.to_thread.run_sync(_price, args)


def _price(args: argparse.Namespace) -> int:
    from ..pricing import lookup, near_priced, price

    model, at = args.model, args.at
    found = lookup(model, at=at)  # mock/NAME: a price file's mock entry, else NAME
    if found is None:
        near = near_priced(model)
        hint = f"Did you mean {near!r}? " if near else ""
        if model.startswith("mock/"):
            name = model.split("/", 1)[1]
            advice = (
                f"Price its calls as a known model with ctx.complete(..., price_as="
                f"'openai/gpt-4o-mini'), or add {name!r} under provider 'mock' to a price file"
            )
        else:
            advice = (
                "Name it as provider/model (openai/..., anthropic/...), or add it to a price file"
            )
        loaded = f" (the price file {args.pricing} has none for it)" if args.pricing else ""
        print(
            f"baton-nb: error: no price known for {model!r}{loaded}: its calls cost unknown "
            f"(None), not 0. {hint}{advice}, and pass it with --pricing my_prices.json (or "
            f"{PRICING_ENV}; in Python: bn.configure(pricing='my_prices.json')); format: "
            "docs/pricing.md",
            file=sys.stderr,
        )
        return 1
    _out(price_text(model, found))
    usage = _usage(args)
    if usage is not None:
        with warnings.catch_warnings():  # the line below says it
            warnings.simplefilter("ignore")
            cost = price(model, usage, at=at, batch=args.batch)
        shown = f"${fmt_money(cost)}" if cost is not None else "unknown (a part has no rate)"
        _out(f"a call of {_describe(usage)}{' (batch)' if args.batch else ''}: {shown}")
    return 0


def _describe(usage: Usage) -> str:
    parts = [f"{usage.input_tokens:,} input tokens"]
    if usage.cached_input_tokens:
        parts.append(f"{usage.cached_input_tokens:,} cached")
    if usage.cache_write_5m_tokens:
        parts.append(f"{usage.cache_write_5m_tokens:,} cache writes 5 m")
    if usage.cache_write_1h_tokens:
        parts.append(f"{usage.cache_write_1h_tokens:,} cache writes 1 h")
    text = f"{parts[0]} ({', '.join(parts[1:])})" if parts[1:] else parts[0]
    text += f" + {usage.output_tokens:,} output tokens"
    if usage.reasoning_tokens:
        text += f" ({usage.reasoning_tokens:,} reasoning)"
    if usage.web_search_requests:
        text += f" + {usage.web_search_requests:,} web searches"
    return text


def _money(value: Decimal | None) -> str:
    return "-" if value is None else fmt_money(value)


def price_text(query: str, found: Any) -> str:
    """Every rate of a `ModelPrice` (``lookup()``), with where it comes from."""
    title = f"{query}: {found.provider}/{found.model}" + (f" ({found.name})" if found.name else "")
    lines = [
        title,
        f"  matched by {_MATCHED.get(found.matched, found.matched)}",
        f"  source: {found.price_source}" + (f" ({found.source})" if found.source else ""),
    ]
    if found.valid_from or found.valid_until:
        span = f"  prices valid from {found.valid_from or 'the start'}"
        lines.append(span + (f" until {found.valid_until}" if found.valid_until else ""))
    rows = [("input", "input"), ("output", "output"), ("cached input", "cached_input"),
            ("cache write 5 m", "cache_write"), ("cache write 1 h", "cache_write_1h")]  # fmt: skip
    batch = found.batch
    lines.append("  USD per 1M tokens   standard" + ("      batch" if batch else ""))
    for label, key in rows:
        line = f"    {label:<17} {_money(getattr(found.rates, key)):>8}"
        if batch:
            line += f"   {_money(getattr(batch, key)):>8}"
        lines.append(line)
    if not batch:
        lines.append("    (no batch rates: batch calls are charged at the standard rates)")
    for tier in found.tiers:
        rates = ", ".join(f"{label} {_money(getattr(tier.rates, key))}" for label, key in rows)
        lines.append(f"  prompts over {tier.above:,} tokens (the whole call): {rates}")
        if tier.batch is not None and batch:
            rates = ", ".join(f"{label} {_money(getattr(tier.batch, k))}" for label, k in rows)
            lines.append(f"    batch: {rates}")
    for key, value in found.other_rates:
        lines.append(f"  {_other(key)}: ${fmt_money(value)}")
    if found.note:
        lines.append(f"  note: {found.note}")
    return "\n".join(lines)


def _other(key: str) -> str:
    """``web_searches_kcount`` -> ``web searches, per 1,000``."""
    name, _, unit = key.rpartition("_")
    return f"{name.replace('_', ' ')}, {_UNITS.get(unit, unit)}"
