"""The shared client's direct path for plain (non-streaming) calls on aiohttp.

``send`` (``_transport.py``) posts a call's JSON on the aiohttp transport's session
(``AiohttpTransport.post_json``) instead of going through ``httpx.AsyncClient.post``:
these tests hold it to what the client path does for the same exchange: the bytes on the
wire, a compressed answer decoded, connections reused or discarded alike, and the same
httpx exception types for each failure (``send`` retries on them by type).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from baton_nb.llm._aiohttp import AiohttpTransport, Answer
from baton_nb.llm._transport import _post_direct
from baton_nb.llm._wire import HttpCall
from tests.integration.test_transport import Conn, Server, keep_alive, serving, transport

TIMEOUT = httpx.Timeout(5.0)
GEMINI_PATH = "/v1/a%2Fb/c d/models/m:generateContent?alt=sse&key=A%2Bz&q=\u00e9"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def direct() -> AsyncIterator[tuple[httpx.AsyncClient, AiohttpTransport]]:
    chosen = transport()
    async with httpx.AsyncClient(transport=chosen, headers={"user-agent": "baton-nb"}) as c:
        yield c, chosen


async def post(
    c: httpx.AsyncClient,
    chosen: AiohttpTransport,
    url: str,
    body: dict[str, object] | None = None,
    timeout: httpx.Timeout = TIMEOUT,
) -> Answer:
    call = HttpCall(url, {"Authorization": "Bearer sk-test-1234"}, body or {"a": 1})
    response = await _post_direct(c, chosen, call, timeout)
    assert response is not None
    return response


@pytest.mark.anyio
async def test_the_wire_carries_what_the_client_path_sends() -> None:
    heads: list[tuple[list[bytes], bytes]] = []

    async def record(conn: Conn) -> None:
        while True:
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await conn.reader.readexactly(length)
            line, *headers = head.split(b"\r\n")
            heads.append(([line, *sorted(h.lower() for h in headers if h)], body))
            await conn.respond(b"{}")

    body = {"model": "m", "messages": [{"role": "user", "content": "h\u00e9 \U0001f600"}]}
    call_headers = {"Authorization": "Bearer sk-test-1234", "X-Title": "t"}
    async with serving(record) as server, direct() as (c, chosen):
        for path in ("/v1/chat/completions", GEMINI_PATH):
            await c.post(server.url(path), headers=call_headers, json=body, timeout=TIMEOUT)
            call = HttpCall(server.url(path), call_headers, body)
            assert await _post_direct(c, chosen, call, TIMEOUT) is not None
    assert len(heads) == 4
    assert heads[1] == heads[0] and heads[3] == heads[2]
    assert b"content-type: application/json" in heads[0][0]
    assert json.loads(heads[1][1]) == body


@pytest.mark.anyio
async def test_without_the_client_default_headers_the_wire_is_still_the_client_paths() -> None:
    """A client without httpx's default Accept, Accept-Encoding or User-Agent: aiohttp must
    not add its own on the direct path either (the path's second session skips nothing)."""
    heads: list[list[bytes]] = []

    async def record(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            line, headers, _ = request
            heads.append([line.encode(), *sorted(f"{k}: {v}".encode() for k, v in headers.items())])
            await conn.respond(b"{}")

    body = {"model": "m"}
    async with serving(record) as server:
        chosen = transport()
        async with httpx.AsyncClient(transport=chosen) as c:
            for name in ("accept", "accept-encoding", "user-agent"):
                del c.headers[name]
            await c.post(server.url(), headers={"X-Key": "k"}, json=body, timeout=TIMEOUT)
            call = HttpCall(server.url(), {"X-Key": "k"}, body)
            assert await _post_direct(c, chosen, call, TIMEOUT) is not None
    assert len(heads) == 2 and heads[1] == heads[0]
    names = {h.split(b":")[0] for h in heads[0][1:]}
    assert not names & {b"accept", b"accept-encoding", b"user-agent"}


@pytest.mark.anyio
async def test_the_direct_path_and_the_client_each_reuse_their_own_pool() -> None:
    """The direct path's pool (``_h1.py``) is not aiohttp's: one connection each."""
    async with serving(keep_alive(body=b"{}")) as server, direct() as (c, chosen):
        for _ in range(3):
            assert (await post(c, chosen, server.url())).content == b"{}"
            response = await c.post(server.url(), json={"a": 1}, timeout=TIMEOUT)
            assert response.content == b"{}"
    assert server.connections == 2


@pytest.mark.anyio
async def test_closing_the_client_closes_the_direct_paths_connections() -> None:
    closed = asyncio.Event()

    async def handle(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond(b"{}")
        closed.set()

    async with serving(handle) as server:
        async with direct() as (c, chosen):
            await post(c, chosen, server.url())
        with anyio.fail_after(5):
            await closed.wait()
        with pytest.raises(RuntimeError, match="closed"):
            await post(c, chosen, server.url())


@pytest.mark.anyio
async def test_a_compressed_answer_is_decoded() -> None:
    async def zipped(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond(gzip.compress(b'{"ok": true}'), content_encoding="gzip")

    async with serving(zipped) as server, direct() as (c, chosen):
        response = await post(c, chosen, server.url())
    assert json.loads(response.content) == {"ok": True}
    assert response.status_code == 200 and response.reason_phrase == "X"
    assert response.headers["Content-Encoding"] == "gzip"  # names in any case


@pytest.mark.anyio
async def test_connections_are_reused() -> None:
    async with serving(keep_alive(body=b"{}")) as server, direct() as (c, chosen):
        for _ in range(3):
            assert (await post(c, chosen, server.url())).content == b"{}"
        answers = await asyncio.gather(*(post(c, chosen, server.url()) for _ in range(4)))
    assert [a.content for a in answers] == [b"{}"] * 4
    assert server.connections == 4


@pytest.mark.anyio
async def test_an_error_status_comes_back_with_its_headers_and_body() -> None:
    async def limited(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond(b'{"error": {"message": "slow down"}}', status=429, retry_after="7")

    async with serving(limited) as server, direct() as (c, chosen):
        response = await post(c, chosen, server.url())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert json.loads(response.content)["error"]["message"] == "slow down"


@pytest.mark.anyio
async def test_a_body_over_one_mib_goes_through_the_client() -> None:
    async with direct() as (c, chosen):
        call = HttpCall("http://127.0.0.1:9/", {}, {"text": "x" * 1_100_000})
        assert await _post_direct(c, chosen, call, TIMEOUT) is None


@pytest.mark.anyio
async def test_read_timeout() -> None:
    async def stall(conn: Conn) -> None:
        await conn.request()
        await asyncio.sleep(10)

    async with serving(stall) as server, direct() as (c, chosen):
        with pytest.raises(httpx.ReadTimeout):
            await post(c, chosen, server.url(), timeout=httpx.Timeout(0.1))


@pytest.mark.anyio
async def test_connect_refused_is_a_connect_error() -> None:
    async with serving(keep_alive()) as server:
        port = server.port
    async with direct() as (c, chosen):
        with pytest.raises(httpx.ConnectError):
            await post(c, chosen, f"http://127.0.0.1:{port}/")


@pytest.mark.anyio
async def test_server_closing_mid_body_is_a_protocol_error_and_not_reused() -> None:
    async def short(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await conn.writer.drain()

    async with serving(short) as server, direct() as (c, chosen):
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                await post(c, chosen, server.url())
    assert server.connections == 2


@pytest.mark.anyio
async def test_garbage_and_hanging_up_are_protocol_errors() -> None:
    async def garbage(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"this is not HTTP\r\n\r\n")
        await conn.writer.drain()

    async def hang_up(conn: Conn) -> None:
        await conn.request()

    for handler in (garbage, hang_up):
        async with serving(handler) as server, direct() as (c, chosen):
            with pytest.raises(httpx.RemoteProtocolError):
                await post(c, chosen, server.url())


@pytest.mark.anyio
async def test_a_cancelled_request_discards_its_connection() -> None:
    stalled: list[Conn] = []

    async def slow_first(conn: Conn) -> None:
        while await conn.request() is not None:
            if not stalled:
                stalled.append(conn)
                await asyncio.sleep(10)
            await conn.respond(b"{}")

    server: Server
    async with serving(slow_first) as server, direct() as (c, chosen):
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.1):
                await post(c, chosen, server.url())
        assert (await post(c, chosen, server.url())).content == b"{}"
    assert server.connections == 2
