"""The in-memory store's budgets and response cache (same behaviour as ``_sql_spend``).

Each operation runs without awaiting in the middle: on one event loop it is atomic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from .._money import sum_money, times_money
from ._rows import utcnow
from ._spend_rows import BudgetRow, CacheEntry, CacheStats, from_units, to_units

__all__ = ["MemorySpend", "SpendData"]


@dataclass
class _Budget:
    cap: int
    spent: int = 0
    reserved: int = 0
    refused: int = 0
    reason: str | None = None


@dataclass
class SpendData:
    budgets: dict[str, dict[str, _Budget]]
    cache: dict[str, CacheEntry]


_SPEND: dict[str, SpendData] = {}


class MemorySpend:
    """Budgets and the response cache of a ``memory://NAME`` store."""

    url: str

    @property
    def _spend(self) -> SpendData:
        return _SPEND.setdefault(self.url, SpendData({}, {}))

    def _rows(self, run_id: str) -> list[BudgetRow]:
        budgets = self._spend.budgets.get(run_id, {})
        return [
            BudgetRow(
                run_id,
                s,
                from_units(b.cap),
                from_units(b.spent),
                from_units(b.reserved),
                b.refused,
                b.reason,
            )
            for s, b in budgets.items()
        ]

    async def open_budgets(
        self, run_id: str, caps: Mapping[str, Decimal | None], spent: Mapping[str, Decimal]
    ) -> list[BudgetRow]:
        budgets = self._spend.budgets.setdefault(run_id, {})
        # a budget kept (a step's no longer given): its reservations and reason reset too
        caps = {**dict.fromkeys(budgets), **caps}
        for scope, cap in caps.items():
            stored = budgets.get(scope)
            if stored is None and cap is None:
                continue
            if stored is None:
                stored = budgets[scope] = _Budget(to_units(cap or Decimal(0)))
            elif cap is not None:
                stored.cap = to_units(cap)
            stored.spent = to_units(spent.get(scope, Decimal(0)))
            stored.reserved = 0
            stored.reason = None
        return self._rows(run_id)

    async def get_budgets(self, run_id: str) -> list[BudgetRow]:
        return self._rows(run_id)

    async def reserve(self, run_id: str, scopes: Sequence[str], amount: Decimal) -> str | None:
        units = to_units(amount)
        budgets = self._spend.budgets.get(run_id, {})
        stopped = any(b.reason for b in budgets.values())  # a budget stopped the run
        for scope in scopes:
            b = budgets.get(scope)
            if b is None or stopped or b.spent + b.reserved + units > b.cap:
                if b is not None:
                    b.refused += 1
                return scope
        for scope in scopes:
            budgets[scope].reserved += units
        return None

    async def settle(
        self, run_id: str, scopes: Sequence[str], reserved: Decimal, cost: Decimal
    ) -> None:
        budgets = self._spend.budgets.get(run_id, {})
        for scope in scopes:
            b = budgets.get(scope)
            if b is not None:
                b.reserved -= to_units(reserved)
                b.spent += to_units(cost)

    async def budget_reached(self, run_id: str, scope: str, reason: str) -> None:
        b = self._spend.budgets.get(run_id, {}).get(scope)
        if b is not None:
            b.reason = reason

    def count_budgets(self, run_ids: set[str]) -> int:
        budgets = self._spend.budgets
        return sum(len(budgets.get(run_id, {})) for run_id in run_ids)

    def forget_budgets(self, run_ids: set[str]) -> int:
        count = self.count_budgets(run_ids)
        for run_id in run_ids:
            self._spend.budgets.pop(run_id, None)
        return count

    async def cache_get(self, key: str) -> CacheEntry | None:
        entry = self._spend.cache.get(key)
        if entry is None:
            return None
        entry = self._spend.cache[key] = replace(entry, hits=entry.hits + 1, last_hit_at=utcnow())
        return entry

    async def cache_put(self, entry: CacheEntry) -> None:
        self._spend.cache.setdefault(entry.key, replace(entry, hits=0, last_hit_at=None))

    async def cache_stats(self) -> CacheStats:
        entries = list(self._spend.cache.values())
        return CacheStats(
            entries=len(entries),
            size_bytes=sum(len(e.request) + len(e.response) for e in entries),
            hits=sum(e.hits for e in entries),
            saved=sum_money(times_money(e.cost, e.hits) for e in entries if e.cost is not None),
            oldest=min((e.created_at for e in entries), default=None),
            newest=max((e.created_at for e in entries), default=None),
        )

    async def cache_clear(self, older_than: datetime | None = None) -> int:
        cache = self._spend.cache
        gone = [k for k, e in cache.items() if older_than is None or e.created_at < older_than]
        for key in gone:
            del cache[key]
        return len(gone)

    async def count_cache(self, older_than: datetime | None = None) -> int:
        entries = self._spend.cache.values()
        return sum(1 for e in entries if older_than is None or e.created_at < older_than)
