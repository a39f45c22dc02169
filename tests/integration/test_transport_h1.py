"""The direct path's own HTTP/1.1 pool (``baton_nb/llm/_h1.py``), against servers on 127.0.0.1.

``_post_direct`` posts a plain call's JSON on it. These tests hold it to what the aiohttp
path did for the same exchange: connections kept and reused up to the limit, dropped when
the server closes them or says ``Connection: close``, answers framed every way HTTP/1.1
frames them, TLS verified with the client's context, httpx's timeouts, cancellation, and
the httpx exception types ``send`` retries on.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import struct

import anyio
import httpx
import pytest
import trustme

from baton_nb.llm._wire import HttpCall
from tests.integration.test_transport import Conn, _server_tls, keep_alive, serving, transport
from tests.integration.test_transport_direct import direct, post


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_no_connection_is_opened_while_calls_stay_within_the_limit() -> None:
    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await asyncio.sleep(0.05)
            await conn.respond(b"{}")

    async with serving(slow) as server, direct() as (c, chosen):
        for _ in range(4):  # waves of 8 calls in flight, the limit 100
            answers = await asyncio.gather(*(post(c, chosen, server.url()) for _ in range(8)))
            assert [a.content for a in answers] == [b"{}"] * 8
    assert server.connections == 8


@pytest.mark.anyio
async def test_calls_beyond_the_limit_wait_for_a_connection() -> None:
    in_flight = peak = 0

    async def slow(conn: Conn) -> None:
        nonlocal in_flight, peak
        while await conn.request() is not None:
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            await conn.respond(b"{}")

    async with serving(slow) as server:
        chosen = transport(max_connections=2)
        async with httpx.AsyncClient(transport=chosen) as c:
            answers = await asyncio.gather(*(post(c, chosen, server.url()) for _ in range(7)))
    assert [a.content for a in answers] == [b"{}"] * 7
    assert (peak, server.connections) == (2, 2)


@pytest.mark.anyio
async def test_waiting_past_the_pool_timeout_is_a_timeout_and_frees_nothing_twice() -> None:
    release = asyncio.Event()

    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await release.wait()
            await conn.respond(b"{}")

    async with serving(slow) as server:
        chosen = transport(max_connections=1)
        async with httpx.AsyncClient(transport=chosen) as c:
            first = asyncio.create_task(post(c, chosen, server.url()))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await post(c, chosen, server.url(), timeout=httpx.Timeout(5.0, pool=0.05))
            waiting = asyncio.create_task(post(c, chosen, server.url()))
            await asyncio.sleep(0.05)
            waiting.cancel()  # cancelled while waiting for the connection
            release.set()
            assert (await first).content == b"{}"
            for _ in range(2):
                assert (await post(c, chosen, server.url())).content == b"{}"
    assert server.connections == 1


@pytest.mark.anyio
async def test_an_idle_connection_the_server_closed_is_dropped() -> None:
    async def one_answer(conn: Conn) -> None:
        await conn.request()
        await conn.respond(b"{}")  # keep-alive said, then closed while idle

    async with serving(one_answer) as server, direct() as (c, chosen):
        for _ in range(3):
            assert (await post(c, chosen, server.url())).content == b"{}"
            await asyncio.sleep(0.05)  # the close reaches the client
    assert server.connections == 3


@pytest.mark.anyio
async def test_connection_close_is_honoured() -> None:
    lines: list[str] = []

    async def closing(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            lines.append(request[0])
            await conn.respond(b"{}", connection="close")

    async with serving(closing) as server, direct() as (c, chosen):
        for _ in range(3):
            assert (await post(c, chosen, server.url())).content == b"{}"
    assert server.connections == 3 and len(lines) == 3


@pytest.mark.anyio
async def test_connections_idle_past_the_expiry_are_closed() -> None:
    async with serving(keep_alive(body=b"{}")) as server:
        chosen = transport(keepalive_expiry=0.05)
        async with httpx.AsyncClient(transport=chosen) as c:
            await post(c, chosen, server.url())
            await asyncio.sleep(0.3)
            await post(c, chosen, server.url())
    assert server.connections == 2


@pytest.mark.anyio
async def test_chunked_gzipped_and_read_to_close_answers() -> None:
    body = json.dumps({"ok": True}).encode()
    zipped = gzip.compress(body)

    async def chunked(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n"
            )
            for i in range(0, len(zipped), 7):
                piece = zipped[i : i + 7]
                conn.writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await conn.writer.drain()
            conn.writer.write(b"0\r\n\r\n")
            await conn.writer.drain()

    async def to_close(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + body)
        await conn.writer.drain()

    async with serving(chunked) as server, direct() as (c, chosen):
        for _ in range(2):
            answer = await post(c, chosen, server.url())
            assert answer.content == body and answer.headers["Content-Encoding"] == "gzip"
    assert server.connections == 1
    async with serving(to_close) as server, direct() as (c, chosen):
        for _ in range(2):
            assert (await post(c, chosen, server.url())).content == body
    assert server.connections == 2


@pytest.mark.anyio
async def test_an_early_answer_before_the_body_is_read_is_returned() -> None:
    async def refuse(conn: Conn) -> None:
        while True:
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await conn.respond(b"too big!", status=413)  # before reading the body
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await conn.reader.readexactly(length)

    async with serving(refuse) as server, direct() as (c, chosen):
        for _ in range(2):
            answer = await post(c, chosen, server.url(), {"text": "x" * 900_000})
            assert (answer.status_code, answer.content) == (413, b"too big!")


@pytest.mark.anyio
async def test_reads_are_timed_between_reads_not_in_total() -> None:
    async def trickle(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n")
            for _ in range(20):
                await asyncio.sleep(0.05)
                conn.writer.write(b"x")
                await conn.writer.drain()

    async def stall_mid_body(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nxx")
        await conn.writer.drain()
        await asyncio.sleep(10)

    async with serving(trickle) as server, direct() as (c, chosen):
        answer = await post(c, chosen, server.url(), timeout=httpx.Timeout(0.5))
        assert answer.content == b"x" * 20  # 1 s in all, never 0.5 s without a read
    async with serving(stall_mid_body) as server, direct() as (c, chosen):
        with pytest.raises(httpx.ReadTimeout):
            await post(c, chosen, server.url(), timeout=httpx.Timeout(0.1))


@pytest.mark.anyio
async def test_a_cancelled_call_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def stall(conn: Conn) -> None:
        await conn.request()
        assert await conn.reader.read(1) == b""  # the client closed it
        closed.set()

    async with serving(stall) as server, direct() as (c, chosen):
        task = asyncio.create_task(post(c, chosen, server.url()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with anyio.fail_after(5):
            await closed.wait()


@pytest.mark.anyio
async def test_bytes_beyond_the_answer_never_become_the_next_answer() -> None:
    async def overlong(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}STALE")
            await conn.writer.drain()

    async with serving(overlong) as server, direct() as (c, chosen):
        for _ in range(2):
            assert (await post(c, chosen, server.url())).content == b"{}"
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_reset_is_a_network_error() -> None:
    async def reset(conn: Conn) -> None:
        await conn.request()
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()  # RST, not FIN

    async with serving(reset) as server, direct() as (c, chosen):
        with pytest.raises((httpx.NetworkError, httpx.RemoteProtocolError)) as caught:
            await post(c, chosen, server.url())
    assert not isinstance(caught.value, httpx.TimeoutException)


@pytest.mark.anyio
async def test_response_heads_up_to_the_limits() -> None:
    async def heads(conn: Conn) -> None:
        sizes = iter((40_000, 200_000))
        while await conn.request() is not None:
            big = b"x-big: " + b"a" * next(sizes)
            head = b"HTTP/1.1 200 OK\r\n" + big + b"\r\ncontent-length: 2\r\n\r\n{}"
            for i in range(0, len(head), 4096):
                conn.writer.write(head[i : i + 4096])
                await conn.writer.drain()

    async with serving(heads) as server, direct() as (c, chosen):
        answer = await post(c, chosen, server.url())
        assert (answer.content, len(answer.headers["x-big"])) == (b"{}", 40_000)
        with pytest.raises(httpx.RemoteProtocolError, match="100 KiB"):
            await post(c, chosen, server.url())


@pytest.mark.anyio
async def test_a_url_or_header_the_path_does_not_write_goes_through_the_client() -> None:
    async with direct() as (c, chosen):
        for url, headers in (
            ("http://user:pw@127.0.0.1:9/", {}),
            ("http://127.0.0.1:9/", {"X-Note": "caf\u00e9"}),
            ("http://127.0.0.1:9/", {"X-Note": "a\r\nX-Injected: 1"}),
        ):
            call = HttpCall(url, headers, {"a": 1})
            assert (
                await chosen.post_json(c.headers, url, call.headers, call.body, httpx.Timeout(1))
                is None
            )


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.mark.anyio
async def test_https_verified_with_the_clients_context(certificate_authority: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    certificate_authority.configure_trust(trusted)
    async with serving(keep_alive(body=b"{}"), _server_tls(certificate_authority)) as server:
        chosen = transport(trusted)
        async with httpx.AsyncClient(transport=chosen) as c:
            for _ in range(3):
                assert (await post(c, chosen, server.url(scheme="https"))).content == b"{}"
        assert server.connections == 1
        async with direct() as (c, chosen):  # the system's CAs only
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(c, chosen, server.url(scheme="https"))


@pytest.mark.anyio
async def test_lenient_line_ends_and_folded_headers_as_the_former_path_read_them() -> None:
    """aiohttp's parser read a bare LF ending a line and an obsolete folded header; the
    direct path reads them too (the first review of _h1.py)."""

    async def sloppy(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(b"HTTP/1.1 200 OK\ncontent-length: 2\nx-folded: a\r\n b\r\n\r\n{}")
            await conn.writer.drain()

    async with serving(sloppy) as server, direct() as (c, chosen):
        for _ in range(2):
            assert (await post(c, chosen, server.url())).content == b"{}"
    assert server.connections == 1


@pytest.mark.anyio
async def test_a_chunked_answers_trailer_is_not_one_of_its_headers() -> None:
    async def trailer(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                b"trailer: content-encoding\r\n\r\n"
                b"2\r\n{}\r\n0\r\ncontent-encoding: gzip\r\nset-cookie: a=b\r\n\r\n"
            )
            await conn.writer.drain()

    async with serving(trailer) as server, direct() as (c, chosen):
        answer = await post(c, chosen, server.url())
    assert answer.content == b"{}"
    assert "content-encoding" not in answer.headers and "set-cookie" not in answer.headers


@pytest.mark.anyio
async def test_switching_protocols_ends_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def upgrade(conn: Conn) -> None:
        while await conn.request() is not None:
            conn.writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
            )
            await conn.writer.drain()

    async with serving(upgrade) as server, direct() as (c, chosen):
        for _ in range(2):
            assert (await post(c, chosen, server.url())).status_code == 101
    assert server.connections == 2
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]


def test_an_internationalised_host_is_reached_by_its_idna_2008_name() -> None:
    from baton_nb.llm._h1 import target

    found = target("https://fa\u00df.de/v1/chat", {"content-type": "application/json"})
    assert found is not None
    assert found.origin == ("https", "xn--fa-hia.de", 443)  # not fass.de (IDNA 2003)
    assert b"host: xn--fa-hia.de" in found.head
