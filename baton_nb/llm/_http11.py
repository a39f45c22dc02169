"""HTTP/1.1 for the shared ``httpx.AsyncClient`` on asyncio, straight on asyncio's transports.

Why not httpx's default transport: under asyncio, httpcore reaches the socket through
anyio, so each read and write opens a cancel scope and asks sniffio which loop runs, its
pool takes locks and shields per request and does O(connections) bookkeeping on every
start and end, and checking an idle connection costs a ``poll()``. At 50 LLM calls in
flight on a 2-core machine that CPU (about 0.3 ms a call) is what stands between a
fan-out and its ideal wall time (docs/performance.md). Here:

- the HTTP/1.1 state machine is still ``h11`` (httpx's own), so framing (Content-Length,
  chunked, close-delimited bodies, 1xx, HEAD) is httpcore's, with the same 100 KiB
  limit on a response head; an early answer to a streamed upload (413) is returned, not
  the write error, and a connection with bytes beyond the announced body is dropped;
- a connection is an asyncio ``Protocol`` that buffers what arrives: a read is a buffer
  slice or one future, a timeout one ``call_later``, and a connection the server closed
  is known from ``eof_received`` without a syscall; past 256 KiB unread it stops reading
  the socket until the consumer catches up (TCP pushes back on the server);
- idle connections are kept per origin, most recently used first (O(1) to take), and
  reused only if open, quiet and idle for less than ``keepalive_expiry`` (30 s, below the
  usual server keep-alive of 60-75 s, so the server rarely closes one under us). A request
  is never sent twice here: a failure after the request went out is the caller's to retry
  (``complete`` does, inside the call), as with httpcore.

Proxies are not handled here: given a transport, httpx ignores ``HTTP(S)_PROXY`` and
``ALL_PROXY``, so the shared client (``_client.py``) uses stock httpx whenever the
environment names a proxy.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

__all__ = ["AsyncioHTTP11Transport"]

_READ_SIZE = 64 * 1024
_MAX_HEAD = 100 * 1024  # the largest response head accepted, as httpcore's
_PAUSE_ABOVE = 256 * 1024  # stop reading the socket with this much unread (slow consumer)
_RESUME_BELOW = 64 * 1024
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_Origin = tuple[bytes, bytes, int]


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _wait(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """Wait for ``waiter``; :class:`TimeoutError` after ``timeout`` seconds (None: never)."""
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _Protocol(asyncio.Protocol):
    """Buffers what arrives; wakes the one reader or writer waiting on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.reading_paused = False
        self.closed = False  # EOF or connection lost: nothing more will arrive
        self.error: Exception | None = None
        self.writing_paused = False
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _PAUSE_ABOVE and not self.reading_paused and self.transport:
            self.transport.pause_reading()  # the reader is slow: let TCP push back
            self.reading_paused = True
        _wake(self.read_waiter)

    def take(self, size: int) -> bytes:
        """Up to ``size`` buffered bytes; the socket is read again once the buffer drains."""
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        if self.reading_paused and len(self.buffer) < _RESUME_BELOW and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    def eof_received(self) -> bool:
        self.closed = True
        _wake(self.read_waiter)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self.writing_paused = False
        _wake(self.read_waiter)
        _wake(self.drain_waiter)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.drain_waiter)


def _reason(exc: BaseException | None, default: str) -> str:
    return (str(exc) or type(exc).__name__) if exc is not None else default


class _Connection:
    """One keep-alive connection: an asyncio transport, its protocol and an h11 client."""

    __slots__ = ("h11", "idle_since", "origin", "protocol", "transport")

    def __init__(self, origin: _Origin, transport: asyncio.Transport, protocol: _Protocol):
        self.origin = origin
        self.transport = transport
        self.protocol = protocol
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.idle_since = 0.0

    def is_usable(self, now: float, expiry: float) -> bool:
        """Open, nothing unasked-for in the buffer, and not idle for too long."""
        protocol = self.protocol
        return (
            not protocol.closed
            and not protocol.buffer
            and not self.transport.is_closing()
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        self.transport.close()

    async def _read(self, request: httpx.Request, timeout: float | None) -> bytes:
        protocol = self.protocol
        if not protocol.buffer and not protocol.closed:
            waiter = asyncio.get_running_loop().create_future()
            protocol.read_waiter = waiter
            try:
                await _wait(waiter, timeout)
            except TimeoutError:
                raise httpx.ReadTimeout(f"no data for {timeout:g} s", request=request) from None
            finally:
                protocol.read_waiter = None
        if protocol.buffer:
            return protocol.take(_READ_SIZE)
        if protocol.error is not None:
            raise httpx.ReadError(_reason(protocol.error, "read failed"), request=request)
        return b""  # the server closed the connection: h11 takes b"" as end of stream

    async def _write(self, request: httpx.Request, data: bytes, timeout: float | None) -> None:
        protocol = self.protocol
        if protocol.closed or self.transport.is_closing():
            raise httpx.WriteError(_reason(protocol.error, "connection closed"), request=request)
        self.transport.write(data)
        if not protocol.writing_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        protocol.drain_waiter = waiter
        try:
            await _wait(waiter, timeout)
        except TimeoutError:
            raise httpx.WriteTimeout(f"could not send for {timeout:g} s", request=request) from None
        finally:
            protocol.drain_waiter = None
        if protocol.error is not None:
            raise httpx.WriteError(_reason(protocol.error, "write failed"), request=request)

    async def next_event(self, request: httpx.Request, timeout: float | None) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self._read(request, timeout))

    async def send(self, request: httpx.Request, timeouts: dict[str, float | None]) -> h11.Response:
        """Write the request, read up to the response head (1xx skipped)."""
        write_timeout = timeouts.get("write")
        write_failed: httpx.WriteError | None = None
        try:
            head = self.h11.send(
                h11.Request(
                    method=request.method,
                    target=request.url.raw_path,
                    headers=request.headers.raw,
                )
            )
            if isinstance(request.stream, httpx.ByteStream):  # in memory: one write
                body = request.content
                tail = (self.h11.send(h11.Data(data=body)) or b"") if body else b""
                end = self.h11.send(h11.EndOfMessage()) or b""
                await self._write(request, (head or b"") + tail + end, write_timeout)
            else:
                write_failed = await self._stream_body(request, head or b"", write_timeout)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        try:
            return await self._response_head(request, timeouts.get("read"))
        except httpx.HTTPError:
            if write_failed is not None:
                raise write_failed from None
            raise

    async def _stream_body(
        self, request: httpx.Request, head: bytes, timeout: float | None
    ) -> httpx.WriteError | None:
        """Send the head and a streamed body. A server may answer early (413 Payload Too
        Large) and stop reading: the failed write is kept, and the answer read first."""
        try:
            await self._write(request, head, timeout)
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    await self._write(request, self.h11.send(h11.Data(data=chunk)) or b"", timeout)
            await self._write(request, self.h11.send(h11.EndOfMessage()) or b"", timeout)
        except httpx.WriteError as exc:
            return exc
        return None

    async def _response_head(self, request: httpx.Request, timeout: float | None) -> h11.Response:
        while True:
            event = await self.next_event(request, timeout)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(
                    f"expected a response, got {type(event).__name__}", request=request
                )


class _ResponseBody(httpx.AsyncByteStream):
    """The body, read as it arrives; gives the connection back to the pool once complete."""

    def __init__(
        self,
        pool: AsyncioHTTP11Transport,
        connection: _Connection,
        request: httpx.Request,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        try:
            while not self._complete:
                event = await connection.next_event(self._request, self._timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._complete = True
                else:
                    raise httpx.RemoteProtocolError(
                        f"unexpected {type(event).__name__} in a response body",
                        request=self._request,
                    )
        except BaseException:
            self._release(reuse=False)
            raise

    async def aclose(self) -> None:
        self._release(reuse=self._complete)

    def _release(self, *, reuse: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.give_back(connection, reuse=reuse)


def _origin(url: httpx.URL) -> _Origin:
    scheme = url.raw_scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r} in {url}")
    return scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme]


class AsyncioHTTP11Transport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per origin on the running asyncio loop."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        keepalive_expiry: float = 30.0,
        max_idle_per_origin: int = 256,
    ) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._max_idle = max_idle_per_origin
        self._idle: dict[_Origin, list[_Connection]] = {}  # most recently used last
        self._open: set[_Connection] = set()
        self._closed = False

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.is_usable(now, self._keepalive_expiry):
                return connection
            self._discard(connection)
        return None

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def give_back(self, connection: _Connection, *, reuse: bool) -> None:
        states = connection.h11.our_state, connection.h11.their_state
        extra_bytes = bool(connection.h11.trailing_data[0])  # more than the body announced
        if not reuse or self._closed or states != (h11.DONE, h11.DONE) or extra_bytes:
            self._discard(connection)
            return
        connection.h11.start_next_cycle()
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            self._discard(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(
        self, origin: _Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(
            _Protocol,
            host,
            port,
            ssl=self._ssl_context if tls else None,
            server_hostname=host if tls else None,
            happy_eyeballs_delay=0.25,  # IPv6 and IPv4 raced, as anyio (httpcore) does
        )
        try:
            transport, protocol = await asyncio.wait_for(connecting, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise httpx.ConnectTimeout(
                f"could not connect to {host}:{port} within {timeout:g} s", request=request
            ) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification (ssl.SSLError)
            raise httpx.ConnectError(_reason(exc, "connect failed"), request=request) from exc
        assert isinstance(transport, asyncio.Transport)
        connection = _Connection(origin, transport, protocol)
        self._open.add(connection)
        return connection

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed; the client makes a new one on next use")
        origin = _origin(request.url)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        connection = self._take_idle(origin)
        if connection is None:
            connection = await self._connect(origin, request, timeouts.get("connect"))
        try:
            head = await connection.send(request, timeouts)
        except BaseException:
            self._discard(connection)
            raise
        body = _ResponseBody(self, connection, request, timeouts.get("read"))
        return httpx.Response(
            status_code=head.status_code,
            headers=head.headers.raw_items(),
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
