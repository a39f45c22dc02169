"""The shared client's transports, against servers on 127.0.0.1.

The default on asyncio is aiohttp through httpx-aiohttp (``baton_nb/llm/_aiohttp.py``);
stock httpx serves environment proxies and HTTP/2. Each test starts a small HTTP/1.1
server written on asyncio streams, so it controls exactly what goes over the wire
(keep-alive, ``Connection: close``, chunked bodies, a server that closes idle
connections, stalls, hangs up, resets or lies about a body's length) and counts the
connections the client opened. Errors must come out as the httpx exception stock httpx
raises for the same event: ``send`` (``_transport.py``) retries on them by type.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme

from baton_nb._errors import ConfigurationError
from baton_nb.llm import Limit, LLMRequest, aclose, complete, configure, reset_configuration
from baton_nb.llm import _client as client_module
from baton_nb.llm._aiohttp import AiohttpTransport
from baton_nb.llm._client import (
    DEFAULT_MAX_CONNECTIONS,
    _new_client,
    _Settings,
    connection_limit,
    direct_transport,
    get_client,
    shared_now,
)
from tests.fakes.provider_server import FakeProviderServer

MSGS = ({"role": "user", "content": "hi"},)

Handler = Callable[["Conn"], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> tuple[str, dict[str, str], bytes] | None:
        """The next request line, headers and body; None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *rest = head.decode("latin-1").split("\r\n")
        pairs = (h.partition(":") for h in rest if h)
        headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return line, headers, body

    async def respond(self, body: bytes = b"ok", *, status: int = 200, **headers: str) -> None:
        lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()


@dataclass
class Server:
    port: int
    connections: int = 0
    lines: list[str] = field(default_factory=list)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def serving(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(0)
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        try:
            await handler(Conn(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def keep_alive(server_lines: list[str] | None = None, body: bytes = b"ok") -> Handler:
    async def handle(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if server_lines is not None:
                server_lines.append(request[0])
            await conn.respond(body)

    return handle


def transport(
    context: ssl.SSLContext | None = None,
    *,
    max_connections: int = 100,
    keepalive_expiry: float = 30.0,
) -> AiohttpTransport:
    return AiohttpTransport(
        context or ssl.create_default_context(),
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )


@asynccontextmanager
async def client(
    *, max_connections: int = 100, keepalive_expiry: float = 30.0
) -> AsyncIterator[httpx.AsyncClient]:
    chosen = transport(max_connections=max_connections, keepalive_expiry=keepalive_expiry)
    async with httpx.AsyncClient(transport=chosen, timeout=5) as c:
        yield c


@pytest.mark.anyio
async def test_sequential_requests_reuse_one_connection() -> None:
    lines: list[str] = []
    async with serving(keep_alive(lines)) as server, client() as c:
        for i in range(5):
            r = await c.post(server.url(f"/n{i}"), json={"i": i})
            assert (r.status_code, r.text) == (200, "ok")
    assert server.connections == 1
    assert lines == [f"POST /n{i} HTTP/1.1" for i in range(5)]


@pytest.mark.anyio
async def test_concurrent_requests_open_one_connection_each_then_reuse_them() -> None:
    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await asyncio.sleep(0.05)
            await conn.respond()

    async with serving(slow) as server, client() as c:
        for _ in range(3):
            await asyncio.gather(*(c.get(server.url()) for _ in range(10)))
    assert server.connections == 10


@pytest.mark.anyio
async def test_connection_close_from_the_server_is_not_reused() -> None:
    async def once(conn: Conn) -> None:
        await conn.request()
        await conn.respond(connection="close")

    async with serving(once) as server, client() as c:
        for _ in range(3):
            assert (await c.get(server.url())).text == "ok"
    assert server.connections == 3


@pytest.mark.anyio
async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async def close_when_idle(conn: Conn) -> None:
        await conn.request()
        await conn.respond()  # keep-alive promised, then closed while idle

    async with serving(close_when_idle) as server, client() as c:
        assert (await c.get(server.url())).text == "ok"
        await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
        assert (await c.get(server.url())).text == "ok"
    assert server.connections == 2


@pytest.mark.anyio
async def test_connections_idle_past_keepalive_expiry_are_replaced() -> None:
    async with serving(keep_alive()) as server, client(keepalive_expiry=0.05) as c:
        await c.get(server.url())
        await c.get(server.url())
        await asyncio.sleep(0.1)
        await c.get(server.url())
    assert server.connections == 2


@pytest.mark.anyio
async def test_chunked_body_is_streamed_as_it_arrives() -> None:
    sent_first = asyncio.Event()
    release = asyncio.Event()

    async def chunked(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n"
            )
            await conn.writer.drain()
            sent_first.set()
            await release.wait()
            conn.writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
            await conn.writer.drain()

    async with serving(chunked) as server, client() as c:
        async with c.stream("POST", server.url(), json={}) as r:
            pieces = r.aiter_bytes()
            assert await pieces.__anext__() == b"data: 1"  # before the server sent the rest
            release.set()
            assert [p async for p in pieces] == [b"data: 2"]
        release.clear()
        sent_first.clear()
        release.set()
        assert (await c.post(server.url(), json={})).text == "data: 1data: 2"
    assert server.connections == 1


@pytest.mark.anyio
async def test_a_stream_closed_before_its_end_discards_the_connection() -> None:
    async def big(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond(b"x" * 1_000_000)

    async with serving(big) as server, client() as c:
        async with c.stream("GET", server.url()) as r:
            await r.aiter_bytes().__anext__()  # read a little, then leave
        r2 = await c.get(server.url())
        assert len(r2.content) == 1_000_000
    assert server.connections == 2


@pytest.mark.anyio
async def test_large_request_and_response_bodies() -> None:
    payload = bytes(range(256)) * 20_000  # 5 MB: the socket buffer fills, the write waits

    async def echo(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            await conn.respond(request[2])

    async with serving(echo) as server, client() as c:
        r = await c.post(server.url(), content=payload)
        assert r.content == payload

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"abc" * 1000

        r = await c.post(server.url(), content=parts())  # chunked upload
        assert r.content == b"abc" * 3000
    assert server.connections == 1


@pytest.mark.anyio
async def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    async def no_body(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request[0].startswith("HEAD"):
                conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            else:
                conn.writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await conn.writer.drain()

    async with serving(no_body) as server, client() as c:
        r = await c.head(server.url())
        assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "10")
        r = await c.delete(server.url())
        assert (r.status_code, r.content, r.reason_phrase) == (204, b"", "No Content")
    assert server.connections == 1


@pytest.mark.anyio
async def test_read_timeout() -> None:
    async def stall(conn: Conn) -> None:
        await conn.request()
        await asyncio.sleep(10)

    async with serving(stall) as server, client() as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(server.url(), timeout=0.1)


@pytest.mark.anyio
async def test_connect_refused_is_a_connect_error() -> None:
    async with serving(keep_alive()) as server:
        port = server.port
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")


@pytest.mark.anyio
async def test_server_closing_mid_body_is_a_protocol_error_and_not_reused() -> None:
    async def short(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await conn.writer.drain()

    async with serving(short) as server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())
    assert server.connections == 2


def _event_stream_head_and_first_event(conn: Conn) -> None:
    conn.writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n"
    )


@pytest.mark.anyio
async def test_a_stream_cut_between_chunks_is_a_protocol_error() -> None:
    async def cut(conn: Conn) -> None:
        await conn.request()
        _event_stream_head_and_first_event(conn)
        await conn.writer.drain()  # then close: no terminating chunk

    async with (
        serving(cut) as server,
        client() as c,
        c.stream("POST", server.url(), json={}) as r,
    ):
        pieces = r.aiter_bytes()
        assert await pieces.__anext__() == b"data: 1"
        with pytest.raises(httpx.RemoteProtocolError):  # httpx-aiohttp alone: ReadError
            await pieces.__anext__()


@pytest.mark.anyio
async def test_a_stream_stalling_between_chunks_is_a_read_timeout() -> None:
    async def stall(conn: Conn) -> None:
        await conn.request()
        _event_stream_head_and_first_event(conn)
        await conn.writer.drain()
        await asyncio.sleep(10)

    async with (
        serving(stall) as server,
        client() as c,
        c.stream("POST", server.url(), json={}, timeout=0.2) as r,
    ):
        pieces = r.aiter_bytes()
        assert await pieces.__anext__() == b"data: 1"
        with pytest.raises(httpx.ReadTimeout):
            await pieces.__anext__()


@pytest.mark.anyio
async def test_garbage_from_the_server_is_a_protocol_error() -> None:
    async def garbage(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"this is not HTTP\r\n\r\n")
        await conn.writer.drain()

    async with serving(garbage) as server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())


@pytest.mark.anyio
async def test_a_cancelled_request_discards_its_connection() -> None:
    stalled: list[Conn] = []

    async def slow_first(conn: Conn) -> None:
        while await conn.request() is not None:
            if not stalled:
                stalled.append(conn)
                await asyncio.sleep(10)
            await conn.respond()

    async with serving(slow_first) as server, client() as c:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.1):
                await c.get(server.url())
        assert (await c.get(server.url())).text == "ok"
    assert server.connections == 2


@pytest.mark.anyio
async def test_aclose_closes_idle_connections() -> None:
    closed = asyncio.Event()

    async def watch_close(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond()
        closed.set()

    async with serving(watch_close) as server:
        async with client() as c:
            await c.get(server.url())
        with anyio.fail_after(2):
            await closed.wait()


@pytest.mark.anyio
async def test_a_response_head_of_40_kb_arriving_in_pieces_is_accepted() -> None:
    async def big_head(conn: Conn) -> None:
        while await conn.request() is not None:
            big = b"x-big: " + b"a" * 40_000
            head = b"HTTP/1.1 200 OK\r\n" + big + b"\r\ncontent-length: 2\r\n\r\nok"
            for i in range(0, len(head), 4096):
                conn.writer.write(head[i : i + 4096])
                await conn.writer.drain()
                await asyncio.sleep(0.001)

    async with serving(big_head) as server, client() as c:
        r = await c.get(server.url())
        assert (r.text, len(r.headers["x-big"])) == ("ok", 40_000)


@pytest.mark.anyio
async def test_an_early_answer_during_a_streamed_upload_is_returned() -> None:
    async def refuse(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await conn.respond(b"too big!", status=413, connection="close")
        conn.writer.write_eof()  # stop listening, as a lingering-close server does
        while await conn.reader.read(65536):
            pass

    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 1000
            await asyncio.sleep(0.02)

    async with serving(refuse) as server, client() as c:
        r = await c.post(server.url(), content=body())
        assert (r.status_code, r.text) == (413, "too big!")


@pytest.mark.anyio
async def test_a_slow_reader_makes_the_socket_push_back() -> None:
    async def flood(conn: Conn) -> None:
        await conn.request()
        size = 50_000_000
        conn.writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode())
        chunk = b"x" * 1_000_000
        for _ in range(size // len(chunk)):
            conn.writer.write(chunk)
            await conn.writer.drain()

    shipped = transport()
    async with serving(flood) as server:
        request = httpx.Request("GET", server.url(), extensions={"timeout": {"read": 5.0}})
        response = await shipped.handle_async_request(request)
        try:
            pieces = response.stream.__aiter__()  # type: ignore[union-attr]
            await pieces.__anext__()
            await asyncio.sleep(0.3)  # a consumer busy elsewhere
            # what aiohttp took off the socket so far (it stops reading with 512 KiB unread)
            content = response.stream._inner._aiohttp_response.content  # type: ignore[union-attr]
            assert content.total_raw_bytes < 2_000_000  # not the 50 MB sent
        finally:
            await response.aclose()
            await shipped.aclose()


@pytest.mark.anyio
async def test_bytes_beyond_the_announced_body_are_never_read_as_the_next_answer() -> None:
    async def overlong(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirstSTALE")
            await conn.writer.drain()

    async with serving(overlong) as server, client() as c:
        for _ in range(2):
            # aiohttp's parser rejects the stray bytes when they come in the same packet
            # (a protocol error: the call is retried), or drops the connection after them
            try:
                answer = await c.get(server.url())
            except httpx.RemoteProtocolError:
                continue
            assert answer.text == "first"
    assert server.connections == 2  # the second call never reused the first connection


@pytest.mark.anyio
async def test_a_server_hanging_up_without_answering_is_a_protocol_error() -> None:
    # httpx-aiohttp 0.2.0 alone says ConnectTimeout ("request timed out") here
    async def hang_up(conn: Conn) -> None:
        await conn.request()

    async with serving(hang_up) as server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=r"[Ss]erver disconnected"):
            await c.post(server.url(), json={})


@pytest.mark.anyio
async def test_a_connection_reset_is_a_network_error() -> None:
    async def reset(conn: Conn) -> None:
        await conn.request()
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()  # RST, not FIN

    async with serving(reset) as server, client() as c:
        with pytest.raises((httpx.NetworkError, httpx.RemoteProtocolError)) as caught:
            await c.post(server.url(), json={})
    assert not isinstance(caught.value, httpx.TimeoutException)


@pytest.mark.anyio
async def test_waiting_past_the_pool_timeout_for_a_connection_is_a_timeout() -> None:
    release = asyncio.Event()

    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await release.wait()
            await conn.respond()

    async with serving(slow) as server, client(max_connections=1) as c:
        first = asyncio.create_task(c.get(server.url()))
        await asyncio.sleep(0.05)
        timeout = httpx.Timeout(5.0, pool=0.1)
        with pytest.raises(httpx.TimeoutException):
            await c.get(server.url(), timeout=timeout)
        release.set()
        assert (await first).text == "ok"
    assert server.connections == 1


@pytest.mark.anyio
async def test_calls_beyond_the_connection_limit_wait_for_a_free_connection() -> None:
    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await asyncio.sleep(0.02)
            await conn.respond()

    async with serving(slow) as server, client(max_connections=3) as c:
        answers = await asyncio.gather(*(c.get(server.url()) for _ in range(12)))
    assert [a.text for a in answers] == ["ok"] * 12
    assert server.connections == 3


@pytest.mark.anyio
async def test_the_wire_carries_what_stock_httpx_sends() -> None:
    """Same request line (no re-quoting of the URL) and the same headers: none added by
    aiohttp (content-type, its user-agent), cookies sent once (httpx keeps them)."""
    heads: list[bytes] = []

    async def record(conn: Conn) -> None:
        while True:
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            heads.append(head)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await conn.reader.readexactly(int(line.split(b":")[1]))
            conn.writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: s=1\r\ncontent-length: 0\r\n\r\n")
            await conn.writer.drain()

    async def exchange(c: httpx.AsyncClient, server: Server) -> None:
        path = "/v1/a%2Fb/c d/models/m:generateContent?alt=sse&key=A%2Bz&q=\u00e9"
        await c.get(server.url(path))
        await c.post(server.url("/v1/chat"), json={"a": 1})
        await c.post(server.url("/raw"), content=b"raw bytes")

    async with serving(record) as server:
        async with httpx.AsyncClient(headers={"user-agent": "baton-nb"}) as stock:
            await exchange(stock, server)
        async with httpx.AsyncClient(
            transport=transport(), headers={"user-agent": "baton-nb"}
        ) as c:
            await exchange(c, server)

    def normalised(head: bytes) -> list[bytes]:
        line, *headers = head.split(b"\r\n")
        return [line, *sorted(h.lower() for h in headers if h)]

    stock_heads, ours = heads[:3], heads[3:]
    assert [normalised(h) for h in ours] == [normalised(h) for h in stock_heads]
    assert b"/v1/a%2Fb/c%20d/models/m:generateContent?alt=sse&key=A%2Bz&q=%C3%A9 " in ours[0]
    assert b"content-type" not in ours[2].lower()


@pytest.mark.anyio
async def test_a_large_request_body_is_sent_without_a_resource_warning() -> None:
    # aiohttp warns (ResourceWarning) when handed > 1 MiB of bytes at once
    async def echo_length(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            await conn.respond(str(len(request[2])).encode())

    async with serving(echo_length) as server, client() as c:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = await c.post(server.url(), content=b"x" * 3_000_000)
    assert r.text == "3000000"


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.mark.anyio
async def test_https_with_a_trusted_certificate(certificate_authority: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    certificate_authority.configure_trust(trusted)
    async with (
        serving(keep_alive(), _server_tls(certificate_authority)) as server,
        httpx.AsyncClient(transport=transport(trusted), timeout=5) as c,
    ):
        for _ in range(3):
            r = await c.get(server.url(scheme="https"))
            assert (r.status_code, r.text) == (200, "ok")
    assert server.connections == 1


@pytest.mark.anyio
async def test_https_with_an_untrusted_certificate_fails_to_connect(
    certificate_authority: trustme.CA,
) -> None:
    async with serving(keep_alive(), _server_tls(certificate_authority)) as server, client() as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(server.url(scheme="https"))


@pytest.mark.anyio
async def test_environment_proxies_still_go_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    async with serving(keep_alive(lines, b"via proxy")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        settings = _Settings(http2=False, max_connections=DEFAULT_MAX_CONNECTIONS)
        shared = _new_client(ssl.create_default_context(), True, settings)
        try:
            r = await shared.post("http://provider.invalid/v1/chat", json={})
            pools = [mount._pool for mount in shared._mounts.values()]  # type: ignore[union-attr]
        finally:
            await shared.aclose()
    assert r.text == "via proxy"
    assert lines == ["POST http://provider.invalid/v1/chat HTTP/1.1"]  # absolute form
    assert {p._max_connections for p in pools} == {DEFAULT_MAX_CONNECTIONS}  # bounded


def _openai_answer() -> bytes:
    body = {
        "id": "h2",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "over h2"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return json.dumps(body).encode()


def h2_server(streams: list[tuple[int, str]]) -> Handler:
    """HTTP/2 only (ALPN h2): answers every POST with an OpenAI chat completion."""

    async def handle(conn: Conn) -> None:
        ssl_object = conn.writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.writer.write(h2c.data_to_send())
        paths: dict[int, str] = {}
        while data := await conn.reader.read(65536):
            for event in h2c.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    paths[event.stream_id] = dict(event.headers)[b":path"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    h2c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    streams.append((event.stream_id, paths[event.stream_id]))
                    answer = _openai_answer()
                    h2c.send_headers(
                        event.stream_id,
                        [
                            (":status", "200"),
                            ("content-type", "application/json"),
                            ("content-length", str(len(answer))),
                        ],
                    )
                    h2c.send_data(event.stream_id, answer, end_stream=True)
            conn.writer.write(h2c.data_to_send())
            await conn.writer.drain()

    return handle


@pytest.mark.anyio
async def test_configure_http2_multiplexes_calls_on_one_connection(
    certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # honoured by httpx.create_ssl_context
    monkeypatch.setattr(client_module, "_ssl_context", None)  # the process-wide cached one
    server_tls = _server_tls(certificate_authority)
    server_tls.set_alpn_protocols(["h2"])
    streams: list[tuple[int, str]] = []
    async with serving(h2_server(streams), server_tls) as server:
        reset_configuration()
        configure(
            providers={"openai": {"base_url": server.url("/v1", "https"), "api_key": "k" * 8}},
            http2=True,
        )
        try:
            answers = await asyncio.gather(
                *(complete(LLMRequest("openai/gpt-4o-mini", MSGS)) for _ in range(5))
            )
        finally:
            await aclose()
            reset_configuration()
    assert [a.text for a in answers] == ["over h2"] * 5
    assert server.connections == 1  # five calls, one connection
    assert sorted(s for s, _ in streams) == [1, 3, 5, 7, 9]
    assert {p for _, p in streams} == {"/v1/chat/completions"}


def test_http2_setting_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="http2 must be True or False"):
        configure(http2="yes")  # type: ignore[arg-type]


def test_the_connection_limit_is_explicit_and_follows_configured_concurrency() -> None:
    reset_configuration()
    try:
        assert connection_limit() == DEFAULT_MAX_CONNECTIONS == 1000
        configure(limits={"openai": Limit(concurrency=50)})
        assert connection_limit() == 1000
        configure(limits={"openai": Limit(concurrency=50), "local": Limit(concurrency=2500)})
        assert connection_limit() == 2500
    finally:
        reset_configuration()


@pytest.mark.anyio
async def test_the_shared_client_is_rebuilt_when_a_limit_needs_more_connections() -> None:
    reset_configuration()
    try:
        first = await get_client()
        assert isinstance(first._transport, AiohttpTransport)
        assert first._transport.limits.max_connections == DEFAULT_MAX_CONNECTIONS
        configure(limits={"openai": Limit(concurrency=10)})
        assert await get_client() is first  # a lower limit: the same client, its connections
        configure(limits={"openai": Limit(concurrency=3000)})
        second = await get_client()
        assert second is not first and first.is_closed
        assert second._transport.limits.max_connections == 3000  # type: ignore[attr-defined]
    finally:
        await aclose()
        reset_configuration()


@pytest.mark.anyio
async def test_the_per_call_shortcut_to_the_shared_client_follows_get_client() -> None:
    """``shared_now`` (what a call uses instead of awaiting ``get_client``) is the running
    loop's current client, and nothing once it is closed or must be rebuilt."""
    reset_configuration()
    try:
        first = await get_client()
        shared = shared_now()
        assert shared is not None and shared.client is first
        assert shared.direct is direct_transport(first)
        configure(limits={"openai": Limit(concurrency=3000)})  # needs a new client
        assert shared_now() is None
        second = await get_client()
        assert (now := shared_now()) is not None and now.client is second is not first
        await aclose()
        assert shared_now() is None
        third = await get_client()
        assert (now := shared_now()) is not None and now.client is third is not second
    finally:
        await aclose()
        reset_configuration()


def test_the_per_call_shortcut_is_the_running_loops() -> None:
    async def made() -> Any:
        await get_client()
        return shared_now()

    async def other() -> Any:
        try:
            return shared_now()
        finally:
            await aclose()

    try:
        assert asyncio.run(made()) is not None
        assert asyncio.run(other()) is None  # another loop: not the first loop's client
    finally:
        reset_configuration()


@pytest.mark.anyio
async def test_no_connection_is_reopened_while_calls_stay_within_the_limit(
    fake_providers: FakeProviderServer,
) -> None:
    """More calls in flight than the former transport kept idle connections (256): each
    connection is opened once, then reused by every wave."""
    in_flight, calls = 300, 1200
    # long enough that the calls of a wave overlap at the server even on a loaded machine
    fake_providers.latency = 0.4
    fake_providers.record = False
    limiter = anyio.CapacityLimiter(in_flight)

    async def one() -> None:
        async with limiter:
            await complete(LLMRequest("openai/gpt-4o-mini", MSGS))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
    finally:
        await aclose()
    assert fake_providers.request_count == calls
    # more in flight at once than the former transport's 256 idle connections
    assert 256 < fake_providers.max_in_flight <= in_flight
    assert fake_providers.connections <= in_flight
