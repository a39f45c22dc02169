"""A step's LLM calls (DESIGN §6): replay of stored answers, stats, captured context.

Every answer is committed (stored completion and stats row, one transaction) before the
step sees it; a call made again by a re-executed step (retry, crash rescue, resume) with
the same index and request is answered from the store: no network, recorded as replayed.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .. import _jsonutil
from .._errors import OutputValidationError, describe_error
from .._graph import GraphSpec
from ..store import CallRecord, CompletionRow, ExecutionStore, LogRow, utcnow
from ._announce import Announcer
from ._commit import GroupCommit
from ._node import Node

if TYPE_CHECKING:
    from ..llm import Completion, LLMRequest
    from ._batching import Batching
    from ._spend import Spend

__all__ = ["Calls"]


class Calls:
    """The LLM calls and captured context of one execution's steps."""

    def __init__(
        self,
        graph: GraphSpec,
        run_id: str,
        store: ExecutionStore,
        commit: GroupCommit,
        announce: Announcer,
        *,
        resumed: bool,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.store = store
        self.commit = commit
        self.announce = announce
        self.resumed = resumed
        # Answers stored for a node: call index -> request hash -> response JSON.
        self._answers: dict[str, dict[int, dict[str, str]]] = {}
        # Provider batches (DESIGN §12): a batched step's calls park there (``_batching``).
        self.batching: Batching | None = None
        # Budgets and the response cache (DESIGN §11, ``_spend``): None when the run has neither.
        self.spend: Spend | None = None

    def complete(
        self, node: Node, index: int, request: LLMRequest
    ) -> Coroutine[Any, Any, Completion]:
        """Call ``index`` of ``node``'s attempt: replayed if stored, else sent and stored.

        A batched step's call is counted by ``Batching`` from here until it parks or is
        answered: calls gathered together may park in different loop turns (a cache or
        store read first), and the round waits for all of them (``Batching.calling``)."""
        batching = self.batching
        if batching is not None and batching.takes(node):
            return batching.calling(node, self._complete(node, index, request))
        return self._complete(node, index, request)

    async def _complete(self, node: Node, index: int, request: LLMRequest) -> Completion:
        llm = _llm()
        completion_type: type[Completion] = llm.Completion
        digest = llm.request_hash(request)
        answers = self._answers.get(node.name)  # loaded already: no coroutine made
        if answers is None:
            answers = await self._stored(node)
        stored = answers[index].get(digest) if index in answers else None
        spec_debug = node.spec.debug
        debug = spec_debug if spec_debug is not None else self.graph.debug
        if debug:  # before the call: a call that fails keeps its request on record
            self._capture_request(node, request)
        if stored is not None:
            completion = replace(completion_type.from_json(stored), replayed=True)
            self._record(node, index, completion)
        else:
            spend = self.spend
            batched = self.batching is not None and self.batching.takes(node)
            hit = await spend.cached(request) if batched and spend is not None else None
            if batched and hit is None:
                # Not in the response cache (or no cache): the call goes to a batch.
                assert self.batching is not None
                self.batching.park(node, index, request, digest)  # raises CallParked
            try:
                if hit is not None:
                    completion = hit
                elif spend is None:
                    completion = cast("Completion", await llm.complete(request))
                else:
                    completion = await spend.complete(node, request, index, self.unanswered)
            except Exception as exc:
                if debug:
                    self.log(node, "error", describe_error(exc), {"model": request.model})
                paid = exc.completion if isinstance(exc, OutputValidationError) else None
                if isinstance(paid, completion_type):
                    # paid for, so counted; not stored, so a retry asks again
                    self._record(node, index, paid)
                    await self.commit.commit()
                raise
            encoded = completion.to_json()
            self._answers[node.name].setdefault(index, {})[digest] = encoded
            now = utcnow()  # the answer's and its stats row's time: one value, one text
            row = CompletionRow(self.run_id, node.name, index, digest, encoded, now)
            self.commit.add_rows(completion=row)
            self._record(node, index, completion, now)
        if debug:
            self._capture_response(node, completion)
        await self.commit.commit()
        return completion

    def remember(self, step: str, index: int, digest: str, response: str) -> None:
        """An answer stored by someone else (a provider batch) for a node whose stored
        answers are loaded already; a node not loaded yet reads it from the store."""
        answers = self._answers.get(step)
        if answers is not None:
            answers.setdefault(index, {})[digest] = response

    async def _stored(self, node: Node) -> dict[int, dict[str, str]]:
        answers = self._answers.get(node.name)
        if answers is None:
            loaded: dict[int, dict[str, str]] = {}
            if self.resumed:  # a new run has none stored: no read
                rows = await self.store.get_completions(self.run_id, node.name)
                for index, (digest, response) in rows.items():
                    loaded.setdefault(index, {})[digest] = response
            # Kept only once read: a call made meanwhile (a step gathering its calls) read
            # them too, and the first one read is the one kept (what is stored later goes
            # in it), never an empty dict that misses the paid answers.
            answers = self._answers.setdefault(node.name, loaded)
        return answers

    def _record(
        self, node: Node, index: int, completion: Completion, now: datetime | None = None
    ) -> None:
        call = CallRecord.from_completion(
            self.run_id, node.name, node.attempt, index, completion, now or utcnow()
        )
        self.commit.add_rows(call=call)
        self.announce.call(call)

    def unanswered(self, node: Node, index: int, model: str, cost: Decimal) -> None:
        """The attempts of call ``index`` that reached the provider with no answer saying
        what they cost (timed out, cut, cancelled), counted by a budget at their worst case
        (``Spend``): one record of 0 tokens at that cost (``CallRecord.unanswered``), so
        the run's cost says it and a resume's budget counts it again (never replayed)."""
        call = CallRecord.unanswered(
            self.run_id, node.name, node.attempt, index, model,
            _llm().split_model(model)[0], cost, utcnow(),
        )  # fmt: skip
        self.commit.add_rows(call=call)
        self.announce.call(call)

    # ── captured context (debug=True) ─────────────────────────────────────────

    def debug(self, node: Node) -> bool:
        return node.spec.debug if node.spec.debug is not None else self.graph.debug

    def _capture_request(self, node: Node, request: LLMRequest) -> None:
        params = {
            "model": request.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": request.stream,
            **request.neutral_params(),
            **request.extra,
        }
        self.log(node, "request", "", {"messages": list(request.messages), "params": params})

    def _capture_response(self, node: Node, completion: Completion) -> None:
        self.log(
            node,
            "response",
            completion.text,
            {
                "model": completion.model,
                "usage": completion.usage.to_dict(),
                "cost_usd": None if completion.cost is None else format(completion.cost, "f"),
                "replayed": completion.replayed,
                "finish_reason": completion.finish_reason,
                "tool_calls": [c.to_dict() for c in completion.tool_calls],
                "refusal": completion.refusal,
            },
        )

    def log(self, node: Node, kind: str, message: str, data: Any) -> None:
        """A captured-context row for ``node`` (secrets redacted), committed with the next batch."""
        from ..llm import redact_secrets
        from ..llm._redact import redact_json_text

        row = LogRow(
            run_id=self.run_id,
            step=node.name,
            attempt=node.attempt,
            kind=kind,
            message=redact_secrets(message),
            data=None if data is None else redact_json_text(_jsonutil.dumps(data)),
            created_at=utcnow(),
        )
        self.commit.add_rows(log=row)
        self.announce.log(row)


@cache
def _llm() -> ModuleType:
    """The ``baton_nb.llm`` package, imported at the first call (this module imports no
    ``llm`` at its top), then kept: an import statement naming a package runs importlib's
    ``_handle_fromlist`` each time (~0.6 us a call). Its names are read from it at each
    call, as the import did, so a test's ``monkeypatch.setattr(baton_nb.llm, "complete",
    ...)`` applies, and stops applying when undone."""
    from .. import llm

    return llm
