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
import ssl
import threading
import urllib.request
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import anyio.to_thread
import httpx

from ._config import http2_enabled
from ._http11 import AsyncioHTTP11Transport

__all__ = ["aclose", "get_client", "loop_key"]

_KEEPALIVE_EXPIRY = 30.0
_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _create_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


async def _shared_ssl_context() -> ssl.SSLContext:
    """One verified SSL context per process (loading CA certificates is slow: off the loop)."""
    if _ssl_context is not None:
        return _ssl_context
    return await anyio.to_thread.run_sync(_create_ssl_context)


class _LoopClient:
    def __init__(
        self, client: httpx.AsyncClient, keeper: AsyncGenerator[None, None] | None, http2: bool
    ):
        self.client = client
        self.keeper = keeper
        self.http2 = http2

    def serves(self, http2: bool) -> bool:
        return not self.client.is_closed and self.http2 == http2

    async def aclose(self) -> None:
        if self.keeper is not None:
            await self.keeper.aclose()
        else:
            await self.client.aclose()


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


def _environment_proxies() -> bool:
    """Whether HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (any case) name a proxy."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _new_client(
    context: ssl.SSLContext, on_asyncio: bool, http2: bool = False
) -> httpx.AsyncClient:
    """Our asyncio HTTP/1.1 transport; stock httpx for HTTP/2, under another async
    library, or when the environment names a proxy (httpx then routes each URL: proxy
    or NO_PROXY)."""
    options: dict[str, Any] = {
        "timeout": httpx.Timeout(60.0),
        "follow_redirects": False,
        "headers": {"user-agent": "baton-nb"},
    }
    if on_asyncio and not http2 and not _environment_proxies():
        transport = AsyncioHTTP11Transport(context, keepalive_expiry=_KEEPALIVE_EXPIRY)
        return httpx.AsyncClient(transport=transport, **options)
    limits = httpx.Limits(max_connections=None, keepalive_expiry=_KEEPALIVE_EXPIRY)
    return httpx.AsyncClient(verify=context, limits=limits, http2=http2, **options)


async def get_client() -> httpx.AsyncClient:
    """The shared client of the running loop, created lazily."""
    key = loop_key()
    http2 = http2_enabled()
    entry = _clients.get(key)
    if entry is not None and entry.serves(http2):
        return entry.client
    client = _new_client(await _shared_ssl_context(), key is not _OTHER, http2)
    entry = _clients.get(key)  # another task may have made one while we waited
    if entry is not None and entry.serves(http2):
        await client.aclose()
        return entry.client
    keeper: AsyncGenerator[None, None] | None = None
    if key is not _OTHER:
        keeper = _keeper(client)
        await keeper.__anext__()
    _clients[key] = _LoopClient(client, keeper, http2)
    if entry is not None:  # made under the other http2 setting: calls now use the new one
        await entry.aclose()
    return client


async def aclose() -> None:
    """Close the shared client of the running loop (a new one is made on next use)."""
    entry = _clients.pop(loop_key(), None)
    if entry is not None:
        await entry.aclose()
