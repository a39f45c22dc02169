"""A fake LLM provider: a real HTTP/1.1 server on 127.0.0.1 speaking four wire formats.

OpenAI ``POST …/chat/completions``, the OpenAI Responses API ``POST …/responses``,
Anthropic ``POST …/v1/messages`` and Gemini
``POST …/models/{model}:generateContent`` / ``:streamGenerateContent?alt=sse``,
streaming (SSE over chunked encoding) and not, with keep-alive; and the three batch APIs
(OpenAI Files + Batch, Anthropic Message Batches, Gemini batch mode: ``batch_server``,
``server.batches``). It runs an
asyncio server in a background thread with its own event loop, so hundreds
of concurrent connections with a per-request latency are cheap.

Every request is recorded (method, path, query, headers, JSON body, arrival time on
``server.clock``, which a test may point at a virtual clock); tests
script replies (status, headers such as Retry-After, body, delay, usage,
text, dropped connections, a recorded SSE stream served byte for byte) in a FIFO
queue, and read ``max_in_flight`` and ``connections`` (connections opened that carried
a provider request: what a client's connection reuse is judged by).

Standalone (for subprocess tests and manual use)::

    python -m tests.fakes.provider_server --port 0 --latency 0.2

prints its base URL on the first line of stdout. Control endpoints let
another process inspect and script it: ``GET /_fake/requests``,
``GET /_fake/stats``, ``POST /_fake/script`` (a JSON list of replies),
``POST /_fake/reset``; :class:`RemoteFakeProvider` wraps them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.batch_server import FakeBatches

__all__ = [
    "FakeProviderServer",
    "FakeUsage",
    "RecordedRequest",
    "RemoteFakeProvider",
    "Reply",
]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass
class FakeUsage:
    """Usage to report, in normalised terms; rendered in each provider's own fields.

    ``input`` counts all prompt tokens (cached and cache-write included),
    ``output`` all output tokens (reasoning included). ``cost`` (USD) is
    reported OpenRouter-style in the OpenAI shape when not ``None``.
    """

    input: int = 12
    cached: int = 0
    cache_write: int = 0
    output: int = 7
    reasoning: int = 0
    cost: float | None = None


@dataclass
class Reply:
    """One scripted reply. Unset fields fall back to the server's defaults.

    ``body`` (dict/list/str) is sent verbatim as JSON with ``status``;
    otherwise a provider-shaped success (status < 400) or error (``message``)
    is generated. ``drop`` closes the connection without answering.
    ``events`` (streaming only) is sent as raw SSE ``(event, data)`` pairs;
    ``sse`` is a recorded event stream sent verbatim (``text/event-stream``), whatever
    the request asked, e.g. cut short to play a stream that stops mid-answer.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float | None = None
    text: str | None = None
    usage: FakeUsage | None = None
    omit_usage: bool | None = None
    message: str | None = None
    drop: bool = False
    events: list[tuple[str | None, Any]] | None = None
    sse: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = asdict(self.usage) if self.usage else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("usage"):
            kwargs["usage"] = FakeUsage(**kwargs["usage"])
        if kwargs.get("events"):
            kwargs["events"] = [tuple(e) for e in kwargs["events"]]
        return cls(**kwargs)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    shape: str
    model: str | None
    stream: bool
    received_at: float = 0.0  # the server's ``clock()`` when the request had arrived


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received_at: float = 0.0


# ---------------------------------------------------------------- wire shapes


def _shape(path: str) -> tuple[str, str | None, bool]:
    """(shape, model from the path, streaming by path) for a request path."""
    if path.endswith("/chat/completions"):
        return "openai", None, False
    if path.endswith("/messages"):
        return "anthropic", None, False
    if path.endswith("/responses"):
        return "responses", None, False
    if "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
        model, _, method = unquote(path.rsplit("/models/", 1)[1]).partition(":")
        if method in ("generateContent", "streamGenerateContent"):
            return "gemini", model, method == "streamGenerateContent"
    return "other", None, False


def _openai_usage(u: FakeUsage) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0},
    }
    if u.cost is not None:
        usage["cost"] = u.cost
    return usage


def _anthropic_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.input - u.cached - u.cache_write,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "output_tokens": u.output,
    }


def _gemini_usage(u: FakeUsage) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": u.input,
        "candidatesTokenCount": u.output - u.reasoning,
        "totalTokenCount": u.input + u.output,
    }
    if u.cached:
        usage["cachedContentTokenCount"] = u.cached
    if u.reasoning:
        usage["thoughtsTokenCount"] = u.reasoning
    return usage


def _responses_usage(u: FakeUsage) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    }
    return usage


def _responses_body(n: int, model: str, text: str, usage: FakeUsage | None) -> dict[str, Any]:
    """A completed Response (the shape of the API reference's examples)."""
    return {
        "id": f"resp_fake_{n}",
        "object": "response",
        "created_at": 1741290958,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [
            {
                "id": f"msg_fake_{n}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": None if usage is None else _responses_usage(usage),
    }


def _responses_events(
    n: int, model: str, text: str, usage: FakeUsage | None
) -> list[tuple[str | None, Any]]:
    done = _responses_body(n, model, text, usage)
    created = {**done, "status": "in_progress", "output": [], "usage": None}
    item = done["output"][0]
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": created}),
        (
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
        ),
    ]
    for piece in _pieces(text):
        delta = {
            "type": "response.output_text.delta",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
        }
        events.append(("response.output_text.delta", delta))
    events.append(
        (
            "response.output_item.done",
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        )
    )
    events.append(("response.completed", {"type": "response.completed", "response": done}))
    return events


def _pieces(text: str) -> list[str]:
    """Split a text into ~3 stream deltas that join back to it."""
    if len(text) < 3:
        return [text]
    step = max(1, len(text) // 3)
    return [text[i : i + step] for i in range(0, len(text), step)]


def _openai_body(n: int, model: str, text: str, usage: FakeUsage | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = _openai_usage(usage)
    return body


def _openai_events(
    n: int, model: str, text: str, usage: FakeUsage | None, include_usage: bool
) -> list[tuple[str | None, Any]]:
    base = {"id": f"chatcmpl-fake-{n}", "object": "chat.completion.chunk", "model": model}
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    ]
    for piece in _pieces(text):
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}))
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage is not None and include_usage:
        events.append((None, {**base, "choices": [], "usage": _openai_usage(usage)}))
    events.append((None, "[DONE]"))
    return events


def _anthropic_body(n: int, model: str, text: str, usage: FakeUsage | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"msg_fake_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    if usage is not None:
        body["usage"] = _anthropic_usage(usage)
    return body


def _anthropic_events(
    n: int, model: str, text: str, usage: FakeUsage | None
) -> list[tuple[str | None, Any]]:
    start = _anthropic_body(n, model, "", usage)
    start["content"] = []
    start["stop_reason"] = None
    if usage is not None:
        start["usage"] = {**_anthropic_usage(usage), "output_tokens": 1}
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for piece in _pieces(text):
        delta = {"type": "text_delta", "text": piece}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta_event: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if usage is not None:
        delta_event["usage"] = {"output_tokens": usage.output}
    events.append(("message_delta", delta_event))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _gemini_chunk(text: str, model: str, finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "modelVersion": model}


def _gemini_body(model: str, text: str, usage: FakeUsage | None) -> dict[str, Any]:
    body = _gemini_chunk(text, model, True)
    if usage is not None:
        body["usageMetadata"] = _gemini_usage(usage)
    return body


def _gemini_events(model: str, text: str, usage: FakeUsage | None) -> list[tuple[str | None, Any]]:
    pieces = _pieces(text)
    events: list[tuple[str | None, Any]] = []
    for i, piece in enumerate(pieces):
        chunk = _gemini_chunk(piece, model, i == len(pieces) - 1)
        if usage is not None:
            # earlier chunks carry partial counts; only the last one is final
            final = i == len(pieces) - 1
            chunk["usageMetadata"] = (
                _gemini_usage(usage) if final else {"promptTokenCount": usage.input}
            )
        events.append((None, chunk))
    return events


def _error_body(shape: str, status: int, message: str) -> dict[str, Any]:
    if shape == "anthropic":
        kind = "rate_limit_error" if status == 429 else "invalid_request_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    if shape == "gemini":
        return {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


# ---------------------------------------------------------------- the server


class FakeProviderServer:
    """The fake provider; ``start()`` it (or use it as a context manager)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.chunk_delay = 0.0
        self.text = "Hello from the fake provider."
        self.usage = FakeUsage()
        self.omit_usage = False
        self.require_auth = False
        self.record = True
        # Arrival times of requests (RecordedRequest.received_at): monotonic seconds, or a
        # test's virtual clock (a callable, read from the server's thread).
        self.clock: Callable[[], float] = time.monotonic
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._generation = 0  # requests from before a reset() stop counting as in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = FakeBatches(self)

    # -- control

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        return self._count

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one (FIFO), then defaults."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget requests and scripted replies; restore every default."""
        with self._lock:
            self._replies.clear()
            self._requests.clear()
            self._count = 0
            self._generation += 1
            self.in_flight = 0
            self.max_in_flight = 0
            self.connections = 0
        self.latency = 0.0
        self.chunk_delay = 0.0
        self.text = "Hello from the fake provider."
        self.usage = FakeUsage()
        self.omit_usage = False
        self.require_auth = False
        self.record = True
        self.clock = time.monotonic
        self.batches.reset()

    def stats(self) -> dict[str, int]:
        return {
            "requests": self._count,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections": self.connections,
        }

    # -- lifecycle

    def start(self) -> FakeProviderServer:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="fake-provider", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def stop_in_loop(self) -> None:
        """Stop serving; call from the server's own loop (e.g. a signal handler)."""
        if self._stopping is not None:
            self._stopping.set()

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.serve(ready, errors))
        finally:
            loop.close()

    async def serve(
        self, ready: threading.Event | None = None, errors: list[BaseException] | None = None
    ) -> None:
        """Serve until ``stop()`` (usable directly in a loop of your own)."""
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            server = await asyncio.start_server(
                self._connection, self.host, self.port, backlog=2048, reuse_address=True
            )
        except OSError as exc:
            if errors is not None:
                errors.append(exc)
            if ready is not None:
                ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        counted = False  # on its first provider request (control calls do not count)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                request.received_at = self.clock()
                if not counted and not request.path.startswith("/_fake/"):
                    counted = True
                    with self._lock:
                        self.connections += 1
                if not await self._dispatch(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs handler tasks that end cancelled)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _dispatch(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.startswith("/_fake/"):
            await _send_json(writer, *self._control(request))
            return True
        with self._lock:
            self._count += 1
            n = self._count
            reply = self._replies.popleft() if self._replies else Reply()
            generation = self._generation
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(n, request, reply, writer)
        finally:
            with self._lock:
                if generation == self._generation:
                    self.in_flight -= 1

    def _control(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        if request.path == "/_fake/requests":
            return 200, [asdict(r) for r in self.requests], {}
        if request.path == "/_fake/stats":
            return 200, self.stats(), {}
        if request.path == "/_fake/reset":
            self.reset()
            return 200, {"ok": True}, {}
        if request.path == "/_fake/script":
            items = json.loads(request.body or b"[]")
            self.script(*(Reply.from_dict(item) for item in items))
            return 200, {"ok": True, "queued": len(items)}, {}
        if request.path == "/_fake/batches":
            return 200, self.batches.stats(), {}
        if request.path == "/_fake/config":
            config = json.loads(request.body or b"{}")
            self.batches.configure(config.get("batches") or {})
            for key in ("latency", "chunk_delay", "text", "omit_usage", "require_auth", "record"):
                if key in config:
                    setattr(self, key, config[key])
            if "usage" in config:
                self.usage = FakeUsage(**config["usage"])
            return 200, {"ok": True}, {}
        return 404, {"error": {"message": f"unknown control path {request.path}"}}, {}

    def _record(self, request: _Request, shape: str, model: str | None, stream: bool) -> Any:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body.decode("utf-8", "replace")
        if self.record:
            with self._lock:
                self._requests.append(
                    RecordedRequest(
                        request.method,
                        request.path,
                        request.query,
                        request.headers,
                        body,
                        shape,
                        model,
                        stream,
                        request.received_at,
                    )
                )
        return body

    def _authorised(self, shape: str, headers: dict[str, str]) -> bool:
        if not self.require_auth:
            return True
        header = {
            "openai": "authorization",
            "responses": "authorization",
            "anthropic": "x-api-key",
            "gemini": "x-goog-api-key",
        }
        return bool(headers.get(header.get(shape, "authorization")))

    async def _answer(
        self, n: int, request: _Request, reply: Reply, writer: asyncio.StreamWriter
    ) -> bool:
        route = self.batches.route(
            request.method, request.path, request.query, request.headers, request.body
        )
        if route is not None:
            self._record(request, "batch", None, False)
            if reply.delay or self.latency:
                await asyncio.sleep(self.latency if reply.delay is None else reply.delay)
            if route.drop or reply.drop:
                return False
            if reply.status >= 400 and reply.body is None:  # a scripted failure of the API
                error = _error_body("openai", reply.status, reply.message or "fake error")
                await _send_json(writer, reply.status, error, reply.headers)
                return True
            await _send_json(writer, route.status, route.body, {**route.headers, **reply.headers})
            return True
        shape, path_model, path_stream = _shape(request.path)
        body = self._record(request, shape, path_model, path_stream)
        body = body if isinstance(body, dict) else {}
        stream = path_stream if shape == "gemini" else bool(body.get("stream"))
        model = path_model or str(body.get("model") or "fake-model")
        delay = self.latency if reply.delay is None else reply.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if reply.drop:
            return False
        if reply.body is not None:
            await _send_json(writer, reply.status, reply.body, reply.headers)
            return True
        if reply.sse is not None:
            await self._send_raw_sse(writer, reply, reply.sse)
            return True
        if shape == "other":
            await _send_json(writer, 404, _error_body("openai", 404, "no such route"), {})
            return True
        if not self._authorised(shape, request.headers):
            error = _error_body(shape, 401, "missing API key")
            await _send_json(writer, 401, error, reply.headers)
            return True
        if reply.status >= 400:
            message = reply.message or f"fake error {reply.status}"
            error = _error_body(shape, reply.status, message)
            await _send_json(writer, reply.status, error, reply.headers)
            return True
        return await self._success(n, shape, model, body, stream, reply, writer)

    async def _success(
        self,
        n: int,
        shape: str,
        model: str,
        body: dict[str, Any],
        stream: bool,
        reply: Reply,
        writer: asyncio.StreamWriter,
    ) -> bool:
        text = self.text if reply.text is None else reply.text
        omit = self.omit_usage if reply.omit_usage is None else reply.omit_usage
        usage = None if omit else (reply.usage or self.usage)
        if not stream:
            if shape == "openai":
                payload = _openai_body(n, model, text, usage)
            elif shape == "responses":
                payload = _responses_body(n, model, text, usage)
            elif shape == "anthropic":
                payload = _anthropic_body(n, model, text, usage)
            else:
                payload = _gemini_body(model, text, usage)
            await _send_json(writer, reply.status, payload, reply.headers)
            return True
        if reply.events is not None:
            events = reply.events
        elif shape == "openai":
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _openai_events(n, model, text, usage, include)
        elif shape == "anthropic":
            events = _anthropic_events(n, model, text, usage)
        elif shape == "responses":
            events = _responses_events(n, model, text, usage)
        else:
            events = _gemini_events(model, text, usage)
        await self._send_events(writer, reply, events)
        return True

    async def _send_events(
        self, writer: asyncio.StreamWriter, reply: Reply, events: list[tuple[str | None, Any]]
    ) -> None:
        head = _head(
            reply.status,
            {"content-type": "text/event-stream", "transfer-encoding": "chunked", **reply.headers},
        )
        writer.write(head)
        for event, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
            raw = frame.encode("utf-8")
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            await writer.drain()
            if self.chunk_delay > 0:
                await asyncio.sleep(self.chunk_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _send_raw_sse(self, writer: asyncio.StreamWriter, reply: Reply, text: str) -> None:
        """A recorded stream, byte for byte, one chunk per event; ends the body cleanly."""
        head = _head(
            reply.status,
            {"content-type": "text/event-stream", "transfer-encoding": "chunked", **reply.headers},
        )
        writer.write(head)
        pieces = re.split(r"(\r?\n\r?\n)", text)  # frames with their own separators
        for i in range(0, len(pieces), 2):
            raw = (pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "")).encode("utf-8")
            if not raw:
                continue
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(
    writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str]
) -> None:
    data = payload if isinstance(payload, bytes) else None
    if data is None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
    merged = {"content-type": "application/json", "content-length": str(len(data)), **headers}
    writer.write(_head(status, merged) + data)
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for header in header_lines:
        if header:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    parts = urlsplit(target)
    return _Request(method, parts.path, dict(parse_qsl(parts.query)), headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readline()


# ---------------------------------------------------------------- remote control


class RemoteFakeProvider:
    """Drive a fake server running in another process through its control endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _call(self, path: str, payload: Any = None) -> Any:
        import httpx

        url = f"{self.base_url}/_fake/{path}"
        response = httpx.post(url, json=payload) if payload is not None else httpx.get(url)
        response.raise_for_status()
        return response.json()

    @property
    def requests(self) -> list[RecordedRequest]:
        return [RecordedRequest(**r) for r in self._call("requests")]

    def stats(self) -> dict[str, int]:
        return dict(self._call("stats"))

    def script(self, *replies: Reply) -> None:
        self._call("script", [r.to_dict() for r in replies])

    def configure(self, **options: Any) -> None:
        """Set ``latency``, ``chunk_delay``, ``text``, ``omit_usage``, ``require_auth``,
        ``record`` (keep each request: default true), ``usage``, ``batches`` (a dict of
        ``FakeBatches.OPTIONS``) on the remote server."""
        if isinstance(options.get("usage"), FakeUsage):
            options["usage"] = asdict(options["usage"])
        self._call("config", options)

    def reset(self) -> None:
        self._call("reset", {})

    def batch_stats(self) -> dict[str, Any]:
        """What the batch APIs were asked (``FakeBatches.stats``)."""
        return dict(self._call("batches"))


@contextlib.contextmanager
def running(latency: float = 0.0, port: int = 0) -> Iterator[FakeProviderServer]:
    """A started server for the duration of a ``with`` block."""
    server = FakeProviderServer(port=port, latency=latency).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic/Gemini provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--text", default=None, help="answer text of every request")
    args = parser.parse_args(argv)
    server = FakeProviderServer(args.host, args.port, args.latency)
    if args.text is not None:
        server.text = args.text

    async def run() -> None:
        ready = threading.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, server.stop_in_loop)
        task = asyncio.create_task(server.serve(ready))
        while not ready.is_set():
            await asyncio.sleep(0.005)
        print(server.base_url, flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
