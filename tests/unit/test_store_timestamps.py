"""Timestamps and money bound for SQLite: the fast processors send what SQLAlchemy's generic path
(``process_bind_param``, then SQLite's DATETIME processor) sends."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from baton_nb.store import _tables
from baton_nb.store._tables import UtcDateTime

DIALECT = sqlite.dialect()
UTC = timezone.utc


def generic(value: datetime | None) -> Any:
    """The value through the decorator's own step and the SQLite DATETIME processor."""
    decorated = UtcDateTime().process_bind_param(value, DIALECT)
    processor = sa.DateTime(timezone=True).dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    return processor(decorated)


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime(2026, 12, 6, 8, 50, 4, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 8, 50, 4, tzinfo=UTC),  # no microseconds: still written
        datetime(2026, 1, 1, 0, 30, 0, 7, tzinfo=timezone(timedelta(hours=2))),  # the day before
        datetime(987, 3, 4, 5, 6, 7, 8, tzinfo=UTC),  # a year of three digits
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_sqlite_timestamp_text_as_sqlalchemy_writes_it(value: datetime | None) -> None:
    processor = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    assert processor(value) == generic(value)


def test_naive_timestamp_refused() -> None:
    processor = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    with pytest.raises(ValueError, match="aware datetimes only"):
        processor(datetime(2026, 12, 6, 8, 50))


def test_a_timestamp_written_again_gets_the_same_text() -> None:
    """Texts are kept for values written lately (a node's start goes out twice): asked
    again, in another offset for the same instant, or after many other values."""
    processor = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    value = datetime(2026, 12, 6, 8, 50, 4, 654321, tzinfo=UTC)
    first = processor(value)
    assert processor(value) == first == "2026-12-06 08:50:04.654321"
    shifted = value.astimezone(timezone(timedelta(hours=9)))
    assert processor(shifted) == first == generic(shifted)
    for i in range(_tables._TEXTS_MOST + 10):  # more than are kept: the cache is emptied
        other = value + timedelta(microseconds=i + 1)
        assert processor(other) == generic(other)
    assert len(_tables._TEXTS) <= _tables._TEXTS_MOST
    assert processor(value) == first


def test_naive_timestamp_refused_after_the_same_aware_one() -> None:
    processor = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    processor(datetime(2026, 12, 6, 8, 50, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware datetimes only"):
        processor(datetime(2026, 12, 6, 8, 50))


def test_a_repeated_local_hour_is_written_as_its_own_instant() -> None:
    """01:30 on the night clocks go back happens twice (``fold`` 0 and 1): the two compare
    equal but are an hour apart, and each is written as its own UTC time (the text cache
    once returned the first one's text for the second; the review's finding)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from baton_nb.store._tables import sqlite_text

    zone = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second
    assert sqlite_text(first) == "2026-11-01 05:30:00.000000"
    assert sqlite_text(second) == "2026-11-01 06:30:00.000000"


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(987, 3, 4, 5, 6, 7, 8, tzinfo=UTC),
        datetime(2026, 12, 6, 8, 50, 4, 1000, tzinfo=UTC),
        datetime(2026, 12, 6, 8, 50, 4, 999, tzinfo=UTC),
        datetime(2026, 12, 6, 8, 50, 4, 100100, tzinfo=UTC),
    ],
)
def test_utc_text_is_isoformat_cut_to_the_microsecond(value: datetime) -> None:
    """The text made from the fields (a second's head kept, the microseconds from a table)
    is the one ``isoformat`` gives, at the edges of every field."""
    assert _tables._utc_text(value) == value.isoformat(" ", "microseconds")[:26]
    assert _tables._utc_text(value) == generic(value)  # again: the head from the cache


def test_utc_text_over_many_seconds_and_microseconds() -> None:
    """More seconds than the heads kept (the cache is emptied) and every microsecond
    digit position, each text as ``isoformat`` gives it."""
    start = datetime(2026, 12, 31, 23, 0, 0, tzinfo=UTC)
    for i in range(_tables._SECONDS_MOST + 50):
        value = start + timedelta(seconds=i * 7, microseconds=(i * 7919) % 1_000_000)
        assert _tables._utc_text(value) == value.isoformat(" ", "microseconds")[:26]
    assert len(_tables._SECONDS) <= _tables._SECONDS_MOST


def _generic_decimal(value: Any, dialect: Any) -> Any:
    """ExactDecimal's own step, then its String impl's processor (none on SQLite)."""
    from baton_nb.store._tables import ExactDecimal

    decorated = ExactDecimal().process_bind_param(value, dialect)
    processor = sa.String(80).dialect_impl(dialect).bind_processor(dialect)
    return decorated if processor is None else processor(decorated)


@pytest.mark.parametrize(
    "value",
    [None, Decimal("0"), Decimal("0.000123"), Decimal("1E-12"), Decimal("-5.50"), Decimal("1E+3")],
)
def test_sqlite_money_text_as_the_decorator_writes_it(value: Decimal | None) -> None:
    """The money processor on SQLite (one call) sends what TypeDecorator's path sends."""
    from baton_nb.store._tables import ExactDecimal

    processor = ExactDecimal().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    assert processor(value) == _generic_decimal(value, DIALECT)


def test_sqlite_money_refuses_what_is_not_a_decimal() -> None:
    from baton_nb.store._tables import ExactDecimal

    processor = ExactDecimal().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    for bad in (1.5, "1.5", 2):
        with pytest.raises(TypeError, match="cost must be a Decimal"):
            processor(bad)
        with pytest.raises(TypeError, match="cost must be a Decimal"):
            _generic_decimal(bad, DIALECT)
