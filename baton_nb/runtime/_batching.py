"""Provider batches at run time (DESIGN §12): batched calls park, rounds are gathered,
answers come back as stored completions that the children replay.

How a call parks. In a step with ``batch=True`` a fan-out child's ``ctx.complete()`` that
has no stored answer does not call the provider: ``Batching.park`` notes the call (its
request, replay key and custom id) and raises ``CallParked``; the attempt ends ``Parked``
(no attempt used), the child waits ``snoozed`` and its concurrency slot goes to the next
child. So every child of the group reaches its first unanswered call, whatever the
concurrency.

A round. When every child of the group still open is parked (``check``: the group's
children not settled equal its parked ones), the round is complete: the parked calls are
split per model and per the provider's limits and submitted (``_jobs.submit``). Each
batch and its calls are stored *before* submitting, the provider's id right after; then
it is polled with backoff, and once it ends its answers are stored in one transaction
(completions, the paid calls' stats at batch rates, the calls' states). The children
whose calls are all answered are admitted again: they run from the start, their answered
calls are replayed, and a step that makes several calls parks again at the next one: the
next round.

A resumed run (a new kernel, after kill -9) loads every batch and call it stored. A child
that parks a call already in a live batch waits for that batch (followed again, never
submitted again; one whose id was never stored is found by its key); a call a batch did not
answer (expired, cancelled, a 5xx) goes to the next batch, at most ``MAX_TRIES`` times; a
call the provider refused (4xx) fails the child's attempt with the provider's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio

from .._errors import BatonError, ProviderError, describe_error
from .._states import BatchRequestState, BatchState
from ..store import BatchRequestRow, ExecutionStore, ProviderBatchRow, utcnow
from ._batch_calls import CallKey, LiveBatch, ParkedCall
from ._decisions import CallParked
from ._node import Node

if TYPE_CHECKING:
    from ..llm import LLMRequest
    from ._announce import Announcer
    from ._calls import Calls

__all__ = ["Batching"]

logger = logging.getLogger("baton_nb.runtime")
Spawn = Callable[..., None]
T = TypeVar("T")
CANCEL_TIMEOUT = 30.0  # seconds run.cancel() waits for a provider to take a batch's cancel


class Batching:
    """The provider batches of one execution of a run (see the module docstring)."""

    def __init__(
        self,
        run_id: str,
        store: ExecutionStore,
        calls: Calls,
        announce: Announcer,
        *,
        spawn: Spawn,
        readmit: Callable[[Node], None],
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.calls = calls
        self.announce = announce
        self.spawn = spawn
        self.readmit = readmit
        self.batches: dict[str, LiveBatch] = {}
        self.mapped: dict[CallKey, BatchRequestRow] = {}  # every call ever batched, by key
        self.known: dict[CallKey, ParkedCall] = {}  # calls parked, with their requests
        self.failures: dict[CallKey, Exception] = {}  # raised at the call's next park
        self._pending: dict[str, dict[CallKey, ParkedCall]] = {}  # per group: next round
        self._waits: dict[str, set[CallKey]] = {}  # per node: its calls not answered yet
        self._parked: dict[str, Node] = {}  # nodes waiting (snoozed) for their batches
        self._parked_in: dict[str, int] = {}  # per group: how many of its children
        self._calling: dict[str, int] = {}  # per node: its calls not parked or answered yet
        self._ending: dict[str, Node] = {}  # nodes parked while some of their calls were not
        self._busy = 0  # batch tasks (a round being submitted, a batch followed) running
        self.stopping = False  # run.cancel(): no new batch is submitted

    # ── a resumed run: what earlier executions stored ─────────────────────────

    async def load(self) -> None:
        """Every batch and batched call of the run (a resumed run re-attaches to them)."""
        for row in await self.store.get_provider_batches(self.run_id):
            self.batches[row.key] = LiveBatch(row, {})
            self.announce.batch(row)
        for request in await self.store.get_batch_requests(self.run_id):
            self.mapped[request.call_key] = request
            batch = self.batches.get(request.batch_key)
            if batch is not None:
                batch.requests[request.custom_id] = request
            if request.state is BatchRequestState.ERRORED:
                provider = batch.row.provider if batch is not None else "provider"
                self.failures[request.call_key] = ProviderError(
                    provider, None, request.error or "refused in a batch"
                )

    # ── parking ───────────────────────────────────────────────────────────────

    @staticmethod
    def takes(node: Node) -> bool:
        """Whether ``node``'s calls go to provider batches: a child of a batched step."""
        return node.spec.batch and node.parent is not None

    async def calling(self, node: Node, call: Coroutine[Any, Any, T]) -> T:
        """``node``'s call ``call``, counted until it parks or is answered.

        Calls a step gathers (``asyncio.gather``) may reach their park in different loop
        turns (each asks the response cache, or reads the stored answers, first); the first
        ``CallParked`` ends the attempt while the others are still on their way. The node
        counts as parked in its round only once none of its calls is (``parked``), so the
        round takes all of them (docs/batch.md)."""
        self._calling[node.name] = self._calling.get(node.name, 0) + 1
        try:
            return await call
        finally:
            left = self._calling[node.name] - 1
            if left:
                self._calling[node.name] = left
            else:
                del self._calling[node.name]
                ending = self._ending.pop(node.name, None)
                if ending is not None:
                    self.parked(ending)  # its attempt ended parked before this call did

    def park(self, node: Node, index: int, request: LLMRequest, digest: str) -> NoReturn:
        """Hand call ``index`` of ``node``'s attempt to a batch, and end the attempt.

        Raises the provider's refusal instead when the call's last batch refused it (once:
        the attempt after that asks again), else ``CallParked``."""
        key = (node.name, index, digest)
        failure = self.failures.pop(key, None)
        if failure is not None:
            raise failure
        call = self.known.get(key)
        if call is None or call.node is not node:
            call = self.known[key] = ParkedCall(node, index, request, digest)
        call.attempt = node.attempt
        self._waits.setdefault(node.name, set()).add(key)
        mapped = self.mapped.get(key)
        batch = self.batches.get(mapped.batch_key) if mapped is not None else None
        live = mapped is not None and mapped.state is BatchRequestState.PENDING
        if live and batch is not None and batch.row.live:
            pass  # in a batch that has not answered yet (a resumed run): wait for it
        else:
            self._pending.setdefault(call.group, {})[key] = call
            if node.name in self._parked:  # a call made after its attempt ended: next round
                self.check(node.parent)
        raise CallParked()

    def parked(self, node: Node) -> None:
        """``node``'s attempt ended parked (it is ``snoozed``, its slot given back): admitted
        again once its calls are answered; the round may be complete now."""
        if node.name in self._calling:  # some of its calls have not parked yet: once they have
            self._ending[node.name] = node
            return
        if not self._waits.get(node.name):
            self.readmit(node)  # answered while the attempt was ending
            return
        if node.name not in self._parked:
            self._parked[node.name] = node
            group = node.parent.name if node.parent is not None else node.name
            self._parked_in[group] = self._parked_in.get(group, 0) + 1
        self.check(node.parent)

    def check(self, group: Node | None) -> None:
        """Submit the group's round once every child still open is parked.

        Children parked with no call to submit and no batch running for them would wait
        forever: their calls fail instead (``_stuck``), never a silent hang."""
        if group is None or group.tally is None:
            return
        still_open = group.size - group.tally[0] - group.tally[1]
        waiting = self._parked_in.get(group.name, 0)
        if still_open > waiting:
            return
        self._flush(group.name)
        if waiting and not self._busy and not self.stopping and not _cancelling():
            self._stuck(group.name)

    def _stuck(self, group: str) -> None:
        """The group's parked children wait for calls that no batch will answer (a bug):
        each one's attempt fails, saying so, rather than the run waiting forever."""
        for node in [n for n in self._parked.values() if _group_of(n) == group]:
            keys = list(self._waits.get(node.name, ()))
            logger.error("step %r: parked for %d call(s) no batch holds", node.name, len(keys))
            error = BatonError(
                f"step {node.name!r}: {len(keys)} batched call(s) waiting for a provider batch, "
                "but no batch is pending or running for them (a baton_nb bug: please report "
                "it); the attempt fails rather than waiting forever"
            )
            for key in keys:
                self.failures[key] = error
                self.resolve(key)  # the node runs again; the call raises ``error``
            if self._parked.pop(node.name, None) is not None:  # it waited for no call at all
                self._parked_in[group] -= 1
                self.readmit(node)

    def launch(self, fn: Callable[..., Coroutine[Any, Any, None]], name: str, *args: Any) -> None:
        """Start a batch task (``submit_round``, ``follow``), counted while it runs: once
        none runs, every group with parked children is checked again (``check``)."""
        self._busy += 1
        self.spawn(self._counted, name, fn, args)

    async def _counted(self, fn: Callable[..., Coroutine[Any, Any, None]], args: Any) -> None:
        try:
            await fn(*args)
        finally:
            self._busy -= 1
        if not self._busy:  # (not when cancelled: the run is ending)
            groups = {_group_of(n): n.parent for n in self._parked.values()}
            for group in groups.values():
                self.check(group)

    def _flush(self, group: str) -> None:
        from ._batch_jobs import follow, submit_round

        for batch in self.batches.values():
            row = batch.row
            if row.step != group or not row.live or batch.followed:
                continue
            if any(r.call_key in self.known for r in batch.requests.values()):
                batch.followed = True  # a resumed run: its children wait for it
                self.launch(follow, f"batch {row.key}", self, batch)
        calls = self._pending.pop(group, None)
        if calls and not self.stopping:
            self.launch(submit_round, f"batch round {group}", self, list(calls.values()))

    # ── answers ───────────────────────────────────────────────────────────────

    def resolve(self, key: CallKey) -> None:
        """Call ``key`` is answered (or failed): its node runs again once all its are."""
        self.known.pop(key, None)
        step = key[0]
        waits = self._waits.get(step)
        if waits is None:
            return
        waits.discard(key)
        if waits:
            return
        del self._waits[step]
        node = self._parked.pop(step, None)
        if node is not None:
            group = node.parent.name if node.parent is not None else node.name
            self._parked_in[group] -= 1
            self.readmit(node)

    def fail(self, calls: list[ParkedCall], error: Exception) -> None:
        """These calls cannot be batched (or their batch failed): each child's attempt
        fails with ``error`` when it runs again."""
        for call in calls:
            self.failures[call.key] = error
            self.resolve(call.key)

    def again(self, call: ParkedCall) -> None:
        """A call its batch did not answer goes to the group's next round."""
        self._pending.setdefault(call.group, {})[call.key] = call

    @property
    def owner(self) -> str | None:
        """The run's lease owner: batch rows are written only while it holds the lease."""
        return self.calls.commit.owner

    def register(self, batch: LiveBatch) -> None:
        """A batch just stored: its calls now map to it."""
        self.batches[batch.row.key] = batch
        for request in batch.requests.values():
            self.mapped[request.call_key] = request
        self.announce.batch(batch.row)

    async def save(self, batch: ProviderBatchRow) -> None:
        batch.updated_at = utcnow()
        await self.store.update_provider_batch(batch, owner=self.owner)
        self.announce.batch(batch)

    # ── cancellation ──────────────────────────────────────────────────────────

    async def cancel_remote(self) -> None:
        """``run.cancel()``: ask the providers to stop the batches still running (what they
        answered stays retrievable: a resumed run stores it and asks the rest again)."""
        from ._batch_jobs import cancel_batch

        self.stopping = True
        for batch in list(self.batches.values()):
            if batch.row.state in (BatchState.PREPARED, BatchState.SUBMITTED, BatchState.RUNNING):
                try:
                    with anyio.fail_after(CANCEL_TIMEOUT):  # an unreachable provider: give up
                        await cancel_batch(self, batch)
                except Exception as exc:  # the run is cancelled either way; say what failed
                    logger.warning(
                        "could not cancel batch %s: %s", batch.row.key, describe_error(exc)
                    )


def _group_of(node: Node) -> str:
    return node.parent.name if node.parent is not None else node.name


def _cancelling() -> bool:
    """Whether this task is being cancelled (the run is ending: a parked child is not stuck)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop
        return False
    return task is not None and task.cancelling() > 0
