"""The fake provider in its own process, and the floors the LLM benchmarks compare against.

Both LLM benchmarks (``llm_fanout.py``, ``llm_runtime.py``) time fan-outs against
``tests/fakes/provider_server.py``. Run inside the benchmark's process, the server's event
loop (a thread) competes with the client for the GIL, so every figure, floor included,
measures the two together. Here it runs as ``python -m tests.fakes.provider_server`` in a
subprocess: an asyncio server (no thread per connection, listen backlog 2048) that sleeps
its latency per request without blocking others, so 50 keep-alive connections are served
at once. :func:`raw_floor` proves it on every run: raw asyncio streams, one keep-alive
connection per slot and almost no client CPU, finish within a few percent of the ideal.

Floors printed beside baton_nb:

- ``raw_floor``: asyncio streams writing HTTP/1.1 by hand (the server check: what the
  setup allows, with no HTTP library at all).
- ``HttpxFloor``: what a user writes with asyncio + httpx: one ``httpx.AsyncClient``
  with ``Limits(max_connections=in_flight, max_keepalive_connections=in_flight)`` (every
  connection kept open, as baton_nb's client keeps them), an
  ``asyncio.Semaphore(in_flight)``, ``client.post(json=...)``, ``response.json()``;
  warmed (connections open) like baton_nb's shared client.
- ``HttpxPerSlotFloor``: stock httpx at its cheapest: one ``AsyncClient`` (one
  connection) per slot, so httpcore's pool never holds more than one connection (its
  bookkeeping grows with the connections it holds). What httpx itself costs per call.
- ``HttpxAiohttpFloor``: httpx-aiohttp alone, as a user writes it: one
  ``httpx_aiohttp.HttpxAiohttpClient`` with ``Limits(max_connections=in_flight)``, a
  semaphore; what baton_nb's default transport is built on, without baton_nb.
- ``SharedClientFloor``: the same calls through baton_nb's shared client (its shipped
  transport), without ``complete``.

Each timed run can be :func:`sampled`: wall time, the process's CPU time
(``time.process_time()``: the client alone, the server being another process) and the
new connections the server accepted during the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import httpx_aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.provider_server import RemoteFakeProvider  # noqa: E402

__all__ = [
    "KEY",
    "BareAiohttpFloor",
    "DirectPathFloor",
    "FakeServerProcess",
    "HttpxAiohttpFloor",
    "HttpxFloor",
    "HttpxPerSlotFloor",
    "Sample",
    "SharedClientFloor",
    "ideal_seconds",
    "interleaved",
    "median",
    "raw_floor",
    "rss_mb",
    "sampled",
]

T = TypeVar("T")

KEY = "sk-bench-0123456789abcdef"


class FakeServerProcess:
    """``python -m tests.fakes.provider_server`` in a subprocess; ``base_url`` once started."""

    def __init__(self, latency: float) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.provider_server", "--latency", str(latency)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"fake provider did not start (printed {line!r})")
        self.base_url = line
        self.control = RemoteFakeProvider(line)
        self.control.configure(record=False)  # 5,000 recorded bodies are not what we measure

    def configure(self, **options: Any) -> None:
        self.control.configure(**options)

    def stats(self) -> dict[str, int]:
        return self.control.stats()

    def reset_stats(self, latency: float) -> None:
        """Zero the request counters (``reset`` restores defaults: set them again)."""
        self.control.reset()
        self.control.configure(latency=latency, record=False)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ideal_seconds(calls: int, in_flight: int, latency: float) -> float:
    """Waves of ``in_flight`` calls, each taking exactly the server's latency."""
    return -(-calls // in_flight) * latency


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def rss_mb() -> float:
    """Peak RSS of this process (``ru_maxrss`` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _body(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Summarise document {i} in one sentence."}],
        "temperature": 0,
        "max_completion_tokens": 64,  # what baton_nb sends for openai/ models
    }


async def raw_floor(base_url: str, calls: int, in_flight: int) -> float:
    """``calls`` POSTs over ``in_flight`` keep-alive connections, HTTP/1.1 written by hand.

    Connections are opened before the clock starts; each slot sends its next request as
    soon as its previous response is read, as a semaphore-bounded fan-out would.
    """
    host, _, port = base_url.removeprefix("http://").partition(":")
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(in_flight)]
    todo = iter(range(calls))

    async def slot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in todo:
            body = json.dumps(_body(i)).encode()
            writer.write(
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
                f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            json.loads(await reader.readexactly(length))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(slot(r, w) for r, w in connections))
        return time.perf_counter() - start
    finally:
        for _, writer in connections:
            writer.close()


class HttpxFloor:
    """asyncio + httpx as a user would write it; one client kept open across runs.

    ``deadline`` (seconds) stops a run that takes longer (httpcore's pool bookkeeping
    grows with the connections it holds: at 200 connections and more a run can take
    minutes); ``done`` then says how many calls finished.
    """

    def __init__(self, base_url: str, in_flight: int, deadline: float | None = None) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.in_flight = in_flight
        self.deadline = deadline
        self.done = 0
        self.client = self._client(in_flight)

    def _client(self, in_flight: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        return httpx.AsyncClient(limits=limits)

    async def run(self, calls: int) -> float:
        """Wall seconds; ``inf`` past the deadline or when a call failed."""
        semaphore = asyncio.Semaphore(self.in_flight)
        headers = {"authorization": f"Bearer {KEY}"}
        self.done = 0

        async def one(i: int) -> None:
            async with semaphore:
                response = await self.client.post(self.url, json=_body(i), headers=headers)
                response.raise_for_status()
                response.json()
                self.done += 1

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), self.deadline)
        except (asyncio.TimeoutError, httpx.HTTPError):
            return float("inf")  # past the deadline, or a call failed (e.g. a timeout)
        finally:  # no call of a stopped run goes on into the next row's
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return time.perf_counter() - start

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxAiohttpFloor(HttpxFloor):
    """httpx-aiohttp alone: ``HttpxAiohttpClient``, connections kept 30 s as baton_nb's."""

    def _client(self, in_flight: int) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=in_flight, max_keepalive_connections=in_flight, keepalive_expiry=30
        )
        return httpx_aiohttp.HttpxAiohttpClient(limits=limits)


class BareAiohttpFloor:
    """aiohttp's ``ClientSession.post`` alone, one session, a slot per call in flight: what
    the shipped transport costs with nothing of httpx or baton_nb around it (the bound on
    what a call through ``complete`` can cost, docs/performance.md "The transport's own
    cost")."""

    def __init__(self, base_url: str, in_flight: int) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.in_flight = in_flight
        self.session: aiohttp.ClientSession | None = None

    async def run(self, calls: int) -> float:
        if self.session is None:  # made on the running loop, kept across runs as a client is
            connector = aiohttp.TCPConnector(limit=self.in_flight, limit_per_host=self.in_flight)
            self.session = aiohttp.ClientSession(connector=connector)
        session = self.session
        todo = iter(range(calls))
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

        async def slot() -> None:
            for i in todo:
                body = json.dumps(_body(i)).encode()
                async with session.post(self.url, data=body, headers=headers) as response:
                    response.raise_for_status()
                    json.loads(await response.read())

        start = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(self.in_flight)))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


class DirectPathFloor:
    """baton_nb's direct path alone (``AiohttpTransport.post_json``: the request head
    written once, its own keep-alive pool, httptools' parser), a slot per call in flight:
    what a plain call through ``complete`` costs on the wire, without ``complete``."""

    def __init__(self, base_url: str, in_flight: int) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.in_flight = in_flight
        self.transport: Any = None

    async def run(self, calls: int) -> float:
        from baton_nb.llm._aiohttp import AiohttpTransport

        if self.transport is None:  # made on the running loop, kept across runs
            self.transport = AiohttpTransport(
                httpx.create_ssl_context(), max_connections=self.in_flight, keepalive_expiry=30
            )
        post = self.transport.post_json
        client_headers = httpx.Headers({"user-agent": "baton-nb"})
        headers = {"authorization": f"Bearer {KEY}"}
        timeout = httpx.Timeout(None, connect=10.0)
        todo = iter(range(calls))

        async def slot() -> None:
            for i in todo:
                answer = await post(client_headers, self.url, headers, _body(i), timeout)
                assert answer.status_code == 200, answer.status_code
                json.loads(answer.content)

        start = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(self.in_flight)))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()


class HttpxPerSlotFloor:
    """One ``httpx.AsyncClient`` per slot; each slot makes its calls one after another."""

    def __init__(self, base_url: str, in_flight: int) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        verify = httpx.create_ssl_context()  # one for all: loading CA certificates is slow
        self.clients = [httpx.AsyncClient(verify=verify) for _ in range(in_flight)]

    async def run(self, calls: int) -> float:
        todo = iter(range(calls))
        headers = {"authorization": f"Bearer {KEY}"}

        async def slot(client: httpx.AsyncClient) -> None:
            for i in todo:
                response = await client.post(self.url, json=_body(i), headers=headers)
                response.raise_for_status()
                response.json()

        start = time.perf_counter()
        await asyncio.gather(*(slot(c) for c in self.clients))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class SharedClientFloor(HttpxFloor):
    """baton_nb's shared client (its shipped transport) alone: the floor's calls, no
    ``complete`` around them."""

    def _client(self, in_flight: int) -> httpx.AsyncClient:
        return httpx.AsyncClient()  # a placeholder: each run takes the shared one

    async def run(self, calls: int) -> float:
        from baton_nb.llm._client import get_client

        if self.client is not (shared := await get_client()):
            await self.client.aclose()
            self.client = shared
        return await super().run(calls)

    async def aclose(self) -> None:
        pass  # the shared client is baton_nb's (closed by baton_nb.llm.aclose)


@dataclass(frozen=True)
class Sample:
    """One timed run: wall seconds, client CPU seconds, new connections at the server."""

    calls: int
    wall: float
    cpu: float
    connections: int
    collect: float = 0.0  # CPU of a full collection after the run (when one was made)

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu / self.calls * 1000


def sampled(
    server: FakeServerProcess,
    calls: int,
    timer: Callable[[], Awaitable[float]],
    warm: Callable[[], Awaitable[object]] | None = None,
) -> Callable[[], Awaitable[Sample]]:
    """``timer`` measured as a :class:`Sample` (the server's counters read around it).

    ``warm`` runs first, untimed: one wave of calls, so the client starts with its
    connections open whatever the rows before it did (an interleaved round can outlast
    a keep-alive expiry; a connection opened during the run is then the client's doing).
    """

    async def run() -> Sample:
        if warm is not None:
            await warm()
        opened = server.stats()["connections"]
        cpu = time.process_time()
        wall = await timer()
        cpu = time.process_time() - cpu
        return Sample(calls, wall, cpu, server.stats()["connections"] - opened)

    return run


async def interleaved(
    repeat: int, timers: dict[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """Each timer ``repeat`` times, in turns, so drifts of a shared machine hit all alike."""
    times: dict[str, list[T]] = {name: [] for name in timers}
    for _ in range(repeat):
        for name, timer in timers.items():
            times[name].append(await timer())
    return times
