"""Provider batch APIs (DESIGN §12): one interface over OpenAI Batch, Anthropic Message
Batches, Gemini batch mode and the offline mock.

Each provider module (``_batch_openai``, ``_batch_anthropic``, ``_batch_gemini``,
``_batch_mock``) speaks its wire format; the runtime (``runtime/_batching``) decides what
goes in a batch and keeps the durable record. What is common lives here: the shapes the
runtime sees (``BatchLine``, ``RemoteStatus``, ``ItemResult``), the HTTP calls every wire
module makes (with retries for what may be repeated, never for a create that may have
landed), the polling backoff and how an answer becomes a priced ``Completion``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

import anyio
import httpx

from baton_nb._errors import ProviderError
from baton_nb._states import BatchState

from ._client import get_client
from ._config import (
    BatchPolling,
    Endpoint,
    batch_polling,
    default_timeout,
    resolve_endpoint,
    retry_settings,
    set_batch_polling,
)
from ._redact import redact
from ._retry import is_retryable_status, parse_retry_after, with_retries
from ._transport import error_message
from ._types import Completion, LLMRequest, split_model
from ._wire import Parsed, RetryableFailure

__all__ = [
    "BatchApi",
    "BatchLine",
    "BatchPolling",
    "ItemOutcome",
    "ItemResult",
    "RemoteStatus",
    "batch_completion",
    "batch_discount",
    "batch_polling",
    "custom_id",
    "encoded_size",
    "http_json",
    "http_text",
    "jsonl",
    "set_batch_polling",
    "submit_once",
]


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch as its provider takes it: ``body`` is the request body of the
    provider's own endpoint (chat completions, messages, generateContent), ``size`` the
    bytes it adds to the batch (what the per-batch byte limits count)."""

    custom_id: str
    body: dict[str, Any]
    size: int
    path: str = ""  # OpenAI: the endpoint every line of the batch goes to (/v1/chat/completions)


@dataclass(frozen=True)
class RemoteStatus:
    """A batch as its provider reports it: its state (ours: ``SUBMITTED``, ``RUNNING``,
    ``CANCELLING``, ``ENDED``, ``EXPIRED``, ``CANCELLED``, ``FAILED``), requests answered
    and failed so far (Anthropic counts only once the whole batch ended)."""

    state: BatchState
    succeeded: int = 0
    failed: int = 0
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ended(self) -> bool:
        """Its results can be read (all of them, or what was answered before it stopped)."""
        return self.state in (BatchState.ENDED, BatchState.EXPIRED, BatchState.CANCELLED)


class ItemOutcome(str, Enum):
    SUCCEEDED = "succeeded"  # ``body`` is the provider's answer
    ERRORED = "errored"  # the provider refused this request: ``status``, ``message``
    MISSING = "missing"  # not answered: expired, cancelled, or not in the results


@dataclass(frozen=True)
class ItemResult:
    """What a batch's results say of one request. ``retryable``: a refusal worth asking
    again (429, 5xx), as a direct call would have retried it."""

    custom_id: str
    outcome: ItemOutcome
    body: dict[str, Any] | None = None
    status: int | None = None
    message: str | None = None
    retryable: bool = False


class BatchApi(Protocol):
    """One provider's batch API. ``max_requests`` / ``max_bytes``: its documented limits
    per batch (``None``: no limit on the count)."""

    max_requests: int | None
    max_bytes: int
    polling: BatchPolling | None  # its own polling (the mock's is quick), else the configured

    def line(
        self, endpoint: Endpoint, model: str, request: LLMRequest, custom_id: str
    ) -> BatchLine:
        """The request as a line of a batch; what the provider cannot do raises
        ``UnsupportedFeature`` here, before anything is sent."""

    async def submit(
        self, endpoint: Endpoint, model: str, key: str, lines: Sequence[BatchLine]
    ) -> str:
        """Create the batch (``key`` goes with it: metadata, display name); its id."""

    async def find(
        self, endpoint: Endpoint, key: str, since: datetime, custom_ids: frozenset[str]
    ) -> str | None:
        """The id of a batch created with ``key`` at or after ``since``, if the provider
        has one (how a batch whose id was never stored is found again)."""

    async def status(self, endpoint: Endpoint, remote_id: str) -> RemoteStatus: ...

    async def results(
        self, endpoint: Endpoint, remote_id: str, status: RemoteStatus, order: Sequence[str]
    ) -> list[ItemResult]:
        """Every request's outcome once ``status.ended``; ``order``: the custom ids as
        submitted (Gemini answers inline requests in that order)."""

    async def cancel(self, endpoint: Endpoint, remote_id: str) -> None: ...

    def parse(self, body: dict[str, Any]) -> Parsed:
        """An answer's body, as the provider's direct calls are read."""


def custom_id(step: str, call_index: int, request_hash: str) -> str:
    """A call's id in every batch that asks it: unique in its run, the same each time the
    call is asked, and within every provider's rules (Anthropic: ``[a-zA-Z0-9_-]{1,64}``)."""
    import hashlib

    digest = hashlib.sha256(f"{step}\x00{call_index}\x00{request_hash}".encode()).hexdigest()
    return "bn-" + digest[:40]


# ── HTTP ──────────────────────────────────────────────────────────────────────


async def _send(
    endpoint: Endpoint,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    json_body: Any = None,
    files: Any = None,
    data: Any = None,
) -> httpx.Response:
    client = await get_client()
    seconds = endpoint.timeout or default_timeout()
    try:
        with anyio.fail_after(seconds):
            response = await client.request(
                method,
                url,
                headers=dict(headers),
                json=json_body,
                files=files,
                data=data,
                timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
            )
    except (httpx.TimeoutException, TimeoutError):
        raise RetryableFailure(
            None, f"{method} {_path(url)} timed out after {seconds:g} s"
        ) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise RetryableFailure(
            None, f"{type(exc).__name__} on {method} {_path(url)}: {redact(str(exc))}"
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    message = f"{method} {_path(url)}: {error_message(response.content, status)}"
    if is_retryable_status(status, response.headers):
        raise RetryableFailure(status, message, parse_retry_after(response.headers))
    raise ProviderError(endpoint.name, status, message, retryable=False)


def _path(url: str) -> str:
    return httpx.URL(url).path


async def http_json(
    endpoint: Endpoint,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    json_body: Any = None,
    files: Any = None,
    data: Any = None,
    retry: bool = True,
) -> dict[str, Any]:
    """A JSON answer; 429 / 5xx / timeouts retried with backoff when ``retry`` (reads, and
    writes that may be repeated). Without, a failure that may have reached the provider is
    raised as ``RetryableFailure`` for the caller to resolve (``submit_once``)."""

    async def attempt() -> dict[str, Any]:
        response = await _send(
            endpoint, method, url, headers, json_body=json_body, files=files, data=data
        )
        return _json_object(endpoint, response)

    if not retry:
        return await attempt()
    return await with_retries(endpoint.name, retry_settings(), attempt)


async def http_text(endpoint: Endpoint, url: str, headers: Mapping[str, str]) -> str:
    """A text answer of a GET (results files: JSONL), with retries."""

    async def attempt() -> str:
        return (await _send(endpoint, "GET", url, headers)).text

    return await with_retries(endpoint.name, retry_settings(), attempt)


def _json_object(endpoint: Endpoint, response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        snippet = redact(response.content[:200].decode("utf-8", "replace"))
        raise ProviderError(endpoint.name, None, f"response is not a JSON object: {snippet!r}")
    return data


async def submit_once(
    endpoint: Endpoint,
    create: Callable[[], Awaitable[str]],
    find: Callable[[], Awaitable[str | None]],
) -> str:
    """Create a batch without ever creating it twice.

    A create that failed in a way that may have reached the provider (a timeout, a dropped
    connection, a 5xx) is not simply sent again: the provider's list is searched for the
    batch first (``find``, by the key it was sent with), and only a batch not found is
    created again. A 429 never reached it: retried after its Retry-After.
    """
    settings = retry_settings()
    last: RetryableFailure | None = None
    for attempt in range(settings.max_retries + 1):
        if last is not None:
            if last.status != 429:
                found = await find()
                if found is not None:
                    return found
            await anyio.sleep(
                last.retry_after
                if last.retry_after is not None
                else min(settings.backoff_cap, settings.backoff_base * 2.0**attempt)
            )
        try:
            return await create()
        except RetryableFailure as failure:
            last = failure
    assert last is not None
    found = await find()
    if found is not None:
        return found
    raise ProviderError(
        endpoint.name,
        last.status,
        f"creating the batch failed: {redact(last.message)}",
        retryable=True,
    )


# ── answers ───────────────────────────────────────────────────────────────────


async def batch_completion(
    api: BatchApi, request: LLMRequest, body: dict[str, Any], latency_ms: float
) -> tuple[Completion, Decimal | None]:
    """A batch answer as the ``Completion`` a direct call would have given (text, tool
    calls, usage), priced at batch rates; and what it would have cost at standard rates
    (``None`` when unknown), for what the batch saved."""
    from ._complete import completion_of, pricing_model, usage_of
    from ._cost import compute_cost

    provider, model = split_model(request.model)
    endpoint = resolve_endpoint(provider)
    parsed = api.parse(body)
    usage, estimated = await usage_of(parsed, request)
    completion = await completion_of(
        endpoint, model, request, parsed, latency_ms, usage, estimated, batch=True
    )
    standard, _ = await compute_cost(
        pricing_model(endpoint, model, request), usage, called_as=request.model
    )
    return completion, standard


def jsonl(provider: str, text: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL text (blank lines skipped; a broken line is an error)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ProviderError(
                provider, None, f"batch results line {number} is not JSON: {exc}"
            ) from None
        if isinstance(value, dict):
            out.append(value)
    return out


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what a batch file or body holds)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


async def batch_discount(request: LLMRequest) -> Decimal | None:
    """The fraction of the input price a batch takes off ``request``'s model (0.5 for
    half price), from the price tables; ``None`` when they know no batch rates for it."""
    from baton_nb import pricing

    from ._complete import pricing_model

    provider, model = split_model(request.model)
    name = pricing_model(resolve_endpoint(provider), model, request)
    found = await anyio.to_thread.run_sync(pricing.lookup, name)
    if found is None or found.batch is None:
        return None
    standard, batch = found.rates.input, found.batch.input
    if not standard or batch is None:
        return None
    return 1 - batch / standard
