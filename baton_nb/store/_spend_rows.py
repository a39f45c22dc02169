"""Typed rows of budgets and the response cache (DESIGN §11, migration 11)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from .._money import MAX_BUDGET, normalize_money, scale_money

__all__ = [
    "MAX_BUDGET",
    "MONEY_UNIT",
    "RUN_SCOPE",
    "BudgetRow",
    "CacheEntry",
    "CacheStats",
    "as_held",
    "from_units",
    "to_units",
]

# Budgets are kept in integers of 10^-12 USD: exact, and summed by the database in one
# UPDATE on SQLite as on Postgres. A reservation or a cost is rounded up to the unit, so
# what is counted is never less than what is spent.
MONEY_UNIT = Decimal("1e-12")
_UNIT_DIGITS = -int(MONEY_UNIT.as_tuple().exponent)  # MONEY_UNIT = 10 ** -_UNIT_DIGITS
RUN_SCOPE = ""  # the scope of the run's own budget (a step's is its name)


def to_units(amount: Decimal) -> int:
    """``amount`` USD in units, rounded up (exact whatever the caller's decimal context)."""
    return int(scale_money(amount, _UNIT_DIGITS).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    return normalize_money(scale_money(Decimal(units), -_UNIT_DIGITS))


def as_held(amount: Decimal) -> Decimal:
    """``amount`` as a budget holds it: rounded up to ``MONEY_UNIT``, so that amounts
    reserved one by one and released together add up to the same units."""
    return from_units(to_units(amount))


@dataclass(frozen=True)
class BudgetRow:
    """One budget: the run's (``scope == ""``) or a step's, with what is spent and reserved."""

    run_id: str
    scope: str
    cap: Decimal
    spent: Decimal
    reserved: Decimal
    refused: int = 0  # calls not sent because they would have crossed the cap
    reason: str | None = None  # ``budget reached: ...`` once the run stopped on it


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer: the request as sent (without credentials) and its response."""

    key: str
    model: str
    request: str  # canonical JSON of the request as sent
    response: str  # JSON of the Completion
    cost: Decimal | None  # what the call cost when it was paid
    created_at: datetime
    hits: int = 0
    last_hit_at: datetime | None = None


@dataclass(frozen=True)
class CacheStats:
    """What ``baton-nb cache`` shows: entries, their size, hits and what the hits saved."""

    entries: int
    size_bytes: int
    hits: int
    saved: Decimal
    oldest: datetime | None
    newest: datetime | None
