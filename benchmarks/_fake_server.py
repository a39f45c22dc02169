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
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.provider_server import RemoteFakeProvider  # noqa: E402

__all__ = [
    "KEY",
    "FakeServerProcess",
    "HttpxFloor",
    "HttpxPerSlotFloor",
    "ideal_seconds",
    "interleaved",
    "median",
    "raw_floor",
    "rss_mb",
]

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
    """asyncio + httpx as a user would write it; one client kept open across runs."""

    def __init__(self, base_url: str, in_flight: int) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.in_flight = in_flight
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        self.client = httpx.AsyncClient(limits=limits)

    async def run(self, calls: int) -> float:
        semaphore = asyncio.Semaphore(self.in_flight)
        headers = {"authorization": f"Bearer {KEY}"}

        async def one(i: int) -> None:
            async with semaphore:
                response = await self.client.post(self.url, json=_body(i), headers=headers)
                response.raise_for_status()
                response.json()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxPerSlotFloor:
    """One ``httpx.AsyncClient`` per slot; each slot makes its calls one after another."""

    def __init__(self, base_url: str, in_flight: int) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.clients = [httpx.AsyncClient() for _ in range(in_flight)]

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


async def interleaved(
    repeat: int, timers: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """Each timer ``repeat`` times, in turns, so drifts of a shared machine hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeat):
        for name, timer in timers.items():
            times[name].append(await timer())
    return times
