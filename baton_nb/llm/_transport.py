"""One HTTP attempt: send, check the status, parse JSON or server-sent events.

Failures come out as :class:`RetryableFailure` (try again) or
:class:`ProviderError` (give up now). Neither carries the request, its
headers or an httpx exception, so no key can leak through them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx

from baton_nb._errors import ProviderError

from ._client import direct_transport, get_client, on_asyncio, shared_now
from ._config import Endpoint
from ._deadline import start_deadline
from ._redact import redact
from ._retry import is_retryable_status, parse_retry_after, retry_hint_from_body
from ._wire import Adapter, HttpCall, Parsed, RetryableFailure

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport, Answer

__all__ = ["ANSWERED", "OUT", "REFUSED", "SENDING", "Attempts", "error_message", "send"]

# A budgeted call's marker (runtime/_spend.py): OUT appended as an attempt starts, from
# when its request may have reached the provider (a call cancelled before was not sent);
# set to REFUSED when the provider answers it with an error status (not billed), to
# ANSWERED when it answers (billed: the call's cost counts it once the call returns).
# What stays OUT (a timeout, a dropped connection, a cut stream) is counted at its worst.
OUT, REFUSED, ANSWERED = "out", "refused", "answered"


class Attempts:
    """A budgeted call's attempts: a mark each (``OUT``, ``REFUSED``, ``ANSWERED``), and
    what covers the next one before it goes while an earlier one stays ``OUT`` (each may
    be billed at the call's worst case, so the budget must hold one more: ``cover`` is
    awaited with the number of attempts to hold; it raises to stop the call unsent)."""

    __slots__ = ("cover", "marks")

    def __init__(self, cover: Callable[[int], Awaitable[None]]) -> None:
        self.marks: list[str] = []
        self.cover = cover


SENDING: ContextVar[Attempts | None] = ContextVar("baton_nb_sending", default=None)

_MAX_MESSAGE = 500
_httpx_logger = logging.getLogger("httpx")


def _safe_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _message_from_json(data: Any) -> str | None:
    if isinstance(data, list) and data:
        return _message_from_json(data[0])
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("status") or error.get("type")
        return str(message) if message else json.dumps(error)[:_MAX_MESSAGE]
    if isinstance(error, str) and error:
        return error
    if data.get("message"):
        return str(data["message"])
    return None


def error_message(content: bytes, status: int | None = None) -> str:
    """The provider's own words from an error body (JSON ``error.message`` and kin)."""
    text = content.decode("utf-8", "replace").strip()
    try:
        found = _message_from_json(json.loads(text)) if text else None
    except ValueError:
        found = None
    message = found or text[:_MAX_MESSAGE]
    if not message and status is not None:
        message = httpx.codes.get_reason_phrase(status) or "error"
    return redact(message or "error")


def _hint(endpoint: Endpoint, status: int) -> str:
    if status in (401, 403):
        where = endpoint.key_env or "the provider's api_key in configure(providers=...)"
        return f" (check the API key: {where})"
    if status == 404:
        return f" (check the model name and base_url {_safe_origin(endpoint.base_url)})"
    return ""


def _check_status(
    endpoint: Endpoint, status: int, headers: Mapping[str, str], content: bytes
) -> None:
    if 200 <= status < 300:
        return
    message = error_message(content, status)
    if is_retryable_status(status, headers):
        wait = parse_retry_after(headers)
        raise RetryableFailure(
            status, message, wait if wait is not None else retry_hint_from_body(content)
        )
    raise ProviderError(endpoint.name, status, message + _hint(endpoint, status), retryable=False)


_DECODER = json.JSONDecoder()  # json.loads' own decoder (no options)
# Its scanner, and the whitespace its ``decode`` allows after the value (``_json_body_text``)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]  # set by its __init__
_TRAILING = re.compile(r"[ \t\n\r]*\Z")


def _json_body_text(endpoint: Endpoint, content: bytes) -> tuple[dict[str, Any], str | None]:
    """The body's JSON object, and the text it was decoded from when that text is the
    whole JSON value (an object's UTF-8 starting with '{'), else None."""
    text = None
    try:
        # json.loads, without guessing the encoding of an object's UTF-8 ('{' then not 0)
        if content[:1] == b"{" and content[1:2] != b"\x00":
            # _DECODER.decode(text) without its two frames and its leading whitespace match
            # (none: the text starts with '{'): the same value, or a ValueError
            text = content.decode("utf-8", "surrogatepass")
            try:
                data, end = _SCAN(text, 0)
            except StopIteration as exc:  # what raw_decode turns into a JSONDecodeError
                raise ValueError("Expecting value") from exc
            if end != len(text) and _TRAILING.match(text, end) is None:
                raise ValueError("Extra data")
        else:
            data = json.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        snippet = redact(content[:200].decode("utf-8", "replace"))
        raise ProviderError(endpoint.name, None, f"response is not a JSON object: {snippet!r}")
    return data, text


def _parse_body(endpoint: Endpoint, adapter: Adapter, content: bytes) -> Parsed:
    """``adapter.parse`` of the body's JSON; the body's text kept on the result when its
    ``raw`` is the object decoded (``Parsed.keep_raw_text``: checked and stored as
    received, not encoded again)."""
    data, text = _json_body_text(endpoint, content)
    parsed = adapter.parse(data)
    if text is not None and parsed.raw is data:
        parsed.keep_raw_text(text)
    return parsed


_DONE: dict[str, Any] = {}  # stands for a `data: [DONE]` line


def _decode(data: list[str]) -> dict[str, Any] | None:
    payload = "\n".join(data)
    if not data:
        return None
    if payload == "[DONE]":
        return _DONE
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """Server-sent events as ``(event name, JSON data)``; ``[DONE]`` is the ``_DONE``
    object, comments are skipped."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            continue
        decoded = _decode(data)
        if decoded is not None:
            yield event, decoded
        event, data = None, []
    decoded = _decode(data)
    if decoded is not None:
        yield event, decoded


async def _send_stream(
    endpoint: Endpoint, adapter: Adapter, call: HttpCall, http_timeout: httpx.Timeout
) -> Parsed:
    client = await get_client()
    async with client.stream(
        "POST", call.url, headers=call.headers, json=call.body, timeout=http_timeout
    ) as response:
        if not 200 <= response.status_code < 300:
            content = await response.aread()
            _check_status(endpoint, response.status_code, response.headers, content)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            return _parse_body(endpoint, adapter, await response.aread())
        state = adapter.stream_state()
        async for event, data in _events(response):
            if data is _DONE:
                state.done()
                continue
            if event == "error" or data.get("type") == "error" or "error" in data:
                message = _message_from_json(data) or "error event in stream"
                raise RetryableFailure(None, f"stream failed: {redact(message)}")
            state.feed(event, data)
        return state.result()  # a stream cut short raises RetryableFailure here


async def _post_direct(
    client: httpx.AsyncClient,
    transport: AiohttpTransport,
    call: HttpCall,
    http_timeout: httpx.Timeout,
) -> Answer | None:
    """``client.post(...)`` for a client on the aiohttp transport with no cookies: the
    same request (the client's headers, then the call's; the JSON body as httpx encodes
    it; the timeouts) posted on the transport's own HTTP/1.1 pool (``_h1.py``) without
    the client's and httpx's per-request layers, which cost half the CPU of a call, nor
    aiohttp's (docs/performance.md). A
    cookie the provider sets goes to the client's jar, so later calls take
    ``client.post`` and send it back. ``None``: send it through the client."""
    response = await transport.post_json(
        client.headers, call.url, call.headers, call.body, http_timeout
    )
    if response is None:
        return None
    if response.first("set-cookie") is not None:
        client.cookies.extract_cookies(response.as_httpx(httpx.Request("POST", call.url)))
    if _httpx_logger.isEnabledFor(logging.INFO):  # what httpx's client logs
        _httpx_logger.info(
            'HTTP Request: %s %s "%s %d %s"',
            "POST",
            httpx.URL(call.url),
            "HTTP/1.1",
            response.status_code,
            response.reason_phrase,
        )
    return response


def _has_cookies(client: httpx.AsyncClient) -> bool:
    """Whether the client may hold cookies: its jar's own dict of them is not empty
    (``bool(client.cookies)`` counts them through three frames and a generator, ~0.3 us a
    call). A jar emptied by ``clear`` may keep empty dicts per domain: then True, and the
    call goes through the client, as with cookies (never the other way round)."""
    cookies = getattr(client.cookies.jar, "_cookies", None)
    return bool(cookies) if isinstance(cookies, dict) else bool(client.cookies)


async def _send_plain(
    endpoint: Endpoint, adapter: Adapter, call: HttpCall, http_timeout: httpx.Timeout
) -> Parsed:
    shared = shared_now()  # the loop's client, without a coroutine once it is made
    if shared is not None:
        client, transport = shared.client, shared.direct
    else:
        client = await get_client()
        transport = direct_transport(client)
    answer = None
    if transport is not None and not _has_cookies(client):
        answer = await _post_direct(client, transport, call, http_timeout)
    if answer is not None:
        status, content = answer.status_code, answer.content
        if 200 <= status < 300:  # _check_status reads no header of a success
            return _parse_body(endpoint, adapter, content)
        headers = answer.headers
    else:
        response = await client.post(
            call.url, headers=call.headers, json=call.body, timeout=http_timeout
        )
        status, headers, content = response.status_code, response.headers, response.content
    _check_status(endpoint, status, headers, content)
    return _parse_body(endpoint, adapter, content)


@lru_cache(maxsize=64)
def _timeouts(seconds: float, deadline: bool) -> httpx.Timeout:
    """A call's httpx timeouts (one object per value: the transports only read it).

    Streaming: ``seconds`` for each wait (between chunks too), connecting at most 10 s.
    Under a whole-call deadline of ``seconds`` (``deadline``) the other waits need no
    timer of their own: each starts after the deadline and is as long, so the deadline
    always ends first; only connecting keeps its shorter bound. That spares aiohttp's
    pool-wait timer and its read timer (rescheduled at every chunk read) on every call."""
    if deadline:
        return httpx.Timeout(None, connect=min(seconds, 10.0))
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


async def send(
    endpoint: Endpoint, adapter: Adapter, call: HttpCall, *, stream: bool, seconds: float
) -> Parsed:
    """One attempt. Non-streaming calls get ``seconds`` as a whole-request deadline;
    streaming calls get it for connecting and between chunks."""
    attempts = SENDING.get()
    if attempts is None:
        return await _attempt(endpoint, adapter, call, stream=stream, seconds=seconds)
    sending = attempts.marks
    if OUT in sending:  # a retry after an attempt that may be billed: covered first
        await attempts.cover(sending.count(OUT) + 1)
    at = len(sending)
    sending.append(OUT)  # may reach the provider from here: billed, at an unknown cost
    try:
        parsed = await _attempt(endpoint, adapter, call, stream=stream, seconds=seconds)
    except (RetryableFailure, ProviderError) as exc:
        if exc.status is not None:  # the provider answered with an error status: unbilled
            sending[at] = REFUSED
        raise
    sending[at] = ANSWERED  # billed: the call's cost counts it (once the call returns)
    return parsed


async def _attempt(
    endpoint: Endpoint, adapter: Adapter, call: HttpCall, *, stream: bool, seconds: float
) -> Parsed:
    limits = _timeouts(seconds, not stream)
    failure: RetryableFailure | None = None
    fatal: ProviderError | None = None
    try:
        if stream:
            return await _send_stream(endpoint, adapter, call, limits)
        if on_asyncio():  # asyncio.timeout's deadline without a timer per call (_deadline)
            deadline = start_deadline(seconds)
            try:
                parsed = await _send_plain(endpoint, adapter, call, limits)
            except BaseException as exc:
                deadline.end(exc)  # the CancelledError of its expiry: TimeoutError
                raise
            deadline.end(None)
            return parsed
        with anyio.fail_after(seconds):
            return await _send_plain(endpoint, adapter, call, limits)
    except (httpx.TimeoutException, TimeoutError):
        failure = RetryableFailure(None, f"request timed out after {seconds:g} s")
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        failure = RetryableFailure(
            None,
            f"{type(exc).__name__} talking to {_safe_origin(call.url)}: {redact(str(exc))} "
            f"(is the server up? check base_url)",
        )
    except httpx.HTTPError as exc:
        fatal = ProviderError(endpoint.name, None, f"{type(exc).__name__}: {redact(str(exc))}")
    if fatal is not None:
        raise fatal
    assert failure is not None
    raise failure
