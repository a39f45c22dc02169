"""The NoneType adapter a SQLite engine registers (``_engine._adapt_none_cheaply``): None
is bound as NULL, as without it, and an adapter somebody else registered is kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from baton_nb.store import _engine

_KEY = (type(None), sqlite3.PrepareProtocol)


@pytest.fixture
def adapters() -> Iterator[None]:
    before = sqlite3.adapters.get(_KEY)
    sqlite3.adapters.pop(_KEY, None)
    yield
    sqlite3.adapters.pop(_KEY, None)
    if before is not None:
        sqlite3.adapters[_KEY] = before


def _bound(values: tuple[object, ...]) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (a, b, c)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [values, values])
        return conn.execute("SELECT a, b, c, typeof(a), typeof(b), typeof(c) FROM t").fetchall()
    finally:
        conn.close()


@pytest.mark.usefixtures("adapters")
def test_none_is_bound_as_null_as_without_the_adapter() -> None:
    values = (None, "x", None)
    plain = _bound(values)
    _engine._adapt_none_cheaply()
    assert sqlite3.adapters[_KEY] is _engine._NONE_ADAPTER
    assert _bound(values) == plain == [(None, "x", None, "null", "text", "null")] * 2


@pytest.mark.usefixtures("adapters")
def test_an_adapter_registered_before_is_kept() -> None:
    def theirs(value: None) -> str:
        return "nothing"

    sqlite3.register_adapter(type(None), theirs)
    _engine._adapt_none_cheaply()
    assert sqlite3.adapters[_KEY] is theirs


@pytest.mark.usefixtures("adapters")
def test_a_sqlite_engine_registers_it(tmp_path: object) -> None:
    engine = _engine.make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        assert sqlite3.adapters[_KEY] is _engine._NONE_ADAPTER
    finally:
        engine.sync_engine.dispose()
