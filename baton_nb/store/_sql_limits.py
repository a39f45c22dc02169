"""``bn.Limit`` held across all workers through Postgres (migration 12): the grants of each
provider's sliding windows and its concurrency slots, each changed under a transaction-level
advisory lock per provider, timed by the database's clock (one clock for every machine).

Planning a grant is the limiter's own rule (``plan``, from ``baton_nb.llm``): the store only
loads the grants still counting, hands them over under the lock and keeps the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from ._sql_base import SqlBase

__all__ = ["SLOTS_CHANNEL", "Plan", "SqlLimits"]

# A concurrency slot was let go (payload: the provider): workers waiting for one of that
# provider's slots try again at once (their poll is only the safety net).
SLOTS_CHANNEL = "baton_nb_slots"

# (the grants still counting as (at, amount), oldest first; now) -> (at, amount) of the new one
Plan = Callable[[Sequence[tuple[float, float]], float], tuple[float, float]]

_NOW = "extract(epoch from clock_timestamp())::float8"
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(:key, 7261530212))"


class SqlLimits(SqlBase):
    """Provider limits shared by the workers of one Postgres database."""

    async def reserve(self, provider: str, kind: str, hold: float, plan: Plan) -> tuple[int, float]:
        """Admit a grant to ``provider``'s ``kind`` window (grants count ``hold`` seconds):
        its id and the seconds to wait before using it."""
        async with self.begin() as conn:
            await conn.execute(sa.text(_LOCK), {"key": f"baton_nb.limit:{provider}:{kind}"})
            now = float((await conn.execute(sa.text(f"SELECT {_NOW}"))).scalar_one())
            await conn.execute(
                sa.text(
                    "DELETE FROM workflow_limit_grants WHERE provider = :p AND kind = :k "
                    "AND at + :hold <= :now"
                ),
                {"p": provider, "k": kind, "hold": hold, "now": now},
            )
            rows = await conn.execute(
                sa.text(
                    "SELECT at, amount FROM workflow_limit_grants WHERE provider = :p "
                    "AND kind = :k ORDER BY at, id"
                ),
                {"p": provider, "k": kind},
            )
            at, amount = plan([(float(r[0]), float(r[1])) for r in rows], now)
            grant = await conn.execute(
                sa.text(
                    "INSERT INTO workflow_limit_grants (provider, kind, at, amount) "
                    "VALUES (:p, :k, :at, :amount) RETURNING id"
                ),
                {"p": provider, "k": kind, "at": at, "amount": amount},
            )
            return int(grant.scalar_one()), max(0.0, at - now)

    async def correct(self, grant: int, amount: float) -> None:
        """The grant turned out to count ``amount`` (reported tokens, or 0: never sent)."""
        async with self.begin() as conn:
            await conn.execute(
                sa.text("UPDATE workflow_limit_grants SET amount = :a WHERE id = :id"),
                {"a": float(amount), "id": grant},
            )

    async def take_slot(self, provider: str, worker: str, limit: int, ttl: float) -> int | None:
        """A concurrency slot of ``provider`` for ``worker`` (held ``ttl`` seconds unless
        renewed), or None when ``limit`` slots are held."""
        async with self.begin() as conn:
            await conn.execute(sa.text(_LOCK), {"key": f"baton_nb.slots:{provider}"})
            held = await conn.execute(
                sa.text(
                    "SELECT count(*) FROM workflow_limit_slots WHERE provider = :p "
                    f"AND expires_at > {_NOW}"
                ),
                {"p": provider},
            )
            if int(held.scalar_one()) >= limit:
                return None
            slot = await conn.execute(
                sa.text(
                    "INSERT INTO workflow_limit_slots (provider, worker, expires_at) "
                    f"VALUES (:p, :w, {_NOW} + :ttl) RETURNING id"
                ),
                {"p": provider, "w": worker, "ttl": ttl},
            )
            return int(slot.scalar_one())

    async def free_slot(self, slot: int) -> None:
        """Let a slot go and wake the workers waiting for one of its provider's slots
        (NOTIFY, sent at commit)."""
        async with self.begin() as conn:
            await conn.execute(
                sa.text(
                    "WITH freed AS (DELETE FROM workflow_limit_slots WHERE id = :id "
                    "RETURNING provider) SELECT pg_notify(:channel, provider) FROM freed"
                ),
                {"id": slot, "channel": SLOTS_CHANNEL},
            )

    async def renew_slots(self, worker: str, ttl: float) -> None:
        """Keep ``worker``'s slots held ``ttl`` more seconds (its heartbeat); lapsed slots
        of every worker are dropped."""
        async with self.begin() as conn:
            await conn.execute(
                sa.text(
                    f"UPDATE workflow_limit_slots SET expires_at = {_NOW} + :ttl WHERE worker = :w"
                ),
                {"w": worker, "ttl": ttl},
            )
            await conn.execute(  # a killed worker's slots: their waiters are woken too
                sa.text(
                    "WITH lapsed AS (DELETE FROM workflow_limit_slots WHERE expires_at <= "
                    f"{_NOW} RETURNING provider) SELECT pg_notify(:channel, provider) "
                    "FROM (SELECT DISTINCT provider FROM lapsed) p"
                ),
                {"channel": SLOTS_CHANNEL},
            )

    async def drop_slots(self, worker: str) -> None:
        """A stopping worker lets go of every slot it still holds."""
        async with self.begin() as conn:
            await conn.execute(
                sa.text("DELETE FROM workflow_limit_slots WHERE worker = :w"), {"w": worker}
            )
