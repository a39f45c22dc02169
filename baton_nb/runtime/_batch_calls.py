"""The calls and batches ``_batching`` keeps track of (shared with ``_batch_jobs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import BatchRequestRow, ProviderBatchRow
from ._node import Node

if TYPE_CHECKING:
    from ..llm import LLMRequest

__all__ = ["MAX_TRIES", "CallKey", "LiveBatch", "ParkedCall"]

CallKey = tuple[str, int, str]  # (step, call index, request hash): a call's replay key
MAX_TRIES = 3  # batches that may leave a call unanswered before it fails the step


class ParkedCall:
    """A call of a batched step waiting for a batch, with its request (known in this
    process once the step parked it)."""

    __slots__ = ("attempt", "custom_id", "digest", "group", "index", "node", "request")

    def __init__(self, node: Node, index: int, request: LLMRequest, digest: str) -> None:
        from ..llm._batch import custom_id

        self.node = node
        self.index = index
        self.request = request
        self.digest = digest
        self.attempt = node.attempt
        self.group = node.parent.name if node.parent is not None else node.name
        self.custom_id = custom_id(node.name, index, digest)

    @property
    def key(self) -> CallKey:
        return self.node.name, self.index, self.digest


class LiveBatch:
    """A provider batch this execution follows: its row and its calls by custom id."""

    __slots__ = ("followed", "requests", "row")

    def __init__(self, row: ProviderBatchRow, requests: dict[str, BatchRequestRow]) -> None:
        self.row = row
        self.requests = requests
        self.followed = False
