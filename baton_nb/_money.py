"""Money (USD as ``Decimal``): one way to normalise it and one way to show it as text."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Context, Decimal
from functools import reduce

__all__ = [
    "MAX_BUDGET",
    "NO_MATH_CLASSES",
    "LowerBound",
    "add_money",
    "fmt_cost",
    "fmt_money",
    "no_math_html",
    "normalize_money",
    "parse_budget",
    "plural",
    "scale_money",
    "sum_money",
    "times_money",
]

# Money is summed under a context of its own: the caller's decimal.getcontext() (a notebook
# that set prec=3 for display) must not round a total.
_EXACT = Context(prec=60)


def add_money(a: Decimal, b: Decimal) -> Decimal:
    """``a + b``, exact whatever the caller's decimal context."""
    return _EXACT.add(a, b)


MAX_BUDGET = Decimal("1000000")  # USD: budgets are stored in 10^-12 USD units (int64)


def parse_budget(where: str, value: object) -> Decimal | None:
    """A budget in USD from ``"2.50"``, ``Decimal("2.5")``, ``3`` or ``2.5`` (None: none),
    or ``ConfigurationError`` naming what is wrong."""
    from ._errors import ConfigurationError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ConfigurationError(
            f'{where}: budget must be USD as a string or a number, e.g. budget="2.50"; '
            f"got {value!r}"
        )
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except ArithmeticError:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0 or amount > MAX_BUDGET:
        raise ConfigurationError(
            f'{where}: budget must be between 0 and {MAX_BUDGET} USD, e.g. budget="2.50"; '
            f"got {value!r}"
        )
    return normalize_money(amount)


def times_money(a: Decimal, n: int) -> Decimal:
    """``a * n``, exact whatever the caller's decimal context."""
    return _EXACT.multiply(a, Decimal(n))


def scale_money(a: Decimal, digits: int) -> Decimal:
    """``a * 10 ** digits``, exact whatever the caller's decimal context."""
    return _EXACT.scaleb(a, Decimal(digits))


def sum_money(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (``Decimal(0)`` for none), whatever the decimal context.

    Added one by one in C (``reduce`` of the context's ``add``, ~50 ns a value). Grouping
    equal amounts first (a ``Counter``, then one multiplication per amount) cost ~9 times
    more: hashing a ``Decimal`` made by a call (~450 ns) costs more than adding it."""
    return reduce(_EXACT.add, values, Decimal(0))


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


class LowerBound(Decimal):
    """A total that misses ``unpriced_calls`` calls of unknown price (``report.total`` then):
    a ``Decimal`` like any other (arithmetic gives plain ``Decimal``s, ``str()`` and
    formatting the bare number, so it writes to a CSV or a JSON unchanged), whose ``repr``
    (what a notebook cell shows) says it is a lower bound, never a silent amount."""

    __slots__ = ("unpriced_calls",)

    unpriced_calls: int

    def __new__(cls, value: Decimal | str, unpriced_calls: int) -> LowerBound:
        self = super().__new__(cls, value)
        self.unpriced_calls = unpriced_calls
        return self

    def __repr__(self) -> str:
        return (
            f"LowerBound('{self}', {plural(self.unpriced_calls, 'call')} of unknown price "
            "not counted)"
        )

    def __reduce__(self) -> tuple[type[LowerBound], tuple[str, int]]:  # type: ignore[override]
        return type(self), (str(self), self.unpriced_calls)

    def __copy__(self) -> LowerBound:
        return self

    def __deepcopy__(self, memo: object) -> LowerBound:
        return self


def fmt_money(value: Decimal) -> str:
    """Plain decimal string, no exponent, no trailing zeros, exact: ``0.00079630`` ->
    ``0.0007963``. The one format for money in every text baton_nb shows.

    ``format(normalize_money(value), "f")``, without building a second Decimal (the widget
    formats a cost per node it redraws)."""
    if value.is_zero():
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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


# MathJax 2 (``tex2jax_ignore``) and 3 (``mathjax_ignore``) leave elements of these classes
# alone. A notebook typesets HTML outputs: two ``$`` amounts in one output (``$0.0017 spent
# of $1``) would be read as a formula. The widget's header lines carry them too (dag.js).
NO_MATH_CLASSES = "tex2jax_ignore mathjax_ignore"


def no_math_html(body: str) -> str:
    """``body`` (HTML that shows amounts in ``$``) in a ``<div>`` that a notebook's math
    typesetting leaves alone: the one way baton_nb's HTML outputs keep their ``$`` as
    text."""
    return f'<div class="{NO_MATH_CLASSES}">{body}</div>'
