"""``baton-nb cache``: the response cache (DESIGN §11) of a database: its size, hits and
what they saved; ``--clear`` (with ``--older-than AGE``) deletes answers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from .._money import fmt_money, plural
from ..store import Store
from ._output import out

__all__ = ["add_cache_arguments", "cmd_cache"]


def add_cache_arguments(p: argparse.ArgumentParser, duration: Callable[[str], Any]) -> None:
    p.add_argument("--clear", action="store_true", help="delete cached answers (all by default)")
    p.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help="with --clear: only answers cached longer ago than AGE (e.g. 30d)",
    )


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


async def cmd_cache(args: argparse.Namespace) -> int:
    older: timedelta | None = args.older_than
    async with await Store.open(args.db) as store:
        if args.clear:
            cutoff = None if older is None else datetime.now(timezone.utc) - older
            gone = await store.cache_clear(cutoff)
            out(f"deleted {plural(gone, 'cached answer')}")
            return 0
        stats = await store.cache_stats()
    out(f"{plural(stats.entries, 'cached answer')}, {_size(stats.size_bytes)}")
    out(f"{plural(stats.hits, 'hit')}, ${fmt_money(stats.saved)} saved")
    if stats.entries:
        out(f"oldest {_when(stats.oldest)}, newest {_when(stats.newest)}")
    return 0
