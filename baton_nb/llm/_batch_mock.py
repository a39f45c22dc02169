"""``mock/...`` batches: the offline provider's batch API, for demos and tests.

A submitted batch is answered at once (the mock's deterministic answers, computed in a
worker thread) and written to a JSON file, one per batch, in ``BATON_NB_MOCK_BATCHES``
(default: ``baton_nb_mock_batches`` in the system's temporary directory): like a real
provider, it outlives the kernel that submitted it, so a notebook restarted in the middle
re-attaches to it. It reports itself ended ``latency`` seconds after it was submitted (the
mock endpoint's ``latency`` option: ``bn.configure(providers={"mock": {"latency": 30}})``
makes a batch that takes half a minute), its answers counted in as time passes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from baton_nb._errors import ProviderError
from baton_nb._states import BatchState

from ._batch import (
    BatchLine,
    BatchPolling,
    ItemOutcome,
    ItemResult,
    RemoteStatus,
    encoded_size,
)
from ._config import Endpoint
from ._mock import adapter_check, mock_body, server_refusal
from ._openai import parse_message
from ._tokens import aload_encoder
from ._types import LLMRequest
from ._wire import Parsed

__all__ = ["MockBatches", "mock_batch_dir"]


def mock_batch_dir() -> Path:
    """Where mock batches are kept (``BATON_NB_MOCK_BATCHES``, else the temp directory)."""
    configured = os.environ.get("BATON_NB_MOCK_BATCHES")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "baton_nb_mock_batches"


class MockBatches:
    """The mock provider's batch API (answers computed at submission, files on disk)."""

    max_requests: int | None = 100_000
    max_bytes = 256_000_000
    polling: BatchPolling | None = BatchPolling(initial=0.05, maximum=1.0)  # ask often: local

    def line(
        self, endpoint: Endpoint, model: str, request: LLMRequest, custom_id: str
    ) -> BatchLine:
        # what the adapter cannot send fails here; what the server refuses (a 400) is that
        # request's error in the batch's results, as a provider's batch reports it
        adapter_check(endpoint, model, request)
        item = {"custom_id": custom_id, "model": model, "request": request}
        return BatchLine(custom_id, item, encoded_size(custom_id) + 256)

    async def submit(
        self, endpoint: Endpoint, model: str, key: str, lines: Sequence[BatchLine]
    ) -> str:
        await aload_encoder()  # the mock counts tokens with tiktoken
        remote_id = f"mockbatch_{uuid.uuid4().hex[:20]}"
        record = {
            "id": remote_id,
            "key": key,
            "created": time.time(),
            "latency": endpoint.latency,
            "cancelled": None,
            "order": [line.custom_id for line in lines],
        }
        items = [(line.custom_id, line.body["model"], line.body["request"]) for line in lines]
        await anyio.to_thread.run_sync(_write_batch, record, items)
        return remote_id

    async def find(
        self, endpoint: Endpoint, key: str, since: datetime, custom_ids: frozenset[str]
    ) -> str | None:
        return await anyio.to_thread.run_sync(_find, key)

    async def status(self, endpoint: Endpoint, remote_id: str) -> RemoteStatus:
        record = await anyio.to_thread.run_sync(_read, endpoint, remote_id)
        done = _done(record)
        total = len(record["order"])
        if record["cancelled"] is not None:
            state = BatchState.CANCELLED
        elif done >= total:
            state = BatchState.ENDED
        else:
            state = BatchState.RUNNING
        return RemoteStatus(state, succeeded=done, raw={"id": remote_id, "done": done})

    async def results(
        self, endpoint: Endpoint, remote_id: str, status: RemoteStatus, order: Sequence[str]
    ) -> list[ItemResult]:
        record = await anyio.to_thread.run_sync(_read, endpoint, remote_id)
        done = int(status.raw.get("done", len(record["order"])))
        out = []
        for index, cid in enumerate(record["order"]):
            refused = record.get("refused", {}).get(cid)
            if index < done and refused is not None:
                out.append(ItemResult(cid, ItemOutcome.ERRORED, status=400, message=refused))
            elif index < done:
                out.append(ItemResult(cid, ItemOutcome.SUCCEEDED, body=record["answers"][cid]))
            else:
                out.append(ItemResult(cid, ItemOutcome.MISSING, message="cancelled"))
        return out

    async def cancel(self, endpoint: Endpoint, remote_id: str) -> None:
        await anyio.to_thread.run_sync(_cancel, endpoint, remote_id)

    def parse(self, body: dict[str, Any]) -> Parsed:
        return parse_message(body)


def _done(record: dict[str, Any]) -> int:
    """Answers ready so far: all of them ``latency`` seconds after submission."""
    total = len(record["order"])
    latency = float(record["latency"] or 0)
    until = record["cancelled"] if record["cancelled"] is not None else time.time()
    if latency <= 0:
        return total
    return min(total, int(total * max(0.0, until - record["created"]) / latency))


def _path(remote_id: str) -> Path:
    return mock_batch_dir() / f"{remote_id}.json"


def _write_batch(record: dict[str, Any], items: list[tuple[str, str, LLMRequest]]) -> None:
    record["refused"] = {
        cid: refused
        for cid, model, request in items
        if (refused := server_refusal(model, request)) is not None
    }
    record["answers"] = {
        cid: mock_body(model, request)
        for cid, model, request in items
        if cid not in record["refused"]
    }
    directory = mock_batch_dir()
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{record['id']}.tmp"
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(_path(record["id"]))  # whole or absent, as a provider's batch is


def _read(endpoint: Endpoint, remote_id: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_path(remote_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProviderError(
            endpoint.name, 404, f"no mock batch {remote_id!r} in {mock_batch_dir()}"
        ) from None
    return data


def _find(key: str) -> str | None:
    directory = mock_batch_dir()
    if not directory.is_dir():
        return None
    for path in directory.glob("mockbatch_*.json"):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("key") == key:
                return path.stem
        except (OSError, ValueError):
            continue
    return None


def _cancel(endpoint: Endpoint, remote_id: str) -> None:
    record = _read(endpoint, remote_id)
    if record["cancelled"] is None and _done(record) < len(record["order"]):
        record["cancelled"] = time.time()
        _path(remote_id).write_text(json.dumps(record), encoding="utf-8")
