"""HTTP/1.1 for the direct path's JSON posts: a keep-alive pool of asyncio protocols.

``send``'s plain (not streamed) calls post a JSON body of at most 1 MiB and read the
answer whole (``_transport._post_direct``). aiohttp's ``ClientSession.post`` costs
0.15-0.19 ms of CPU per call at 5,000-20,000 calls in flight; this path, a request head
written once per endpoint as bytes and the answer parsed by httptools (llhttp, the C
parser of Node.js, as uvicorn uses it), costs about 0.04 ms: the raw asyncio floor
(docs/performance.md, "Seventh round: the transport"). Everything else (streamed calls,
large bodies, HTTP/2, proxies, trio) stays on httpx and aiohttp.

The exchange is what aiohttp's path did, and is tested for it in
tests/integration/test_transport_h1.py and test_transport_direct.py:

- **Pool.** One per origin (scheme, host, port), at most ``max_connections``
  connections to it; a call beyond waits for one (``pool`` timeout: :class:`httpx.PoolTimeout`).
  Every idle connection is kept (no cap below the limit), the last one used first, and
  closed after ``keepalive_expiry`` seconds unused. A connection the server closed is
  dropped when it closes (never reused), as is one after ``Connection: close``, an
  HTTP/1.0 answer, bytes beyond the answer, a request cut short or a failure.
- **TLS** with the client's one verified SSL context (SNI and hostname checked).
- **Timeouts** as httpx means them: ``connect`` (TCP and TLS), ``read`` (between two
  reads), ``pool``; ``write`` has no counterpart (the body goes in one write; ``send``
  bounds a whole call). A cancelled call closes its connection.
- **Answers** framed by Content-Length, chunked encoding, or the end of the connection;
  a head of at most 1 MiB, each header line at most 100 KiB (aiohttp's limit here).
- **Errors** are httpx's, the classes aiohttp's path gave for the same event: a refused
  connection, DNS or certificate failure ``ConnectError``; a server that hangs up or
  sends what is not HTTP ``RemoteProtocolError``; a reset ``ReadError``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httptools
import httpx

__all__ = ["H1Pools", "Target", "target"]

_MAX_HEAD = 1024 * 1024  # a response head, all lines
_MAX_LINE = 100 * 1024  # one header line (aiohttp's max_field_size on the former path)
_NO_BODY = frozenset((204, 304))
_FORBIDDEN = frozenset("\r\n\0")


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how a call is posted: its origin and its request head up to the
    content length (the request line, Host, the headers), built once per endpoint."""

    origin: tuple[str, str, int]
    head: bytes


def _clean(text: str) -> bool:
    return text.isascii() and not _FORBIDDEN.intersection(text)


def target(url: str, headers: Mapping[str, str]) -> Target | None:
    """The :class:`Target` of a POST to ``url`` with ``headers`` (lower-case names, the
    content type included) as httpx writes it: its request target (``raw_path``) and its
    Host header (the URL's netloc) unless the headers name one. None when the path
    cannot take it (another scheme, credentials in the URL, a header httpx would refuse
    or encode otherwise): the call then goes through the client."""
    parsed = httpx.URL(url)
    scheme = parsed.scheme
    if scheme not in ("http", "https") or parsed.userinfo or not parsed.host:
        return None
    if not all(_clean(name) and _clean(value) for name, value in headers.items()):
        return None
    port = parsed.port or (443 if scheme == "https" else 80)
    # the host as httpx connects to it: an internationalised name in its IDNA 2008 ASCII
    # form (``parsed.host`` is the Unicode form, which socket and ssl encode by IDNA 2003
    # rules: ``faß.de`` would reach ``fass.de``)
    host = parsed.raw_host.decode("ascii")
    lines = [b"POST " + parsed.raw_path + b" HTTP/1.1"]
    if "host" not in headers:
        lines.append(b"host: " + parsed.netloc)
    lines += [f"{name}: {value}".encode("ascii") for name, value in headers.items()]
    head = b"\r\n".join(lines) + b"\r\ncontent-length: "
    return Target((scheme, host, port), head)


class _Failure(Exception):
    """What went wrong on a connection, as an httpx exception to raise for the call."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time, its answer read whole."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # What aiohttp's parser accepted on the former path: a bare LF ending a line, and
        # header values llhttp's strict checks refuse (obsolete line folding). A client
        # reading its own request's answer has no request to smuggle.
        self.parser.set_dangerous_leniencies(
            lenient_optional_cr_before_lf=True, lenient_headers=True
        )
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.head_bytes = 0
        self.in_head = True
        self.framed = False  # Content-Length or chunked: not read to the end of the stream
        self.complete = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if exc is not None:
                waiter.set_exception(httpx.ReadError(str(exc) or type(exc).__name__))
            elif self.status and not self.in_head and not self.framed and not self.complete:
                self.complete = True  # an answer read to the end of the connection
                waiter.set_result(None)
            elif self.status:
                waiter.set_exception(httpx.RemoteProtocolError("Response payload is not completed"))
            else:
                waiter.set_exception(httpx.RemoteProtocolError("Server disconnected"))
        self.pool.lost(self)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or self.complete:  # bytes nobody asked for: never reuse
            self.reusable = False
            self.close()
            return
        self.last_read = self.pool.loop.time()
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                self._fail(httpx.RemoteProtocolError("response head over 1 MiB"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__cause__ or exc.__context__ or exc)
        except httptools.HttpParserUpgrade:  # 101 or an upgrade: no longer HTTP/1.1 here
            if self.complete:
                self.close()
            else:
                self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if not isinstance(exc, httpx.TransportError):
                exc = httpx.RemoteProtocolError(str(exc) or type(exc).__name__)
            waiter.set_exception(exc)
        self.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            raise _Failure("bytes beyond the announced body")

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:  # a chunked answer's trailer: not a header of the answer
            return
        if len(name) + len(value) > _MAX_LINE:
            raise _Failure("response header line over 100 KiB")
        self.raw_headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.status = self.parser.get_status_code()
        if self.status in _NO_BODY or 100 <= self.status < 200:
            self.framed = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:  # informational: the answer follows
            self._reset()
            return
        self.complete = True
        self.reusable = self.parser.should_keep_alive() and self.status != 101
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the exchange

    def is_closing(self) -> bool:
        """Closing or closed by either side (the end of the stream read, not yet lost)."""
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    async def exchange(self, data: bytes, read: float | None) -> None:
        """Write a request, wait for its whole answer (``read``: the most seconds between
        two reads). Raises httpx's exceptions; the connection is then closed."""
        assert self.transport is not None
        self._reset()
        self.reusable = False
        loop = self.pool.loop
        waiter = self.waiter = loop.create_future()
        timer = None
        if read is not None:
            self.last_read = loop.time()
            timer = loop.call_at(self.last_read + read, self._read_timer, waiter, read)
        try:
            self.transport.write(data)
            await waiter
        except BaseException:
            self.close()
            raise
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.transport.get_write_buffer_size():  # an early answer: the body not all sent
            self.reusable = False

    def _read_timer(self, waiter: asyncio.Future[None], read: float) -> None:
        if waiter.done():
            return
        due = self.last_read + read
        loop = self.pool.loop
        if loop.time() < due:  # read since: wait from the last read
            loop.call_at(due, self._read_timer, waiter, read)
            return
        waiter.set_exception(httpx.ReadTimeout("timed out reading the response"))


class _Pool:
    """The keep-alive connections to one origin: at most ``limit`` open (or opening)."""

    def __init__(self, owner: H1Pools, origin: tuple[str, str, int]) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.scheme, self.host, self.port = origin
        self.limit = owner.max_connections
        self.expiry = owner.keepalive_expiry
        self.idle: dict[_Connection, None] = {}  # insertion order: popitem() is the last used
        self.busy: set[_Connection] = set()
        self.opened = 0  # connections open or being opened
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self.sweeper: asyncio.TimerHandle | None = None

    async def post(self, head: bytes, body: bytes, timeout: httpx.Timeout) -> _Connection:
        """An exchange on a pooled connection: the connection, its answer read (the
        caller takes the answer, then :meth:`release`)."""
        conn = await self._acquire(timeout)
        try:
            await conn.exchange(b"%s%d\r\n\r\n%s" % (head, len(body), body), timeout.read)
        except BaseException:
            self.release(conn)
            raise
        return conn

    async def _acquire(self, timeout: httpx.Timeout) -> _Connection:
        idle = self.idle
        now = self.loop.time()
        while idle:
            conn, _ = idle.popitem()
            if conn.closed or conn.is_closing() or now - conn.idle_since > self.expiry:
                self._discard(conn)
                continue
            self.busy.add(conn)
            return conn
        if self.opened < self.limit:
            self.opened += 1
            return await self._connect(timeout.connect)
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            if timeout.pool is None:
                given = await waiter
            else:
                async with asyncio.timeout(timeout.pool):
                    given = await waiter
        except BaseException as exc:
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():  # handed a connection or a place as we were cancelled
                handed = waiter.result()
                if handed is None:
                    self.opened -= 1
                    self._hand_over_place()
                else:
                    self.release(handed)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("timed out waiting for a connection") from None
            raise
        if given is None:  # a freed place: open a connection in it
            return await self._connect(timeout.connect)
        return given

    async def _connect(self, seconds: float | None) -> _Connection:
        """A new connection in a place already counted in ``opened``."""
        conn = _Connection(self)
        tls = self.owner.ssl_context if self.scheme == "https" else None
        try:
            async with asyncio.timeout(seconds):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=tls,
                    server_hostname=self.host if tls is not None else None,
                )
        except BaseException as exc:
            conn.close()
            self.opened -= 1
            self._hand_over_place()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout("timed out connecting") from exc
            if isinstance(exc, (OSError, ssl.SSLError)):  # refused, DNS, TLS, certificate
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        self.busy.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        """``conn`` after its exchange: kept for the next call if it can be reused."""
        self.busy.discard(conn)
        self._give_back(conn if conn.reusable and not conn.closed else None, conn)

    def _give_back(self, conn: _Connection | None, spent: _Connection | None = None) -> None:
        if conn is None:
            if spent is not None:
                spent.close()
                self.opened -= 1
            self._hand_over_place()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.busy.add(conn)
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle[conn] = None
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.expiry, self._sweep)

    def _hand_over_place(self) -> None:
        """A place freed below the limit: the first waiter opens a connection in it."""
        while self.waiters and self.opened < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.opened += 1
                waiter.set_result(None)
                return

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self.opened -= 1
        self._hand_over_place()

    def lost(self, conn: _Connection) -> None:
        """The connection closed (by either side): an idle one leaves the pool now."""
        if conn in self.idle:
            del self.idle[conn]
            self.opened -= 1
            self._hand_over_place()

    def _sweep(self) -> None:
        """Close the connections idle past the expiry (checked once per expiry)."""
        self.sweeper = None
        deadline = self.loop.time() - self.expiry
        for conn in [c for c in self.idle if c.idle_since <= deadline]:
            del self.idle[conn]
            self._discard(conn)
        if self.idle:
            self.sweeper = self.loop.call_later(self.expiry, self._sweep)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for conn in [*self.idle, *self.busy]:
            conn.close()
        self.idle.clear()
        self.busy.clear()
        for waiter in self.waiters:
            waiter.cancel()
        self.waiters.clear()


class H1Pools:
    """The pools of one client on one event loop, one per origin."""

    def __init__(
        self, ssl_context: ssl.SSLContext, *, max_connections: int, keepalive_expiry: float
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.pools: dict[tuple[str, str, int], _Pool] = {}
        self.closed = False

    async def post(
        self, target: Target, body: bytes, timeout: httpx.Timeout
    ) -> tuple[int, str, tuple[tuple[bytes, bytes], ...], bytes]:
        """POST ``body`` to ``target``: the answer's status, reason, raw headers, body."""
        if self.closed:
            raise RuntimeError("the client is closed")
        pool = self.pools.get(target.origin)
        if pool is None:
            pool = self.pools[target.origin] = _Pool(self, target.origin)
        conn = await pool.post(target.head, body, timeout)
        answer = (
            conn.status,
            conn.reason.decode("latin-1"),
            tuple(conn.raw_headers),
            b"".join(conn.chunks),
        )
        pool.release(conn)
        return answer

    def close(self) -> None:
        self.closed = True
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
