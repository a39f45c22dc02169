"""The one shared ``httpx.AsyncClient`` (per running event loop).

A client is bound to the loop that created it, and notebooks keep one loop
while scripts and tests make many. So there is one client per loop, created
on first use. Under asyncio the client is also tied to an async generator
that the loop finalises at shutdown (``asyncio.run`` calls
``shutdown_asyncgens``), so a forgotten :func:`aclose` still closes its
sockets inside the right loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import httpx

__all__ = ["aclose", "get_client", "loop_key"]

_POOL = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)


class _LoopClient:
    def __init__(self, client: httpx.AsyncClient, keeper: AsyncGenerator[None, None] | None):
        self.client = client
        self.keeper = keeper


class _OtherLoop:
    """Weak-referenceable key for non-asyncio backends (one shared slot)."""


_OTHER = _OtherLoop()
_clients: weakref.WeakKeyDictionary[Any, _LoopClient] = weakref.WeakKeyDictionary()


def loop_key() -> Any:
    """The running asyncio loop, or one shared key under another async library."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _OTHER


async def _keeper(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=_POOL,
        timeout=httpx.Timeout(60.0),
        follow_redirects=False,
        headers={"user-agent": "baton-nb"},
    )


async def get_client() -> httpx.AsyncClient:
    """The shared client of the running loop, created lazily."""
    key = loop_key()
    entry = _clients.get(key)
    if entry is not None and not entry.client.is_closed:
        return entry.client
    client = _new_client()
    keeper: AsyncGenerator[None, None] | None = None
    if key is not _OTHER:
        keeper = _keeper(client)
        await keeper.__anext__()
    _clients[key] = _LoopClient(client, keeper)
    return client


async def aclose() -> None:
    """Close the shared client of the running loop (a new one is made on next use)."""
    entry = _clients.pop(loop_key(), None)
    if entry is None:
        return
    if entry.keeper is not None:
        await entry.keeper.aclose()
    else:
        await entry.client.aclose()
