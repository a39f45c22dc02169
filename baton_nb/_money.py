"""Money (USD as ``Decimal``): one way to normalise it and one way to show it as text."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Context, Decimal

__all__ = ["add_money", "fmt_cost", "fmt_money", "normalize_money", "plural", "sum_money"]

# Money is summed under a context of its own: the caller's decimal.getcontext() (a notebook
# that set prec=3 for display) must not round a total.
_EXACT = Context(prec=60)


def add_money(a: Decimal, b: Decimal) -> Decimal:
    """``a + b``, exact whatever the caller's decimal context."""
    return _EXACT.add(a, b)


def sum_money(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (``Decimal(0)`` for none), whatever the decimal context."""
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def normalize_money(value: Decimal) -> Decimal:
    """The same amount without trailing fractional zeros, exactly (no rounding, whatever the
    number of digits): ``Decimal('0.000489700000')`` (a Postgres ``NUMERIC(30,12)``) ->
    ``Decimal('0.0004897')``; ``Decimal('12.000')`` -> ``Decimal('12')``; zero -> ``Decimal('0')``.
    """
    if not value.is_finite():
        return value
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if not any(digits):
        return Decimal(0)
    if exponent >= 0:
        return value
    kept = list(digits)
    while exponent < 0 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    return Decimal((sign, tuple(kept), exponent))


def fmt_money(value: Decimal) -> str:
    """Plain decimal string, no exponent, no trailing zeros, exact: ``0.00079630`` ->
    ``0.0007963``. The one format for money in every text baton_nb shows."""
    return format(normalize_money(value), "f")


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 call``, ``2 calls``, ``0 calls`` (``words`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def fmt_cost(known: Decimal, unpriced: int) -> str:
    """A total that may miss calls of unknown price, never shown as a bare ``$0``:
    ``$0.0123``; ``$0.0123 + 2 calls of unknown price``; ``unknown (1 call of unknown
    price)`` when no call had a price."""
    if not unpriced:
        return f"${fmt_money(known)}"
    missing = f"{plural(unpriced, 'call')} of unknown price"
    if known == 0:
        return f"unknown ({missing})"
    return f"${fmt_money(known)} + {missing}"
