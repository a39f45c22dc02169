"""The SQL store's budgets and response cache (DESIGN §11, migration 11).

A reservation is one ``UPDATE ... SET reserved = reserved + x WHERE spent + reserved + x <=
cap`` per scope (the run's budget, the step's), all in one transaction: on Postgres the row
lock makes a concurrent reservation from any process wait and re-check the condition; on
SQLite the first UPDATE takes the database's write lock. Amounts are integer units
(``MONEY_UNIT``), so the comparison is exact on both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .._money import sum_money, times_money
from ._rows import utcnow
from ._spend_rows import BudgetRow, CacheEntry, CacheStats, from_units, to_units
from ._sql_base import SqlBase
from ._tables import WorkflowBudget, WorkflowCache

__all__ = ["BUDGETS", "CACHE", "SqlSpend"]

BUDGETS = cast(sa.Table, WorkflowBudget.__table__)  # type: ignore[attr-defined]
CACHE = cast(sa.Table, WorkflowCache.__table__)  # type: ignore[attr-defined]


class _Refused(Exception):
    """Rolls a reservation back: ``scope``'s cap would be crossed."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


def _budget(row: Any) -> BudgetRow:
    return BudgetRow(
        run_id=row.run_id,
        scope=row.scope,
        cap=from_units(int(row.cap_units)),
        spent=from_units(int(row.spent_units)),
        reserved=from_units(int(row.reserved_units)),
        refused=int(row.refused),
        reason=row.reason,
    )


def _entry(row: Any) -> CacheEntry:
    return CacheEntry(
        key=row.key,
        model=row.model,
        request=row.request,
        response=row.response,
        cost=row.cost_usd,
        created_at=row.created_at,
        hits=int(row.hits),
        last_hit_at=row.last_hit_at,
    )


class SqlSpend(SqlBase):
    """Budgets (reserve, settle) and the response cache, on SQLite and Postgres."""

    def _scope_is(self, scopes: Sequence[str]) -> sa.ColumnElement[bool]:
        return sa.or_(*(self.step_is(BUDGETS.c.scope, s) for s in scopes))

    async def open_budgets(
        self, run_id: str, caps: Mapping[str, Decimal | None], spent: Mapping[str, Decimal]
    ) -> list[BudgetRow]:
        async with self.begin() as conn:
            rows = await conn.execute(sa.select(BUDGETS).where(BUDGETS.c.run_id == run_id))
            stored = {r.scope: r for r in rows}
            now = utcnow()
            # a budget kept (a step's no longer given): its reservations and reason reset too
            caps = {**dict.fromkeys(stored), **caps}
            for scope, cap in caps.items():
                used = to_units(spent.get(scope, Decimal(0)))
                if scope in stored:
                    values: dict[str, Any] = {
                        "spent_units": used,
                        "reserved_units": 0,
                        "reason": None,
                    }
                    if cap is not None:
                        values["cap_units"] = to_units(cap)
                    await conn.execute(
                        sa.update(BUDGETS)
                        .where(BUDGETS.c.id == stored[scope].id)
                        .values(updated_at=now, **values)
                    )
                elif cap is not None:
                    await conn.execute(
                        sa.insert(BUDGETS).values(
                            run_id=run_id,
                            scope=scope,
                            cap_units=to_units(cap),
                            spent_units=used,
                            reserved_units=0,
                            refused=0,
                            updated_at=now,
                        )
                    )
            rows = await conn.execute(
                sa.select(BUDGETS).where(BUDGETS.c.run_id == run_id).order_by(BUDGETS.c.id)
            )
            return [_budget(r) for r in rows]

    async def get_budgets(self, run_id: str) -> list[BudgetRow]:
        async with self.connect() as conn:
            rows = await conn.execute(
                sa.select(BUDGETS).where(BUDGETS.c.run_id == run_id).order_by(BUDGETS.c.id)
            )
            return [_budget(r) for r in rows]

    async def reserve(self, run_id: str, scopes: Sequence[str], amount: Decimal) -> str | None:
        units = to_units(amount)
        # A run a budget stopped (a reason on any of its rows) sends no call more, from
        # whichever process (workers: the processes' calls in flight land first).
        stopped = BUDGETS.alias("stopped")
        not_stopped = ~sa.exists().where(stopped.c.run_id == run_id, stopped.c.reason.is_not(None))
        try:
            async with self.begin() as conn:
                for scope in scopes:
                    result = await conn.execute(
                        sa.update(BUDGETS)
                        .where(
                            BUDGETS.c.run_id == run_id,
                            self._scope_is([scope]),
                            BUDGETS.c.spent_units + BUDGETS.c.reserved_units + units
                            <= BUDGETS.c.cap_units,
                            not_stopped,
                        )
                        .values(reserved_units=BUDGETS.c.reserved_units + units)
                    )
                    if result.rowcount != 1:
                        raise _Refused(scope)
        except _Refused as refused:
            async with self.begin() as conn:
                await conn.execute(
                    sa.update(BUDGETS)
                    .where(BUDGETS.c.run_id == run_id, self._scope_is([refused.scope]))
                    .values(refused=BUDGETS.c.refused + 1)
                )
            return refused.scope
        return None

    async def settle(
        self, run_id: str, scopes: Sequence[str], reserved: Decimal, cost: Decimal
    ) -> None:
        held, paid = to_units(reserved), to_units(cost)
        async with self.begin() as conn:
            await conn.execute(
                sa.update(BUDGETS)
                .where(BUDGETS.c.run_id == run_id, self._scope_is(scopes))
                .values(
                    reserved_units=BUDGETS.c.reserved_units - held,
                    spent_units=BUDGETS.c.spent_units + paid,
                )
            )

    async def budget_reached(self, run_id: str, scope: str, reason: str) -> None:
        async with self.begin() as conn:
            await conn.execute(
                sa.update(BUDGETS)
                .where(BUDGETS.c.run_id == run_id, self._scope_is([scope]))
                .values(reason=reason, updated_at=utcnow())
            )

    # ── the response cache ────────────────────────────────────────────────────

    async def cache_get(self, key: str) -> CacheEntry | None:
        """The entry of ``key``, its hit counted; None if there is none."""
        async with self.begin() as conn:
            result = await conn.execute(
                sa.update(CACHE)
                .where(CACHE.c.key == key)
                .values(hits=CACHE.c.hits + 1, last_hit_at=utcnow())
            )
            if result.rowcount != 1:
                return None
            row = (await conn.execute(sa.select(CACHE).where(CACHE.c.key == key))).first()
            return None if row is None else _entry(row)

    async def cache_put(self, entry: CacheEntry) -> None:
        """Store ``entry`` unless its key is stored already (the first answer stays)."""
        values = {
            "key": entry.key,
            "model": entry.model,
            "request": entry.request,
            "response": entry.response,
            "cost_usd": entry.cost,
            "hits": 0,
            "created_at": entry.created_at,
        }
        dialect: Any = postgresql if self.dialect == "postgresql" else sqlite
        stmt = dialect.insert(CACHE).values(**values).on_conflict_do_nothing(index_elements=["key"])
        async with self.begin() as conn:
            await conn.execute(stmt)

    async def cache_stats(self) -> CacheStats:
        size = sa.func.length(CACHE.c.request) + sa.func.length(CACHE.c.response)
        async with self.connect() as conn:
            total = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.coalesce(sa.func.sum(size), 0),
                        sa.func.coalesce(sa.func.sum(CACHE.c.hits), 0),
                        sa.func.min(CACHE.c.created_at),
                        sa.func.max(CACHE.c.created_at),
                    ).select_from(CACHE)
                )
            ).one()
            hit = await conn.execute(
                sa.select(CACHE.c.hits, CACHE.c.cost_usd).where(
                    CACHE.c.hits > 0, CACHE.c.cost_usd.is_not(None)
                )
            )
            saved = sum_money(times_money(Decimal(c), int(h)) for h, c in hit)
        return CacheStats(int(total[0]), int(total[1]), int(total[2]), saved, total[3], total[4])

    async def cache_clear(self, older_than: datetime | None = None) -> int:
        """Delete the entries made before ``older_than`` (every entry for None); how many."""
        stmt = sa.delete(CACHE)
        if older_than is not None:
            stmt = stmt.where(CACHE.c.created_at < older_than)
        async with self.begin() as conn:
            result = await conn.execute(stmt)
            return int(result.rowcount or 0)

    async def count_cache(self, older_than: datetime | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(CACHE)
        if older_than is not None:
            query = query.where(CACHE.c.created_at < older_than)
        async with self.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
