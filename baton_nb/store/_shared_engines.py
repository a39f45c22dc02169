"""One engine per Postgres database and event loop for the runs of a process.

Each ``wf.run()`` on Postgres made its own engine and disposed of it at its end: two new
connections a run (the writer's, and the one a map's chunk and the run's end take), and
SQLAlchemy's dialect check on the first (~10 round trips), 20-60 ms of a short run's
wall on a busy machine (docs/performance.md, "Eighth round: the fixed cost of a small
run"). The runs of an event loop (a notebook's kernel, one ``asyncio.run``) now share one
engine per database URL, its idle connections kept in its pool between runs.

The engine lives as long as its loop: it is disposed of (its connections closed) when
the loop shuts its async generators down (``asyncio.run``, ``asyncio.Runner`` and
anyio's runner do as they end), through a generator kept suspended for that, or as the
loop closes (``loop.close()`` without ``shutdown_asyncgens``: code driving its own loop
with ``run_until_complete``; ``_dispose_at_close``); a kernel's loop never ends. A
pooled connection the server closed meanwhile (a restart, a dropped database) is
replaced at its checkout, without a round trip (``_alive``); one whose end the driver
has not seen (a NAT dropping an idle kernel's connection, a kill not read yet) fails the
store's first statement as a disconnect, and the store opens again once on a new engine
(``renew``, ``SqlBase.open``): no round trip on the way of every run.

One run at a time has it: a run that starts while another of the loop uses it gets an
engine of its own, disposed of at its end, as every run had before. Each engine keeps
its cap of connections (15): a run's calls take connections at once (a budget's
reservations, one per call), and the server's own cap (``max_connections``, 100 by
default) is not something many runs of one shared engine may reach together; nor may
runs that each hold a connection for their writes wait on each other for a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ._engine import make_engine

__all__ = ["release", "renew", "shared_engine"]


class _Engines:
    """The engines of one event loop, and the generator that disposes of them."""

    def __init__(self) -> None:
        self.by_url: dict[str, AsyncEngine] = {}
        self.busy: set[str] = set()  # the URLs whose engine a run has (``release``)
        self.keeper: AsyncGenerator[None, None] | None = None


_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Engines] = weakref.WeakKeyDictionary()


async def shared_engine(url: str) -> AsyncEngine | None:
    """The running loop's engine for the Postgres database at ``url`` (a resolved URL),
    made at its first use, for the caller alone until ``release``; None while another
    has it, for any other database (SQLite: a file can be deleted or replaced between
    runs, and a connection kept open would hold it) or outside asyncio."""
    if not url.startswith("postgresql"):
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): an engine per store, as before
        return None
    engines = _LOOPS.get(loop)
    if engines is None:
        engines = _LOOPS[loop] = _Engines()
        keeper = _dispose_at_shutdown(engines)
        # Its first step registers it with the loop (the loop's asyncgen hooks): the
        # loop's shutdown_asyncgens() closes it, and its ``finally`` disposes.
        await keeper.asend(None)
        engines.keeper = keeper
        _dispose_at_close(loop, engines)
    if url in engines.busy:
        return None
    engine = engines.by_url.get(url)
    if engine is None:
        engine = engines.by_url[url] = make_engine(url)
        sa.event.listen(engine.sync_engine, "checkout", _alive)
    engines.busy.add(url)
    return engine


async def renew(url: str, old: AsyncEngine) -> AsyncEngine:
    """The caller's shared engine ``old`` for ``url`` had a connection the server ended:
    disposed of (every pooled connection may be as dead), and a new one made in its
    place, the caller's still (until ``release``)."""
    engines = _LOOPS.get(asyncio.get_running_loop())
    engine = make_engine(url)
    sa.event.listen(engine.sync_engine, "checkout", _alive)
    if engines is not None and engines.by_url.get(url) is old:
        engines.by_url[url] = engine
    await old.dispose()
    return engine


def release(url: str) -> None:
    """The run that had the running loop's engine for ``url`` ended (``SqlBase.close``)."""
    try:
        engines = _LOOPS.get(asyncio.get_running_loop())
    except RuntimeError:
        return
    if engines is not None:
        engines.busy.discard(url)


async def _dispose_at_shutdown(engines: _Engines) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        found = list(engines.by_url.values())
        engines.by_url.clear()
        for engine in found:
            await engine.dispose()


def _dispose_at_close(loop: asyncio.AbstractEventLoop, engines: _Engines) -> None:
    """``loop.close()`` first disposes of the loop's engines if its async generators were
    not shut down (a loop of the caller's own, closed after ``run_until_complete``):
    their connections closed on the loop they belong to, not left open (ResourceWarning,
    and a connection the server keeps until the process ends)."""
    close = loop.close

    def closing() -> None:
        keeper = engines.keeper
        try:
            # Only on a loop with no task left: running it again would wake the tasks an
            # interrupted run_until_complete left behind (a run that could send calls).
            if (
                keeper is not None
                and engines.by_url
                and not loop.is_running()
                and not loop.is_closed()
                and not asyncio.all_tasks(loop)
            ):
                engines.keeper = None
                loop.run_until_complete(keeper.aclose())
        finally:  # the loop is closed whatever the dispose met (a server gone)
            close()

    # A loop without instance attributes (uvloop's) is not hooked: its engines are
    # disposed of at shutdown_asyncgens only (asyncio.run, a runner).
    with contextlib.suppress(AttributeError):
        loop.close = closing  # type: ignore[method-assign]


def _alive(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed (seen by the driver as it was idle) is not
    handed out: SQLAlchemy's pool connects a new one instead."""
    driver = getattr(dbapi_conn, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise sa.exc.DisconnectionError("the server closed this pooled connection")
