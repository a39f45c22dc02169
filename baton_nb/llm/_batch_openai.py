"""OpenAI Batch (and OpenAI-compatible servers with ``/v1/files`` and ``/v1/batches``).

A batch is a JSONL file uploaded to the Files API (``purpose=batch``), one request per
line (``custom_id``, ``method``, ``url``, ``body``), then ``POST /v1/batches`` with the
file's id, the endpoint and ``metadata`` (our key: how a batch whose id was never stored
is found again in ``GET /v1/batches``). Its status comes from ``GET /v1/batches/{id}``;
the answers from its output file, the refusals and expired requests from its error file
(``GET /v1/files/{id}/content``). Limits: 50,000 requests and 200 MB per input file, one
model per batch. Shapes: the API reference (openai/openai-openapi ``openapi.yaml``) and the
Batch guide; recorded examples in tests/data/providers/batch/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

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
from ._openai import OpenAIAdapter
from ._responses import ResponsesAdapter
from ._retry import is_retryable_status
from ._transport import error_message
from ._types import LLMRequest
from ._wire import Parsed

__all__ = ["METADATA_KEY", "OpenAIBatches"]

METADATA_KEY = "baton_nb_batch"
_STATES = {
    "validating": BatchState.SUBMITTED,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,
    "completed": BatchState.ENDED,
    "expired": BatchState.EXPIRED,
    "cancelling": BatchState.CANCELLING,
    "cancelled": BatchState.CANCELLED,
    "failed": BatchState.FAILED,
}
# Error codes of requests the batch never ran: asked again in a new batch.
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})


class OpenAIBatches:
    """The OpenAI Batch API (Chat Completions, or the Responses API with ``responses``)."""

    max_requests: int | None = 50_000
    polling: BatchPolling | None = None
    max_bytes = 200_000_000

    def __init__(self, responses: bool = False) -> None:
        self.adapter = ResponsesAdapter() if responses else OpenAIAdapter()

    def line(
        self, endpoint: Endpoint, model: str, request: LLMRequest, custom_id: str
    ) -> BatchLine:
        call = self.adapter.build(endpoint, model, replace(request, stream=False))
        base = endpoint.base_url.rstrip("/")
        # the batch names the endpoint relative to the API root: /v1/chat/completions
        path = "/v1" + call.url[len(base) :] if call.url.startswith(base) else call.url
        record = {"custom_id": custom_id, "method": "POST", "url": path, "body": call.body}
        return BatchLine(custom_id, record, encoded_size(record) + 1, path)

    async def submit(
        self, endpoint: Endpoint, model: str, key: str, lines: Sequence[BatchLine]
    ) -> str:
        base = endpoint.base_url.rstrip("/")
        content = "".join(
            json.dumps(line.body, ensure_ascii=False, separators=(",", ":")) + "\n"
            for line in lines
        ).encode("utf-8")
        # Uploading twice costs nothing but storage: retried like any idempotent call.
        uploaded = await http_json(
            endpoint,
            "POST",
            f"{base}/files",
            _auth(endpoint),
            files={"file": (f"{key}.jsonl", content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = str(uploaded["id"])
        since = datetime.now(timezone.utc) - timedelta(minutes=10)

        async def create() -> str:
            body = {
                "input_file_id": file_id,
                "endpoint": lines[0].path,
                "completion_window": "24h",
                "metadata": {METADATA_KEY: key},
            }
            created = await http_json(
                endpoint, "POST", f"{base}/batches", _auth(endpoint), json_body=body, retry=False
            )
            return str(created["id"])

        async def find() -> str | None:
            return await self.find(endpoint, key, since, frozenset())

        return await submit_once(endpoint, create, find)

    async def find(
        self, endpoint: Endpoint, key: str, since: datetime, custom_ids: frozenset[str]
    ) -> str | None:
        """The batch whose ``metadata`` carries ``key``, newest first back to ``since``."""
        base = endpoint.base_url.rstrip("/")
        after: str | None = None
        while True:
            url = f"{base}/batches?limit=100" + (f"&after={after}" if after else "")
            page = await http_json(endpoint, "GET", url, _auth(endpoint))
            data = page.get("data") or []
            for batch in data:
                if (batch.get("metadata") or {}).get(METADATA_KEY) == key:
                    return str(batch["id"])
            oldest = min((int(b.get("created_at") or 0) for b in data), default=0)
            if not page.get("has_more") or not data or oldest < since.timestamp():
                return None
            after = str(page.get("last_id") or data[-1]["id"])

    async def status(self, endpoint: Endpoint, remote_id: str) -> RemoteStatus:
        base = endpoint.base_url.rstrip("/")
        body = await http_json(endpoint, "GET", f"{base}/batches/{remote_id}", _auth(endpoint))
        return parse_status(body)

    async def results(
        self, endpoint: Endpoint, remote_id: str, status: RemoteStatus, order: Sequence[str]
    ) -> list[ItemResult]:
        base = endpoint.base_url.rstrip("/")
        found: list[ItemResult] = []
        for name in ("output_file_id", "error_file_id"):
            file_id = status.raw.get(name)
            if file_id:
                url = f"{base}/files/{file_id}/content"
                text = await http_text(endpoint, url, _auth(endpoint))
                found += [parse_result(line) for line in jsonl(endpoint.name, text)]
        return found

    async def cancel(self, endpoint: Endpoint, remote_id: str) -> None:
        base = endpoint.base_url.rstrip("/")
        await http_json(endpoint, "POST", f"{base}/batches/{remote_id}/cancel", _auth(endpoint))

    def parse(self, body: dict[str, Any]) -> Parsed:
        return self.adapter.parse(body)


def _auth(endpoint: Endpoint) -> dict[str, str]:
    headers = dict(endpoint.headers)
    if endpoint.api_key:
        headers["authorization"] = f"Bearer {endpoint.api_key}"
    return headers


def parse_status(body: dict[str, Any]) -> RemoteStatus:
    """A Batch object: our state, the requests completed and failed so far."""
    raw_state = str(body.get("status") or "")
    state = _STATES.get(raw_state, BatchState.RUNNING)
    counts = body.get("request_counts") or {}
    error = None
    if state is BatchState.FAILED:
        errors = (body.get("errors") or {}).get("data") or []
        error = "; ".join(str(e.get("message") or e.get("code")) for e in errors) or "failed"
    return RemoteStatus(
        state,
        succeeded=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        error=error,
        raw=body,
    )


def parse_result(line: dict[str, Any]) -> ItemResult:
    """One line of an output or error file."""
    cid = str(line.get("custom_id") or "")
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if 200 <= status < 300 and isinstance(body, dict):
            return ItemResult(cid, ItemOutcome.SUCCEEDED, body=body, status=status)
        message = error_message(json.dumps(body).encode("utf-8"), status)
        retryable = is_retryable_status(status)
        return ItemResult(
            cid, ItemOutcome.ERRORED, status=status, message=message, retryable=retryable
        )
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or code or "error")
        if code in _NOT_RUN:
            return ItemResult(cid, ItemOutcome.MISSING, message=message)
        return ItemResult(cid, ItemOutcome.ERRORED, message=f"{code}: {message}", retryable=True)
    return ItemResult(cid, ItemOutcome.MISSING, message="no answer in the results")
