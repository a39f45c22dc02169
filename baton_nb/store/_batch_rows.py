"""Typed rows of provider batches (DESIGN §12): a batch, and the calls it asks.

A batch row and one request row per call are stored *before* the batch is submitted, the
provider's id right after: a resumed run finds every call it ever sent to a provider, and
which batch holds it, whatever moment the previous process died at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .._money import add_money, normalize_money
from .._states import BATCH_LIVE_STATES, BatchRequestState, BatchState

__all__ = ["BatchRequestRow", "ProviderBatchRow"]


@dataclass(slots=True)
class ProviderBatchRow:
    """One provider batch (``workflow_provider_batches``).

    ``key`` is ours, made before submitting: the provider's copy carries it (OpenAI batch
    ``metadata``, Anthropic custom ids, Gemini display name), so a batch whose id was never
    stored is found again. ``cost`` / ``standard_cost``: what its stored answers cost at
    batch rates and would have cost at standard rates (``None`` until answers are stored
    or when a price is unknown); ``discount``: the fraction the model's batch rates take
    off, from the price tables (``None`` when unknown), shown before any answer is in.
    """

    key: str
    run_id: str
    step: str  # the fan-out step whose children's calls it holds
    provider: str  # the endpoint name (``openai``, ``anthropic``, ``gemini``, ``mock`` ...)
    model: str  # ``provider/model`` as the calls name it
    state: BatchState
    request_count: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    remote_id: str | None = None
    succeeded: int = 0  # answered, as the provider counts them (progress)
    failed: int = 0  # errored, expired or cancelled, as the provider counts them
    cost: Decimal | None = None
    standard_cost: Decimal | None = None
    discount: Decimal | None = None
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        """Not finished: a resumed run re-attaches to it."""
        return self.state in BATCH_LIVE_STATES

    @property
    def saved(self) -> Decimal | None:
        """What batch rates saved on the answers stored so far."""
        if self.cost is None or self.standard_cost is None:
            return None
        # exact, whatever the decimal context; without trailing zeros, as every cost shown
        return normalize_money(add_money(self.standard_cost, -self.cost))


@dataclass(slots=True)
class BatchRequestRow:
    """One call of a step sent in a provider batch (``workflow_batch_requests``).

    ``custom_id`` is unique in its run (the provider answers by it); ``step``,
    ``call_index`` and ``request_hash`` are the call's replay key, so its answer is
    stored as the completion a re-executed step replays. ``attempt`` is the step's attempt
    that asked; ``price_as`` how the call is priced; ``tries`` how many batches have asked
    it (a call answered by none of a few is failed, not asked forever).
    """

    run_id: str
    batch_key: str
    custom_id: str
    step: str
    call_index: int
    request_hash: str
    attempt: int
    price_as: str | None = None
    state: BatchRequestState = BatchRequestState.PENDING
    error: str | None = None
    tries: int = 1

    @property
    def call_key(self) -> tuple[str, int, str]:
        """(step, call index, request hash): the call's replay key."""
        return self.step, self.call_index, self.request_hash
