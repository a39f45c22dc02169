"""Gemini batch mode (the Gemini API's Batch API).

``POST /v1beta/models/{model}:batchGenerateContent`` with ``{"batch": {"displayName",
"inputConfig": {"requests": {"requests": [{"request", "metadata": {"key"}}]}}}}`` (inline
requests, each a GenerateContentRequest) answers a long-running operation named
``batches/{id}``; ``GET /v1beta/batches/{id}`` gives its ``metadata.state``
(``BATCH_STATE_PENDING`` … ``SUCCEEDED`` / ``FAILED`` / ``CANCELLED`` / ``EXPIRED``) and
``batchStats``, and once done the answers in ``response.inlinedResponses`` (a
GenerateContentResponse or an error each, with the request's metadata); ``POST
/v1beta/batches/{id}:cancel``. The display name is our key: ``GET /v1beta/batches`` finds a
batch whose id was never stored. Limit: inline requests total under 20 MB per batch (the
guide's figure), so larger maps are split into several batches. Shapes: the API reference
(ai.google.dev/api/batch-mode) and googleapis/python-genai ``batches.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from baton_nb._states import BatchState

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
from ._gemini import GeminiAdapter
from ._retry import is_retryable_status
from ._types import LLMRequest
from ._wire import Parsed

__all__ = ["GeminiBatches"]

_STATES = {
    "BATCH_STATE_PENDING": BatchState.SUBMITTED,
    "BATCH_STATE_RUNNING": BatchState.RUNNING,
    "BATCH_STATE_SUCCEEDED": BatchState.ENDED,
    "BATCH_STATE_FAILED": BatchState.FAILED,
    "BATCH_STATE_CANCELLED": BatchState.CANCELLED,
    "BATCH_STATE_EXPIRED": BatchState.EXPIRED,
}


# google.rpc.Code values worth asking again, as the HTTP statuses they stand for.
_RPC_STATUS = {4: 504, 8: 429, 13: 500, 14: 503}


class GeminiBatches:
    max_requests: int | None = None
    polling: BatchPolling | None = None
    max_bytes = 20_000_000

    def __init__(self) -> None:
        self.adapter = GeminiAdapter()

    def line(
        self, endpoint: Endpoint, model: str, request: LLMRequest, custom_id: str
    ) -> BatchLine:
        call = self.adapter.build(endpoint, model, replace(request, stream=False))
        item = {"request": call.body, "metadata": {"key": custom_id}}
        return BatchLine(custom_id, item, encoded_size(item) + 1)

    async def submit(
        self, endpoint: Endpoint, model: str, key: str, lines: Sequence[BatchLine]
    ) -> str:
        name = quote(model.removeprefix("models/"), safe=".-_")
        url = f"{_root(endpoint)}/models/{name}:batchGenerateContent"
        body = {
            "batch": {
                "displayName": key,
                "inputConfig": {"requests": {"requests": [line.body for line in lines]}},
            }
        }
        since = datetime.now(timezone.utc) - timedelta(minutes=10)

        async def create() -> str:
            operation = await http_json(
                endpoint, "POST", url, _headers(endpoint), json_body=body, retry=False
            )
            return str(operation["name"])

        async def find() -> str | None:
            return await self.find(endpoint, key, since, frozenset())

        return await submit_once(endpoint, create, find)

    async def find(
        self, endpoint: Endpoint, key: str, since: datetime, custom_ids: frozenset[str]
    ) -> str | None:
        token: str | None = None
        while True:
            url = f"{_root(endpoint)}/batches?pageSize=100" + (
                f"&pageToken={quote(token)}" if token else ""
            )
            page = await http_json(endpoint, "GET", url, _headers(endpoint))
            for operation in page.get("operations") or []:
                if (operation.get("metadata") or {}).get("displayName") == key:
                    return str(operation["name"])
            token = page.get("nextPageToken")
            if not token:
                return None

    async def status(self, endpoint: Endpoint, remote_id: str) -> RemoteStatus:
        url = f"{_root(endpoint)}/{remote_id}"
        return parse_status(await http_json(endpoint, "GET", url, _headers(endpoint)))

    async def results(
        self, endpoint: Endpoint, remote_id: str, status: RemoteStatus, order: Sequence[str]
    ) -> list[ItemResult]:
        output = _output(status.raw)
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses")
        if isinstance(inlined, list):  # in the order submitted; the key echoed, or not
            return [
                parse_result(item, order[n] if n < len(order) else "")
                for n, item in enumerate(inlined)
            ]
        file_name = output.get("responsesFile")
        if not file_name:
            return []
        base = endpoint.base_url.rstrip("/")
        url = f"{base}/download/v1beta/{file_name}:download?alt=media"
        text = await http_text(endpoint, url, _headers(endpoint))
        return [parse_result(line) for line in jsonl(endpoint.name, text)]

    async def cancel(self, endpoint: Endpoint, remote_id: str) -> None:
        url = f"{_root(endpoint)}/{remote_id}:cancel"
        await http_json(endpoint, "POST", url, _headers(endpoint))

    def parse(self, body: dict[str, Any]) -> Parsed:
        return self.adapter.parse(body)


def _root(endpoint: Endpoint) -> str:
    base = endpoint.base_url.rstrip("/")
    return base if base.rsplit("/", 1)[-1].startswith("v1") else base + "/v1beta"


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = dict(endpoint.headers)
    if endpoint.api_key:
        headers["x-goog-api-key"] = endpoint.api_key
    return headers


def _output(operation: Mapping[str, Any]) -> dict[str, Any]:
    response = operation.get("response")
    if isinstance(response, dict) and response:
        return response
    output = (operation.get("metadata") or {}).get("output")
    return output if isinstance(output, dict) else {}


def parse_status(operation: dict[str, Any]) -> RemoteStatus:
    """A batch's operation: our state, its requests answered and failed so far."""
    metadata = operation.get("metadata") or {}
    state = _STATES.get(str(metadata.get("state") or ""), BatchState.RUNNING)
    error = operation.get("error")
    message = None
    if isinstance(error, dict) and error:
        state, message = BatchState.FAILED, str(error.get("message") or error)
    stats = metadata.get("batchStats") or {}
    return RemoteStatus(
        state,
        succeeded=int(stats.get("successfulRequestCount") or 0),
        failed=int(stats.get("failedRequestCount") or 0),
        error=message,
        raw=operation,
    )


def parse_result(item: dict[str, Any], position_key: str = "") -> ItemResult:
    """One inlined response (or a line of a responses file); ``position_key``: the custom id
    of the request in its place, for a response that does not echo its metadata."""
    key = str((item.get("metadata") or {}).get("key") or item.get("key") or position_key)
    response = item.get("response")
    if isinstance(response, dict) and response:
        return ItemResult(key, ItemOutcome.SUCCEEDED, body=response, status=200)
    error = item.get("error") or item.get("status")
    if isinstance(error, dict):
        status = int(error.get("code") or 500)
        if status < 100:  # a google.rpc.Code, not an HTTP status
            status = _RPC_STATUS.get(status, 400)
        message = str(error.get("message") or error.get("status") or "error")
        return ItemResult(
            key,
            ItemOutcome.ERRORED,
            status=status,
            message=message,
            retryable=is_retryable_status(status),
        )
    return ItemResult(key, ItemOutcome.MISSING, message="no answer in the results")
