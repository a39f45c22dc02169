"""The one shared ``httpx.AsyncClient`` (per running event loop).

A client is bound to the loop that created it, and notebooks keep one loop
while scripts and tests make many. So there is one client per loop, created
on first use. Under asyncio the client is also tied to an async generator
that the loop finalises at shutdown (``asyncio.run`` calls
``shutdown_asyncgens``), so a forgotten :func:`aclose` still closes its
sockets inside the right loop.

Its transport: aiohttp through httpx-aiohttp (``_aiohttp.py``) on asyncio;
stock httpx for HTTP/2 (``configure(http2=True)``), under another async
library (trio), and when the environment names a proxy (given a transport,
httpx would ignore ``HTTP(S)_PROXY``; stock httpx routes each URL: proxy or
``NO_PROXY``). Every path has the same explicit bound on connections:
:func:`connection_limit`.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
import sys
import threading
import urllib.request
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx

from ._config import configured_limits, http2_enabled, limits_version

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "aclose",
    "connection_limit",
    "direct_transport",
    "get_client",
    "loop_key",
    "on_asyncio",
    "shared_now",
]

# Below the usual server keep-alive (60-75 s), so a server rarely closes one under us.
_KEEPALIVE_EXPIRY = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
_AIOHTTP_MODULE = "baton_nb.llm._aiohttp"
_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _create_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def _prepare() -> ssl.SSLContext:
    importlib.import_module(_AIOHTTP_MODULE)
    return _create_ssl_context()


async def _prepared_ssl_context() -> ssl.SSLContext:
    """One verified SSL context per process, and aiohttp imported: each slow once
    (loading CA certificates; ~0.2 s of imports), so done off the loop."""
    if _ssl_context is not None and _AIOHTTP_MODULE in sys.modules:
        return _ssl_context
    return await anyio.to_thread.run_sync(_prepare)


def connection_limit() -> int:
    """Connections the shared client keeps open to one provider (origin) at most.

    :data:`DEFAULT_MAX_CONNECTIONS` (1,000), or the largest ``bn.Limit(concurrency=...)``
    configured if that is higher: with HTTP/1.1 a call in flight holds a connection, so
    calls up to this many at once never wait for one and no connection is closed and
    reopened between them (idle ones are kept ``_KEEPALIVE_EXPIRY`` seconds). A call
    beyond it waits for a free connection (counted in its timeout). Each connection is a
    file descriptor: ``ulimit -n`` must allow them.
    """
    _, limits = configured_limits()
    return max([DEFAULT_MAX_CONNECTIONS, *(limit.concurrency or 0 for limit in limits.values())])


@dataclass(frozen=True)
class _Settings:
    """What a client is built with; a change makes the next call build a new one."""

    http2: bool
    max_connections: int


class _LoopClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        keeper: AsyncGenerator[None, None] | None,
        settings: _Settings,
    ):
        self.client = client
        self.keeper = keeper
        self.settings = settings
        self.limits_version = limits_version()
        self.direct = _direct.get(client)  # direct_transport(client), looked up once

    def current(self) -> bool:
        """Open and built with today's settings (limits recomputed only once they change)."""
        if self.client.is_closed or self.settings.http2 != http2_enabled():
            return False
        version = limits_version()
        if version != self.limits_version:
            if connection_limit() != self.settings.max_connections:
                return False
            self.limits_version = version
        return True

    async def aclose(self) -> None:
        if self.keeper is not None:
            await self.keeper.aclose()
        else:
            await self.client.aclose()


class _OtherLoop:
    """Weak-referenceable key for non-asyncio backends (one shared slot)."""


_OTHER = _OtherLoop()
_clients: weakref.WeakKeyDictionary[Any, _LoopClient] = weakref.WeakKeyDictionary()
# A shared client's aiohttp transport (every request of that client goes to it).
_direct: weakref.WeakKeyDictionary[httpx.AsyncClient, AiohttpTransport] = (
    weakref.WeakKeyDictionary()
)


def direct_transport(client: httpx.AsyncClient) -> AiohttpTransport | None:
    """The aiohttp transport every request of ``client`` goes to, if it has one:
    ``_transport.py`` posts a call's JSON on it directly (``post_json``), skipping the
    client's per-request layers (auth and redirect hooks, URL merging, a timer, the
    cookie jar when empty) and httpx's request and stream objects."""
    return _direct.get(client)


def loop_key() -> Any:
    """The running asyncio loop, or one shared key under another async library."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _OTHER


def on_asyncio() -> bool:
    """Whether the running async library is asyncio (else trio, through anyio)."""
    return loop_key() is not _OTHER


async def _keeper(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    global _last
    try:
        yield
    finally:
        # the loop ends (asyncio.run finalises its async generators): ``_last`` lets go of
        # it, its client and its connections' pools
        if _last[1] is not None and _last[1].client is client:
            _last = (None, None)
        await client.aclose()


def _environment_proxies() -> bool:
    """Whether HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (any case) name a proxy."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _new_client(
    context: ssl.SSLContext, on_asyncio: bool, settings: _Settings
) -> httpx.AsyncClient:
    options: dict[str, Any] = {
        "timeout": httpx.Timeout(60.0),
        "follow_redirects": False,
        "headers": {"user-agent": "baton-nb"},
    }
    if on_asyncio and not settings.http2 and not _environment_proxies():
        from ._aiohttp import AiohttpTransport  # imported off the loop by get_client

        transport = AiohttpTransport(
            context, max_connections=settings.max_connections, keepalive_expiry=_KEEPALIVE_EXPIRY
        )
        client = httpx.AsyncClient(transport=transport, **options)
        _direct[client] = transport
        return client
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections,
        keepalive_expiry=_KEEPALIVE_EXPIRY,
    )
    return httpx.AsyncClient(verify=context, limits=limits, http2=settings.http2, **options)


# The running loop's entry, last found by get_client (per call: no weak-dictionary lookup)
_last: tuple[Any, _LoopClient | None] = (None, None)


def shared_now() -> _LoopClient | None:
    """The running asyncio loop's shared client (``.client``) and its direct transport
    (``.direct``), if made and current: :func:`get_client` without a coroutine. ``None``:
    ``await get_client()``."""
    loop, entry = _last
    if entry is not None and loop is asyncio._get_running_loop() and entry.current():
        return entry
    return None


async def get_client() -> httpx.AsyncClient:
    """The shared client of the running loop, created lazily."""
    global _last
    key = loop_key()
    entry = _clients.get(key)
    if entry is not None and entry.current():
        if key is not _OTHER:
            _last = (key, entry)
        return entry.client
    settings = _Settings(http2_enabled(), connection_limit())
    client = _new_client(await _prepared_ssl_context(), key is not _OTHER, settings)
    entry = _clients.get(key)  # another task may have made one while we waited
    if entry is not None and entry.current():
        await client.aclose()
        return entry.client
    keeper: AsyncGenerator[None, None] | None = None
    if key is not _OTHER:
        keeper = _keeper(client)
        await keeper.__anext__()
    made = _clients[key] = _LoopClient(client, keeper, settings)
    if key is not _OTHER:
        _last = (key, made)
    if entry is not None:  # made under other settings: calls now use the new one
        await entry.aclose()
    return client


async def aclose() -> None:
    """Close the shared client of the running loop (a new one is made on next use)."""
    global _last
    entry = _clients.pop(loop_key(), None)
    if entry is not None and _last[1] is entry:
        _last = (None, None)
    if entry is not None:
        await entry.aclose()
