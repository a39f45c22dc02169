"""HTTP/1.1 for the shared ``httpx.AsyncClient`` on asyncio: aiohttp, through httpx-aiohttp.

``httpx-aiohttp`` (by an httpx maintainer; the transport the OpenAI SDK offers as its
``DefaultAioHttpClient``) sends httpx requests with an ``aiohttp.ClientSession``:
aiohttp's C HTTP parser and connection pool cost 1.04-1.18x the CPU per call of the
hand-written h11 transport it replaced, and its pool keeps every idle connection (no cap
on idle ones), so a fan-out of 1,000 calls in flight reuses its connections instead of
reopening hundreds per wave (docs/performance.md, "The transport", has the figures).

What this module adds to httpx-aiohttp 0.2.0, each for a reason found reading its source
(``httpx_aiohttp/transport.py``) and tested in tests/integration/test_transport.py:

- **Errors.** Its map sends every ``aiohttp.ClientConnectionError`` to
  ``httpx.ConnectTimeout`` and keeps that over the more specific entries (a refused
  connection, a DNS failure, a certificate rejected, a server that hung up: all
  "timeouts"), gives a truncated body as ``ReadError`` and lets a malformed response
  (``ClientResponseError``) escape as an aiohttp exception. Callers here (``send`` in
  ``_transport.py``) tell timeouts, network errors and protocol errors apart, so errors
  are translated again from the aiohttp exception itself (the library keeps it as
  ``__cause__``) into what httpx's own transport raises for the same event.
- **The session.** We build it (the library's own caps the pool at 100 connections
  when ``max_connections`` is None): our one verified SSL context; an explicit
  per-origin connection limit; no idle cap; keep-alive expiry 30 s; no cookie jar of its
  own (httpx keeps cookies; a second jar would send ones httpx dropped); response heads
  up to 100 KiB per line as httpcore accepts (aiohttp's default is 8 KiB a header); no
  environment proxies (given a transport, httpx ignores them too, so the shared client
  uses stock httpx when the environment names a proxy: ``_client.py``).
- **The direct path.** ``post_json`` (a plain call's JSON post, ``_transport._post_direct``)
  does not go through aiohttp: its own keep-alive pool (``_h1.py``, httptools' parser)
  costs a quarter of aiohttp's CPU per call. Its pool is not aiohttp's: each bounds the
  connections to one origin at ``max_connections``, so calls streamed and plain at once
  can hold up to twice that many.
- **The request.** The wire carries httpx's headers only (aiohttp would add
  ``Content-Type: application/octet-stream`` to a body without one), and a body over
  1 MiB (a prompt with images) goes as a stream with its length: handed over as bytes,
  aiohttp emits a ``ResourceWarning`` per request.

What it does right and we keep: timeouts (httpx's ``connect`` is aiohttp's
``sock_connect``, ``read`` its ``sock_read``, between any two reads, ``pool`` its
``connect``: waiting for a pooled connection plus connecting; httpx's ``write`` has no
aiohttp counterpart: ``send`` bounds a whole non-streaming call), streamed bodies in
and out (aiohttp pauses reading a socket whose unread buffer is full, so a slow
consumer makes the server wait), cancellation (aiohttp closes a connection whose
exchange was interrupted), a response closed before its end discards its connection,
``auto_decompress=False`` (httpx decodes), no redirects (httpx decides).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp
from multidict import CIMultiDict

from ._h1 import H1Pools, Target, target
from ._jsonenc import one_shot

__all__ = ["AiohttpTransport", "Answer", "translate_error"]

_MAX_HEAD_LINE = 100 * 1024  # httpcore (h11) accepts response heads up to 100 KiB
# aiohttp warns (ResourceWarning) when handed more bytes than this at once; such a body
# (a prompt with images) is handed over as a stream with its content-length instead.
_LARGE_BODY = 1024 * 1024
# Headers aiohttp would add on its own: httpx already sends the first three (its client
# defaults) and no content-type unless the caller gave one; the wire carries httpx's headers.
_AIOHTTP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_TARGETS_KEPT = 256  # distinct (URL, call headers) pairs kept by post_json (endpoints, keys)
_UNSET: Any = object()
# A request body as httpx encodes json= (compact, UTF-8, no NaN); its C encoder set up
# once (``one_shot``, as complete's other encoders), not per call as ``encode`` does.
_JSON = one_shot(json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False))

# Most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connecting, or waiting for one
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # SocketTimeoutError: sock_read
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS, certificate
    (aiohttp.ServerFingerprintMismatch, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # hung up, no answer
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short or misframed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a head that is not HTTP
    (aiohttp.UploadAbortedError, httpx.WriteError),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset, OS errors on a live socket
    (TimeoutError, httpx.ReadTimeout),
    (OSError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)


def translate_error(exc: Exception) -> httpx.TransportError | None:
    """httpx's exception for an aiohttp failure (raw, or mis-mapped by httpx-aiohttp);
    None for anything else."""
    source: BaseException = exc
    if isinstance(exc, httpx.TransportError):
        if not isinstance(exc.__cause__, (aiohttp.ClientError, OSError)):
            return None  # httpx's own (e.g. from reading the request stream)
        source = exc.__cause__
    for aiohttp_type, httpx_type in _ERRORS:
        if isinstance(source, aiohttp_type):
            message = str(source) or type(source).__name__
            translated = httpx_type(message)
            translated.__cause__ = source
            return translated
    return None


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc)
        if translated is None:
            raise
        raise translated from translated.__cause__


class _Body(httpx.AsyncByteStream):
    """The response body, with errors met while reading or closing it translated."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._inner.aclose()


def _session(
    ssl_context: ssl.SSLContext, max_connections: int, keepalive_expiry: float
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=ssl_context,
        limit=0,  # no total cap: the cap is per origin (a provider)
        limit_per_host=max_connections,
        keepalive_timeout=keepalive_expiry,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_AIOHTTP_AUTO_HEADERS,
        trust_env=False,
        auto_decompress=False,
        max_line_size=_MAX_HEAD_LINE,
        max_field_size=_MAX_HEAD_LINE,
    )


class Answer:
    """An answer read whole by :meth:`AiohttpTransport.post_json`: what ``send`` reads of
    an ``httpx.Response`` (status, case-insensitive headers, the decoded body).

    ``headers`` (a ``CIMultiDict`` of the decoded names and values) is made when first
    read: a successful call reads none of them, and making it cost ~2 us a call for a
    handful of headers (a provider sends twenty); ``first`` finds one in the raw ones."""

    __slots__ = ("_headers", "_names", "content", "raw_headers", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        reason_phrase: str,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        content: bytes,
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.raw_headers = raw_headers
        self.content = content
        self._headers: CIMultiDict[str] | None = None
        # each name in lower case -> its first value, when every name is ASCII (else
        # False), made by the first ``first``: one pass over the raw headers per answer
        self._names: dict[bytes, bytes] | bool | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = _decoded_headers(self.raw_headers)
        return headers

    def first(self, name: str) -> str | None:
        """``headers.get(name)`` (``name`` in lower case, ASCII), read from the raw headers
        without making ``headers`` when every name is ASCII (where bytes' ``lower`` is the
        same case-insensitive match)."""
        names = self._names
        if names is None:
            names = self._names = _first_values(self.raw_headers)
        if names is not False and self._headers is None:
            assert isinstance(names, dict)
            value = names.get(name.encode("ascii"))
            return None if value is None else value.decode("utf-8", "surrogateescape")
        return self.headers.get(name)

    def as_httpx(self, request: httpx.Request) -> httpx.Response:
        """The same answer as an ``httpx.Response`` of ``request`` (for the cookie jar)."""
        return httpx.Response(self.status_code, headers=self.raw_headers, request=request)


def _first_values(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes] | bool:
    """Each header name in lower case with its first value; False if a name is not ASCII
    (bytes' ``lower`` is then not the case-insensitive match of the decoded name)."""
    found: dict[bytes, bytes] = {}
    for key, value in raw_headers:
        if not key.isascii():
            return False
        found.setdefault(key.lower(), value)
    return found


def _decoded_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    return CIMultiDict(
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in raw_headers
    )


class AiohttpTransport(httpx_aiohttp.AiohttpTransport):
    """httpx-aiohttp's transport over a session of ours, with httpx's exception types.

    ``max_connections`` bounds the connections open to one origin (a call beyond it
    waits for one to be free, within the request's pool timeout); every idle connection
    is kept until ``keepalive_expiry`` seconds unused.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext, *, max_connections: int, keepalive_expiry: float
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        # The session is made on the first request (it binds to the running loop).
        factory = partial(_session, ssl_context, max_connections, keepalive_expiry)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, client=factory)
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._client_headers: dict[str, str] | None = None
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], Target | None] = {}
        self._h1: H1Pools | None = None
        self._closed = False

    def _session(self) -> aiohttp.ClientSession:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    async def aclose(self) -> None:
        self._closed = True
        h1, self._h1 = self._h1, None
        if h1 is not None:
            h1.close()
        await super().aclose()

    def _target(
        self, client_headers: httpx.Headers, url: str, call_headers: Mapping[str, str]
    ) -> Target | None:
        """Where and with which head httpx's client would send ``post(url,
        headers=call_headers, json=...)``: the client's headers (lower-case names), then
        the call's (a call's header replaces the client's), and the content type ``json=``
        adds unless the call gave one. Made once per URL and call headers (an endpoint's,
        with its key). The client's headers are read on the first use: the transport
        belongs to one client (``_client._new_client``), whose headers are set when it is
        made."""
        key = (url, tuple(call_headers.items()))
        found = self._targets.get(key, _UNSET)
        if found is _UNSET:
            if self._client_headers is None:
                self._client_headers = dict(client_headers.items())
            merged = dict(self._client_headers)
            merged.update((name.lower(), value) for name, value in call_headers.items())
            merged.setdefault("content-type", "application/json")
            found = target(url, merged)
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            self._targets[key] = found
        return found  # type: ignore[no-any-return]

    async def post_json(
        self,
        client_headers: httpx.Headers,
        url: str,
        call_headers: Mapping[str, str],
        body: Any,
        timeout: httpx.Timeout,
    ) -> Answer | None:
        """What httpx's client would send for ``post(url, headers=call_headers,
        json=body)``, posted on the direct path's own pool (``_h1.py``) without building
        an ``httpx.Request``, the answer read whole (its body decoded by httpx as the
        client would). The same timeouts and error types as :meth:`handle_async_request`;
        ``None`` for a call it does not take (a body over 1 MiB, a URL or header the
        path does not write: the caller sends it through the client)."""
        data = _JSON(body).encode("utf-8")
        if len(data) > _LARGE_BODY:
            return None
        where = self._target(client_headers, url, call_headers)
        if where is None:
            return None
        pools = self._h1
        if pools is None:
            if self._closed:
                raise RuntimeError("the client is closed")
            pools = self._h1 = H1Pools(
                self._ssl_context,
                max_connections=self._max_connections,
                keepalive_expiry=self._keepalive_expiry,
            )
        status, reason, raw_headers, raw = await pools.post(where, data, timeout)
        answer = Answer(status, reason, raw_headers, raw)
        encoding = (answer.first("content-encoding") or "").strip().lower()
        if encoding and encoding != "identity":  # decoded by httpx, as httpx reads it
            answer.content = httpx.Response(status, headers=raw_headers, content=raw).content
        return answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streamed upload: already a stream
            content = b""
        if len(content) > _LARGE_BODY:
            request = httpx.Request(
                request.method,
                request.url,
                headers=request.headers,  # with its content-length: not sent chunked
                stream=httpx.ByteStream(content),
                extensions=request.extensions,
            )
        with _httpx_errors():
            response = await super().handle_async_request(request)
        response.stream = _Body(response.stream)  # type: ignore[arg-type]
        return response
