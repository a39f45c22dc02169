"""Anthropic Message Batches.

``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}`` (``params``
is a Messages request body), ``GET /v1/messages/batches/{id}`` for its
``processing_status`` and ``request_counts`` (counted once the whole batch ended), the
results from its ``results_url`` (JSONL: ``succeeded`` with the message, ``errored`` with
an error response, ``canceled``, ``expired``), ``POST .../{id}/cancel``. Limits: 100,000
requests or 256 MB per batch. A Message Batch carries no metadata: one whose id was never
stored is found in ``GET /v1/messages/batches`` by its creation time and request count,
and confirmed by its results' custom ids once it ended. Shapes: the API reference and
anthropic-sdk-python ``types/messages/message_batch*.py``; recorded examples in
tests/data/providers/batch/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from baton_nb._states import BatchState

from ._anthropic import AnthropicAdapter
from ._batch import (
    BatchLine,
    BatchPolling,
    ItemOutcome,
    ItemResult,
    RemoteStatus,
    encoded_size,
    http_json,
    http_text,
    jsonl,
    submit_once,
)
from ._config import Endpoint
from ._retry import is_retryable_status
from ._types import LLMRequest
from ._wire import Parsed

__all__ = ["AnthropicBatches"]

# An errored result names the error's type, not an HTTP status: the status it stands for.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatches:
    max_requests: int | None = 100_000
    polling: BatchPolling | None = None
    max_bytes = 256_000_000

    def __init__(self) -> None:
        self.adapter = AnthropicAdapter()

    def line(
        self, endpoint: Endpoint, model: str, request: LLMRequest, custom_id: str
    ) -> BatchLine:
        call = self.adapter.build(endpoint, model, replace(request, stream=False))
        item = {"custom_id": custom_id, "params": call.body}
        return BatchLine(custom_id, item, encoded_size(item) + 1)

    async def submit(
        self, endpoint: Endpoint, model: str, key: str, lines: Sequence[BatchLine]
    ) -> str:
        body = {"requests": [line.body for line in lines]}
        since = datetime.now(timezone.utc) - timedelta(minutes=10)
        ids = frozenset(line.custom_id for line in lines)

        async def create() -> str:
            created = await http_json(
                endpoint,
                "POST",
                _batches(endpoint),
                _headers(endpoint),
                json_body=body,
                retry=False,
            )
            return str(created["id"])

        async def find() -> str | None:
            return await self.find(endpoint, key, since, ids)

        return await submit_once(endpoint, create, find)

    async def find(
        self, endpoint: Endpoint, key: str, since: datetime, custom_ids: frozenset[str]
    ) -> str | None:
        """A batch created at or after ``since`` with as many requests as ``custom_ids``;
        one that ended must have answered exactly those ids."""
        after: str | None = None
        while True:
            url = f"{_batches(endpoint)}?limit=100" + (f"&after_id={after}" if after else "")
            page = await http_json(endpoint, "GET", url, _headers(endpoint))
            data = page.get("data") or []
            for batch in data:
                created = _time(batch.get("created_at"))
                if created is None or created < since:
                    continue
                counts = batch.get("request_counts") or {}
                if sum(int(v or 0) for v in counts.values()) != len(custom_ids):
                    continue
                if await self._holds(endpoint, batch, custom_ids):
                    return str(batch["id"])
            if not page.get("has_more") or not data:
                return None
            after = str(page.get("last_id") or data[-1]["id"])

    async def _holds(
        self, endpoint: Endpoint, batch: dict[str, Any], custom_ids: frozenset[str]
    ) -> bool:
        url = batch.get("results_url")
        if batch.get("processing_status") != "ended" or not url:
            return True  # running: its count and creation time are all there is to go by
        text = await http_text(endpoint, str(url), _headers(endpoint))
        return {str(r.get("custom_id")) for r in jsonl(endpoint.name, text)} == custom_ids

    async def status(self, endpoint: Endpoint, remote_id: str) -> RemoteStatus:
        url = f"{_batches(endpoint)}/{remote_id}"
        return parse_status(await http_json(endpoint, "GET", url, _headers(endpoint)))

    async def results(
        self, endpoint: Endpoint, remote_id: str, status: RemoteStatus, order: Sequence[str]
    ) -> list[ItemResult]:
        url = status.raw.get("results_url") or f"{_batches(endpoint)}/{remote_id}/results"
        text = await http_text(endpoint, str(url), _headers(endpoint))
        return [parse_result(line) for line in jsonl(endpoint.name, text)]

    async def cancel(self, endpoint: Endpoint, remote_id: str) -> None:
        url = f"{_batches(endpoint)}/{remote_id}/cancel"
        await http_json(endpoint, "POST", url, _headers(endpoint))

    def parse(self, body: dict[str, Any]) -> Parsed:
        return self.adapter.parse(body)


def _batches(endpoint: Endpoint) -> str:
    base = endpoint.base_url.rstrip("/")
    return base + ("/messages/batches" if base.endswith("/v1") else "/v1/messages/batches")


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {"anthropic-version": endpoint.anthropic_version, **endpoint.headers}
    if endpoint.api_key:
        headers["x-api-key"] = endpoint.api_key
    return headers


def _time(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def parse_status(body: dict[str, Any]) -> RemoteStatus:
    """A Message Batch: our state, its requests answered and failed (counted once ended)."""
    raw = str(body.get("processing_status") or "")
    counts = body.get("request_counts") or {}
    if raw == "ended":  # expired: its 24 hours passed before every request was answered
        state = BatchState.CANCELLED if body.get("cancel_initiated_at") else BatchState.ENDED
        if state is BatchState.ENDED and int(counts.get("expired") or 0):
            state = BatchState.EXPIRED
    elif raw == "canceling":
        state = BatchState.CANCELLING
    else:
        state = BatchState.RUNNING
    failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
    return RemoteStatus(state, succeeded=int(counts.get("succeeded") or 0), failed=failed, raw=body)


def parse_result(line: dict[str, Any]) -> ItemResult:
    """One line of a batch's results."""
    cid = str(line.get("custom_id") or "")
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return ItemResult(cid, ItemOutcome.SUCCEEDED, body=result["message"], status=200)
    if kind == "errored":
        error = result.get("error") or {}
        nested = error.get("error")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else error
        error_type = str(inner.get("type") or "error")
        status = _ERROR_STATUS.get(error_type, 500)
        message = f"{error_type}: {inner.get('message') or 'error'}"
        return ItemResult(
            cid,
            ItemOutcome.ERRORED,
            status=status,
            message=message,
            retryable=is_retryable_status(status),
        )
    return ItemResult(cid, ItemOutcome.MISSING, message=str(kind or "no result"))
