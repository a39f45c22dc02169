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
import operator
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio.to_thread
import httpx

__all__ = ["aclose", "get_client", "loop_key"]

# httpcore's pool does O(connections^2) bookkeeping (plus one readiness syscall per idle
# connection) each time a request starts or ends; at 50+ requests in flight that costs more
# than the HTTP itself. The one shared client therefore spreads its connections over small
# pools: a request goes to an idle pool, and a new pool is opened only when all are busy
# (so sequential calls reuse a single connection, and 50 in flight use ~50 tiny pools).
_MAX_SHARDS = 64
_SHARD_LIMITS = httpx.Limits(max_connections=250, max_keepalive_connections=32, keepalive_expiry=30)
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


class _Shard:
    __slots__ = ("active", "idle", "transport")

    def __init__(self, context: ssl.SSLContext, idle: list[_Shard]) -> None:
        self.transport = httpx.AsyncHTTPTransport(verify=context, limits=_SHARD_LIMITS)
        self.active = 0
        self.idle = idle  # the transport's stack of shards with no request in flight

    def take(self) -> None:
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.append(self)


class _CountedStream(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._stream = stream
        self._shard: _Shard | None = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._shard is not None:
                self._shard.release()
                self._shard = None


class _ShardedTransport(httpx.AsyncBaseTransport):
    """Ordinary httpx transports, opened on demand; each request goes to the least busy."""

    def __init__(self, context: ssl.SSLContext, max_shards: int = _MAX_SHARDS) -> None:
        self._context = context
        self._max_shards = max_shards
        self._idle: list[_Shard] = []  # the most recently used (warmest) last
        self._shards = [_Shard(context, self._idle)]
        self._idle.append(self._shards[0])

    def _pick(self) -> _Shard:
        """An idle shard (O(1)); else a new one; else, all opened, the least busy."""
        if self._idle:
            return self._idle.pop()
        if len(self._shards) < self._max_shards:
            shard = _Shard(self._context, self._idle)
            self._shards.append(shard)
            return shard
        return min(self._shards, key=_ACTIVE)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._pick()
        shard.take()
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CountedStream(response.stream, shard)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.transport.aclose()


_ACTIVE = operator.attrgetter("active")


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


def _new_client(context: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=_ShardedTransport(context),
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
    client = _new_client(await _shared_ssl_context())
    entry = _clients.get(key)  # another task may have made one while we waited
    if entry is not None and not entry.client.is_closed:
        await client.aclose()
        return entry.client
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
