"""One provider batch's life at run time (DESIGN §12): submitted (stored first, its id
right after), followed (polled with backoff; found again by its key when its id was never
stored), its answers stored, or cancelled. The parking and the rounds are ``_batching``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio

from .._errors import ConfigurationError, OutputValidationError, ProviderError, describe_error
from .._money import add_money, normalize_money
from .._states import BatchRequestState, BatchState
from ..store import BatchRequestRow, CallRecord, CompletionRow, ProviderBatchRow, utcnow
from ._batch_calls import MAX_TRIES, LiveBatch, ParkedCall

if TYPE_CHECKING:
    from ..llm import Completion, LLMRequest
    from ..llm._batch import BatchApi, BatchLine, ItemResult, RemoteStatus
    from ..llm._config import Endpoint
    from ._batching import Batching

__all__ = ["cancel_batch", "chunks", "follow", "ingest", "submit_round"]

logger = logging.getLogger("baton_nb.runtime")
PENDING, ANSWERED = BatchRequestState.PENDING, BatchRequestState.ANSWERED
ERRORED, MISSING = BatchRequestState.ERRORED, BatchRequestState.MISSING
_FINAL = {
    BatchState.ENDED: BatchState.DONE,
    BatchState.EXPIRED: BatchState.EXPIRED,
    BatchState.CANCELLED: BatchState.CANCELLED,
}
Line = tuple[ParkedCall, "BatchLine"]


def chunks(lines: Sequence[Line], max_requests: int | None, max_bytes: int) -> Iterator[list[Line]]:
    """``lines`` cut into batches within a provider's limits (requests, bytes), in order."""
    current: list[Line] = []
    size = 0
    for item in lines:
        full = max_requests is not None and len(current) >= max_requests
        if current and (full or size + item[1].size > max_bytes):
            yield current
            current, size = [], 0
        current.append(item)
        size += item[1].size
    if current:
        yield current


# ── submitting ────────────────────────────────────────────────────────────────


async def submit_round(batching: Batching, calls: list[ParkedCall]) -> None:
    """A round's calls: one batch per model (and more where a provider's limits say)."""
    from ..llm._batch_apis import batch_api

    by_model: dict[str, list[ParkedCall]] = {}
    for call in calls:
        by_model.setdefault(call.request.model, []).append(call)
    for model, model_calls in by_model.items():
        try:
            endpoint, name, api = batch_api(model)
        except ConfigurationError as exc:
            batching.fail(model_calls, exc)
            continue
        lines: list[Line] = []
        for call in model_calls:
            try:
                lines.append((call, api.line(endpoint, name, call.request, call.custom_id)))
            except ConfigurationError as exc:  # UnsupportedFeature: what the provider cannot do
                batching.fail([call], exc)
        for chunk in chunks(lines, api.max_requests, api.max_bytes):
            await _submit(batching, endpoint, name, api, chunk)


async def _submit(
    batching: Batching, endpoint: Endpoint, name: str, api: BatchApi, chunk: list[Line]
) -> None:
    from ..llm._batch import batch_discount

    calls = [call for call, _ in chunk]
    key = "bnb_" + uuid.uuid4().hex
    now = utcnow()
    try:
        discount = await batch_discount(calls[0].request)
    except Exception:  # the price tables cannot say: the widget shows no figure
        discount = None
    row = ProviderBatchRow(
        key=key,
        run_id=batching.run_id,
        step=calls[0].group,
        provider=endpoint.name,
        model=calls[0].request.model,
        state=BatchState.PREPARED,
        request_count=len(chunk),
        size_bytes=sum(line.size for _, line in chunk),
        created_at=now,
        updated_at=now,
        discount=discount,
    )
    requests = {}
    for call in calls:
        previous = batching.mapped.get(call.key)
        requests[call.custom_id] = BatchRequestRow(
            run_id=batching.run_id,
            batch_key=key,
            custom_id=call.custom_id,
            step=call.node.name,
            call_index=call.index,
            request_hash=call.digest,
            attempt=call.attempt,
            price_as=call.request.price_as,
            tries=previous.tries + 1 if previous is not None else 1,
        )
    # Stored before anything is sent: a process that dies from here on leaves a batch
    # that a resumed run finds (by its key) or submits, never one submitted twice.
    await batching.store.insert_provider_batch(row, list(requests.values()), owner=batching.owner)
    batch = LiveBatch(row, requests)
    batch.followed = True
    batching.register(batch)
    try:
        remote_id = await api.submit(endpoint, name, key, [line for _, line in chunk])
    except Exception as exc:
        await _failed(batching, batch, exc)
        return
    row.remote_id, row.state, row.submitted_at = remote_id, BatchState.SUBMITTED, utcnow()
    await batching.save(row)  # the provider's id, right after
    batching.launch(follow, f"batch {key}", batching, batch)


async def _failed(
    batching: Batching, batch: LiveBatch, error: Exception, state: BatchState = BatchState.FAILED
) -> None:
    """The whole batch failed (refused, or its provider unreachable): each call's child
    fails its attempt with the provider's words; its next attempt asks again."""
    row = batch.row
    row.state, row.error, row.updated_at = state, describe_error(error), utcnow()
    pending = [r for r in batch.requests.values() if r.state is PENDING]
    for request in pending:
        request.state, request.error = MISSING, row.error
    await batching.store.store_batch_results(row, pending, [], [], owner=batching.owner)
    batching.announce.batch(row)
    known = [batching.known[r.call_key] for r in pending if r.call_key in batching.known]
    batching.fail(known, error)


# ── following ─────────────────────────────────────────────────────────────────


async def follow(batching: Batching, batch: LiveBatch) -> None:
    """Poll a submitted batch with backoff until it ends, then store its answers. A batch
    whose id was never stored is looked for first (and submitted if the provider has none)."""
    from ..llm._batch import batch_polling
    from ..llm._batch_apis import batch_api

    row = batch.row
    try:
        endpoint, name, api = batch_api(row.model)
    except ConfigurationError as exc:
        await _failed(batching, batch, exc)
        return
    if row.remote_id is None and not await _attach(batching, batch, endpoint, name, api):
        return
    assert row.remote_id is not None
    wait = (api.polling or batch_polling()).delays()
    while True:
        try:
            status = await api.status(endpoint, row.remote_id)
        except ProviderError as exc:
            if not exc.retryable:
                await _failed(batching, batch, exc)
                return
            logger.warning("batch %s: %s; polling again", row.key, describe_error(exc))
            await anyio.sleep(wait())
            continue
        if status.ended:
            try:
                await ingest(batching, batch, endpoint, api, status)
                return
            except ProviderError as exc:  # its results could not be read (yet)
                if not exc.retryable:
                    await _failed(batching, batch, exc)
                    return
                logger.warning(
                    "batch %s: %s; reading its results again", row.key, describe_error(exc)
                )
                await anyio.sleep(wait())
                continue
        if status.state is BatchState.FAILED:
            message = f"batch {row.remote_id} failed: {status.error or 'no reason given'}"
            await _failed(batching, batch, ProviderError(endpoint.name, None, message))
            return
        seen = (status.state, status.succeeded, status.failed)
        if seen != (row.state, row.succeeded, row.failed):
            row.state, row.succeeded, row.failed = seen
            await batching.save(row)
        await anyio.sleep(wait())


async def _attach(
    batching: Batching, batch: LiveBatch, endpoint: Endpoint, name: str, api: BatchApi
) -> bool:
    """A batch stored but whose id was not: found by its key, else submitted now (with the
    calls parked again; its other calls go to the next round). False if it is over."""
    row = batch.row
    since = row.created_at - timedelta(minutes=5)
    try:
        found = await api.find(endpoint, row.key, since, frozenset(batch.requests))
    except ProviderError as exc:
        await _failed(batching, batch, exc)
        return False
    if found is None:
        lines: list[BatchLine] = []
        for request in batch.requests.values():
            call = batching.known.get(request.call_key)
            if call is None:
                request.state, request.error = MISSING, "not parked again after a restart"
                continue
            try:
                lines.append(api.line(endpoint, name, call.request, call.custom_id))
            except ConfigurationError as exc:
                batching.fail([call], exc)
                request.state, request.error = ERRORED, describe_error(exc)
        if not lines:
            await _failed(batching, batch, ProviderError(endpoint.name, None, "never submitted"))
            return False
        try:
            found = await api.submit(endpoint, name, row.key, lines)
        except Exception as exc:
            await _failed(batching, batch, exc)
            return False
    row.remote_id, row.state = found, BatchState.SUBMITTED
    row.submitted_at = row.submitted_at or utcnow()
    await batching.save(row)
    return True


# ── answers ───────────────────────────────────────────────────────────────────


async def ingest(
    batching: Batching,
    batch: LiveBatch,
    endpoint: Endpoint,
    api: BatchApi,
    status: RemoteStatus,
) -> None:
    """A batch ended: its answers stored (one transaction) as the completions its calls
    replay, the paid calls at batch rates; refused calls fail their step's attempt, calls
    it did not answer go to the next round (at most ``MAX_TRIES`` batches)."""
    from ..llm._batch import ItemOutcome, ItemResult

    row = batch.row
    assert row.remote_id is not None
    order = list(batch.requests)
    found = await api.results(endpoint, row.remote_id, status, order)
    results = {r.custom_id: r for r in found}
    now = utcnow()
    latency_ms = max(0.0, (now - (row.submitted_at or row.created_at)).total_seconds() * 1000)
    answers = _Answers(batching, row, latency_ms)
    for request in batch.requests.values():
        if request.state is not PENDING:
            continue
        result = results.get(request.custom_id) or ItemResult(
            request.custom_id, ItemOutcome.MISSING, message="not in the batch's results"
        )
        await answers.take(request, result, api)
    row.state = _FINAL.get(status.state, BatchState.DONE)
    row.succeeded = sum(1 for r in batch.requests.values() if r.state is ANSWERED)
    row.failed = len(batch.requests) - row.succeeded
    # without trailing zeros (0.007, not 0.00700), as a batch loaded from the store and
    # every cost the report shows
    row.cost = None if answers.cost is None else normalize_money(answers.cost)
    row.standard_cost = None if answers.standard is None else normalize_money(answers.standard)
    row.ended_at = row.updated_at = now
    await batching.store.store_batch_results(
        row, answers.changed, answers.completions, answers.records, owner=batching.owner
    )
    spend = batching.calls.spend
    if spend is not None:  # the answers of cached requests go to the response cache too
        for asked, completion in answers.paid:
            await spend.keep(asked, completion)
    answers.announce()
    batching.announce.batch(row)
    answers.wake()


class _Answers:
    """What a batch's results make of each of its calls, gathered for one transaction."""

    def __init__(self, batching: Batching, row: ProviderBatchRow, latency_ms: float) -> None:
        self.batching = batching
        self.row = row
        self.latency_ms = latency_ms
        self.now = utcnow()
        self.changed: list[BatchRequestRow] = []
        self.completions: list[CompletionRow] = []
        self.records: list[CallRecord] = []
        self.answered: list[tuple[BatchRequestRow, str]] = []
        # the answers whose request this process knows (it parked them): for the cache
        self.paid: list[tuple[LLMRequest, Completion]] = []
        self.refused: list[tuple[BatchRequestRow, Exception]] = []
        self.again: list[BatchRequestRow] = []
        self.cost: Decimal | None = row.cost
        self.standard: Decimal | None = row.standard_cost

    async def take(self, request: BatchRequestRow, result: ItemResult, api: BatchApi) -> None:
        from ..llm._batch import ItemOutcome

        self.changed.append(request)
        if result.outcome is ItemOutcome.SUCCEEDED and result.body is not None:
            await self._answer(request, result.body, api)
        elif result.outcome is ItemOutcome.ERRORED and not result.retryable:
            message = result.message or "refused"
            self._refuse(request, ProviderError(self.row.provider, result.status, message))
        elif request.tries >= MAX_TRIES:
            message = f"not answered by {request.tries} batches (last: {result.message})"
            error = ProviderError(self.row.provider, result.status, message, retryable=True)
            self._refuse(request, error)
        else:
            request.state, request.error = MISSING, result.message
            self.again.append(request)

    def _refuse(self, request: BatchRequestRow, error: Exception) -> None:
        request.state, request.error = ERRORED, describe_error(error)
        self.refused.append((request, error))

    async def _answer(
        self, request: BatchRequestRow, body: dict[str, object], api: BatchApi
    ) -> None:
        from ..llm._batch import batch_completion
        from ..llm._output import awith_parsed

        call = self.batching.known.get(request.call_key)
        asked = call.request if call is not None else _stand_in(self.row.model, request.price_as)
        try:
            completion, standard = await batch_completion(api, asked, dict(body), self.latency_ms)
        except (ProviderError, ValueError, KeyError, TypeError) as exc:  # an unreadable answer
            self._refuse(request, ProviderError(self.row.provider, None, describe_error(exc)))
            return
        record = CallRecord.from_completion(
            self.row.run_id,
            request.step,
            request.attempt,
            request.call_index,
            completion,
            self.now,
        )
        self.records.append(record)  # paid, whatever comes next
        if completion.cost is not None:  # exact whatever the caller's decimal context
            self.cost = add_money(self.cost or Decimal(0), completion.cost)
            if standard is not None:
                self.standard = add_money(self.standard or Decimal(0), standard)
        if call is not None and asked.response_format is not None:
            try:
                await awith_parsed(completion, asked)  # jsonschema imported off the loop
            except OutputValidationError as exc:  # as a direct call: paid, not stored
                self._refuse(request, exc)
                return
        encoded = completion.to_json()
        row = self.row
        answer = CompletionRow(
            row.run_id, request.step, request.call_index, request.request_hash, encoded, self.now
        )
        self.completions.append(answer)
        if call is not None:
            self.paid.append((asked, completion))
        request.state, request.error = ANSWERED, None
        self.answered.append((request, encoded))

    def announce(self) -> None:
        calls = self.batching.calls
        for request, encoded in self.answered:
            calls.remember(request.step, request.call_index, request.request_hash, encoded)
        for record in self.records:
            self.batching.announce.call(record)

    def wake(self) -> None:
        batching = self.batching
        for request, _ in self.answered:
            batching.resolve(request.call_key)
        for request, error in self.refused:
            batching.failures[request.call_key] = error
            batching.resolve(request.call_key)
        groups = {}
        for request in self.again:
            call = batching.known.get(request.call_key)
            if call is None or batching.stopping:
                batching.resolve(request.call_key)  # its step asks again when it runs
                continue
            batching.again(call)
            groups[call.group] = call.node.parent
        for group in groups.values():
            batching.check(group)


def _stand_in(model: str, price_as: str | None) -> LLMRequest:
    """The request of a call not parked in this process (its step ended otherwise since):
    enough to price its answer."""
    from ..llm import LLMRequest

    return LLMRequest(model=model, messages=({"role": "user", "content": ""},), price_as=price_as)


# ── cancelling ────────────────────────────────────────────────────────────────


async def cancel_batch(batching: Batching, batch: LiveBatch) -> None:
    """Ask the provider to stop ``batch`` (one whose id was never stored is found first)."""
    from ..llm._batch_apis import batch_api

    row = batch.row
    endpoint, _, api = batch_api(row.model)
    if row.remote_id is None:
        since = row.created_at - timedelta(minutes=5)
        row.remote_id = await api.find(endpoint, row.key, since, frozenset(batch.requests))
        if row.remote_id is None:
            error = ProviderError(endpoint.name, None, "cancelled before it was submitted")
            await _failed(batching, batch, error, BatchState.CANCELLED)
            return
    await api.cancel(endpoint, row.remote_id)
    row.state = BatchState.CANCELLING
    await batching.save(row)
