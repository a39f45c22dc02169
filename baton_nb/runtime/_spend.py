"""Spend less, never more (DESIGN §11): budget caps and the response cache around one call.

``Calls.complete`` hands a call that is not replayed to :meth:`Spend.complete`:

1. the response cache (opt-in): a request already answered in this database (same key:
   ``llm/_cache_key.py``) is answered from it, at $0, recorded as cached with the cost it
   saved;
2. the budgets (the run's, the step's): the call's worst case is reserved in the store,
   atomically against each cap (``SpendStore.reserve``), before anything is sent; a call
   that would cross a cap waits while calls of the run are in flight (their settlement
   may free enough) and tries again; with none in flight it is not sent, nor is any
   call after it, and the run stops (``cancelled``, resumable) with ``budget reached``
   (the answers of calls in flight are stored first: they are paid, never lost);
3. the call; its reservation is settled to its real cost when it answers (or fails), plus
   its worst case for each attempt that reached the provider with no answer saying what it
   cost (timed out, connection dropped, stream cut: ``llm/_transport.py``'s ``SENDING``);
   a call cancelled on its way (a step's own timeout, a quorum met) is settled too: at its
   worst case for each attempt that may have gone out, released if none did;
4. its answer cached (when the cache is on).

The worst case: the prompt's tokens (tiktoken over the text of the body the adapter sends,
media removed: system parts, tools, response format and ``extra=`` fields included, plus a
20 % margin for other tokenizers; each image at the most its provider documents for one;
a PDF, audio, video, a non-image data: URL, a server-side tool or content stored at the
provider refused, as unbounded) at the input
rate, no cached-input discount (at the cache-write rate when the body asks Anthropic for a
cache write), plus the output cap of the body the adapter sends (Anthropic: its default
``max_tokens`` plus a thinking budget when none is given) times the choices asked for
(``n``, ``candidateCount``) at the output rate, per-request fees included
(``llm/_ceiling.py``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn

import anyio

from .._errors import BudgetReached, OutputValidationError
from .._graph import GraphSpec
from .._money import add_money, fmt_money, normalize_money, sum_money, times_money
from .._run import Run
from .._runview import SpendState, budget_resume_line
from ..store import RUN_SCOPE, BudgetRow, CacheEntry, ExecutionStore, as_held, utcnow
from ._commit import GroupCommit
from ._node import Node
from ._spend_shared import SharedBudgets
from ._worst_case import worst_case

if TYPE_CHECKING:
    from ..llm import Completion, LLMRequest
    from ..llm._cache_key import CacheKey

# Records what a call's attempts without an answer count at: (node, call index, model, cost)
Unanswered = Callable[[Node, int, str, Decimal], None]

__all__ = ["InFlight", "Spend", "budget_stop", "join_spend", "open_spend", "spent_by_scope"]

logger = logging.getLogger("baton_nb.runtime")


def spent_by_scope(run: Run) -> dict[str, Decimal]:
    """What the run's paid calls cost: the run's total (scope ``""``) and per step (a
    fan-out child's calls count for its step)."""
    totals: dict[str, list[Decimal]] = {}
    for call in run.calls:
        if call.replayed or call.cached or call.cost is None:
            continue
        step = call.step.split("[", 1)[0]
        totals.setdefault(RUN_SCOPE, []).append(call.cost)
        totals.setdefault(step, []).append(call.cost)
    return {scope: sum_money(costs) for scope, costs in totals.items()}


async def budget_stop(spend: Spend | None) -> str | None:
    """Why a budget stopped the run (``run.budget_stop``): this process's refusal, or (a
    run on workers, where a worker's call was refused) the reason its budget's row keeps,
    read when the run was cancelled."""
    if spend is None:
        return None
    run = spend.run
    if run.budget_stop is None and run.cancel_requested:
        try:
            rows = await spend.store.get_budgets(run.id)
        except Exception:  # only words for the messages: the run's end is written anyway
            logger.debug("run %s: could not read its budgets' reasons", run.id, exc_info=True)
            return None
        run.budget_stop = next((row.reason for row in rows if row.reason), None)
    return run.budget_stop


async def open_spend(
    graph: GraphSpec, store: ExecutionStore, run: Run, commit: GroupCommit, *, resumed: bool
) -> Spend | None:
    """The run's budgets and cache for this execution, or None when it has neither."""
    from ..llm._config import cache_default

    cache = graph.cache if graph.cache is not None else cache_default()
    caps: dict[str, Decimal | None] = {RUN_SCOPE: graph.budget}
    caps.update({n: s.budget for n, s in graph.steps.items() if s.budget is not None})
    rows: list[BudgetRow] = []
    if resumed or any(cap is not None for cap in caps.values()):
        rows = await store.open_budgets(run.id, caps, spent_by_scope(run))
    if not rows and not cache:
        return None
    warn_batch_bypass(graph, budgets=bool(rows))
    return Spend(graph, store, run, commit, rows, cache=cache)


def warn_batch_bypass(graph: GraphSpec, *, budgets: bool) -> None:
    """One line as the run starts for each ``batch=True`` step of a run with a budget: its
    calls go to provider batches, which the budgets do not hold (docs/spend_less.md
    "Limits"); said, not left for the user to find on the bill."""
    if not budgets:
        return
    for name, step in graph.steps.items():
        if step.batch:
            logger.warning(
                "workflow %r: step %r is batch=True: its calls are not held to the budget "
                "(docs/spend_less.md, Limits)",
                graph.name,
                name,
            )


async def join_spend(
    graph: GraphSpec,
    store: ExecutionStore,
    run: Run,
    commit: GroupCommit,
    halt: Callable[[], Awaitable[None]],
) -> Spend | None:
    """A worker's share of a submitted run's budgets and cache (DESIGN §10): the budget
    rows the run's coordinator opened (read, never reset here: other workers hold
    reservations in them). ``halt`` stops the run when a cap refuses a call."""
    from ..llm._config import cache_default

    cache = graph.cache if graph.cache is not None else cache_default()
    rows = await store.get_budgets(run.id)
    if not rows and not cache:
        return None
    spend = Spend(graph, store, run, commit, rows, cache=cache)
    spend.on_reached = lambda: None
    spend.halt = halt
    spend.shared = SharedBudgets(store, run.id)
    return spend


class Spend:
    """The budgets and the response cache of one execution of a run."""

    def __init__(
        self,
        graph: GraphSpec,
        store: ExecutionStore,
        run: Run,
        commit: GroupCommit,
        rows: list[BudgetRow],
        *,
        cache: bool,
    ) -> None:
        self.graph = graph
        self.store = store
        self.run = run
        self.commit = commit
        self.cache = cache
        self.flight = InFlight()
        self._stopped: str | None = None  # why no call is sent any more (a cap refused one)
        self._declared = anyio.Event()  # set once that reason is stored (``_stopped_by``)
        self.scopes = {row.scope for row in rows}
        run.spend = None
        run.budget_stop = None  # this execution's budgets (as opened: no reason yet)
        for row in rows:
            if row.scope == RUN_SCOPE:
                run.spend = SpendState(row.cap, row.spent, row.reserved)
        self.on_reached: Callable[[], None] = run.cancel
        # On a worker: ask the run's coordinator to cancel the run, and wait for it.
        self.halt: Callable[[], Awaitable[None]] | None = None
        self.shared: SharedBudgets | None = None  # on workers: the others' calls in flight

    async def complete(
        self, node: Node, request: LLMRequest, index: int, unanswered: Unanswered
    ) -> Completion:
        """Answer ``request`` (call ``index`` of ``node``) from the cache, or send it within
        the budgets. What its attempts without an answer are counted at goes to
        ``unanswered`` (to be recorded: a resume's budget counts it again)."""
        from ..llm._cache_flight import single_flight
        from ..llm._cache_key import cache_key

        if not self.caches(request):
            return await self._send(node, request, None, index, unanswered)
        key = cache_key(request)
        async with single_flight(self.store.url, key.digest):  # identical calls: paid once
            with anyio.CancelScope(shield=True):
                entry = await self.store.cache_get(key.digest)
            if entry is not None:
                return await self._hit(entry, request)
            return await self._send(node, request, key, index, unanswered)

    async def _send(
        self,
        node: Node,
        request: LLMRequest,
        key: CacheKey | None,
        index: int,
        unanswered: Unanswered,
    ) -> Completion:
        """Send ``request`` within the budgets; keep its answer under ``key`` (if any)."""
        from ..llm import Completion, complete

        scopes = [s for s in (RUN_SCOPE, node.spec.name) if s in self.scopes]
        if not scopes:  # no budget: nothing reserved, marked or settled
            completion = await complete(request)
            if key is not None:
                await self._put(key, request, completion)
            return completion
        from ..llm._transport import ANSWERED, OUT, SENDING, Attempts

        worst = await self._reserve(node, scopes, request)
        held = worst  # one worst case for each attempt that may be billed

        async def cover(attempts: int) -> None:
            # A retry after attempts that stayed OUT (each counts at its worst): one more
            # worst case reserved before it goes, or it is not sent and the run stops.
            nonlocal held
            while held < times_money(worst, attempts):
                held = add_money(held, await self._reserve(node, scopes, request, retry=True))

        # One mark per attempt that may have reached the provider: OUT while its bill is
        # unknown (in flight, timed out, connection dropped, stream cut), ANSWERED once the
        # provider answered it (counted at the call's cost), REFUSED for an error status.
        attempts = Attempts(cover)
        sent = attempts.marks
        not_covered: str | None = None
        try:
            marker = SENDING.set(attempts)
            try:
                completion = await complete(request)
            except Exception as exc:
                paid = exc.completion if isinstance(exc, OutputValidationError) else None
                cost = paid.cost if isinstance(paid, Completion) else None
                lost = _unanswered(node, index, request, worst, sent.count(OUT), unanswered)
                await self._settle(scopes, held, cost, lost)
                if not isinstance(exc, _RetryNotCovered):
                    raise
                not_covered = exc.reason  # a retry refused: the run stops once this landed
            except BaseException:  # cancelled: never left reserved (_settle is shielded)
                # each attempt that went out with no answer paid at its worst, and an answer
                # the cancel lost before its cost was counted; an error status is unbilled
                gone = sent.count(OUT) + (bool(sent) and sent[-1] == ANSWERED)
                lost = _unanswered(node, index, request, worst, gone, unanswered)
                await self._settle(scopes, held, None, lost)
                raise
            finally:
                SENDING.reset(marker)
            if not_covered is None:
                lost = _unanswered(node, index, request, worst, sent.count(OUT), unanswered)
                await self._settle(scopes, held, completion.cost, lost)
                if key is not None:
                    await self._put(key, request, completion)
        finally:
            # No await after this: the caller records the answer before anyone waiting
            # for the calls in flight (``_stop``) runs again.
            self.flight.landed()
        if not_covered is not None:
            await self._stop(not_covered)  # after landing: it waits for the others
        return completion

    def caches(self, request: LLMRequest) -> bool:
        """Whether ``request`` is answered from (and kept in) the response cache."""
        return self.cache if request.cache is None else request.cache

    async def cached(self, request: LLMRequest) -> Completion | None:
        """``request``'s answer from the response cache ($0), or None: a call of a
        ``batch=True`` step asks before it goes to a provider batch."""
        from ..llm._cache_key import cache_key

        if not self.caches(request):
            return None
        key = cache_key(request)
        with anyio.CancelScope(shield=True):
            entry = await self.store.cache_get(key.digest)
        return None if entry is None else await self._hit(entry, request)

    async def keep(self, request: LLMRequest, completion: Completion) -> None:
        """Keep a paid answer that did not come through ``complete`` (a provider batch's)
        in the response cache, if ``request`` is cached."""
        from ..llm._cache_key import cache_key

        if self.caches(request):
            await self._put(cache_key(request), request, completion)

    async def _put(self, key: CacheKey, request: LLMRequest, completion: Completion) -> None:
        entry = CacheEntry(
            key.digest,
            request.model,
            key.canonical,
            completion.to_json(),
            completion.cost,
            utcnow(),
        )
        with anyio.CancelScope(shield=True):  # a paid answer is kept
            await self.store.cache_put(entry)

    async def _hit(self, entry: CacheEntry, request: LLMRequest) -> Completion:
        from ..llm import Completion
        from ..llm._output import awith_parsed

        stored = Completion.from_json(entry.response)
        completion = replace(
            stored,
            model=request.model,
            cost=Decimal(0),
            latency_ms=0.0,
            replayed=False,
            cached=True,
            saved=entry.cost,
        )
        return await awith_parsed(completion, request)

    # ── budgets ───────────────────────────────────────────────────────────────

    async def _reserve(
        self, node: Node, scopes: list[str], request: LLMRequest, *, retry: bool = False
    ) -> Decimal:
        """Reserve ``request``'s worst case in ``scopes``: the amount held, as the store
        holds it (rounded up to its unit: what is reserved and released adds up exactly).
        Refused while other calls of this execution hold reservations, it waits for its
        turn (a call settling frees what it did not spend) and tries again; refused with
        none held, the run stops.

        A ``retry`` (one more worst case for a call that holds one already, before an
        attempt after one that got no answer) never waits: it holds the provider's
        concurrency slot (``llm.Limit``) and the calls it would wait for may be waiting for
        that slot. Refused, it raises ``_RetryNotCovered`` (the call settles, then the run
        stops, resumable) unless a call settled meanwhile (then it asks again)."""
        worst, counted = await worst_case(node, request, self.graph.allow_unpriced)
        worst = as_held(worst)
        flight = self.flight
        again = True  # on workers: the store asked once more when nothing is held
        while True:
            if self._stopped is not None:
                if retry:
                    raise _RetryNotCovered(self._stopped)
                await self._stop(self._stopped)
            landings = flight.landings
            flight.reserving += 1  # reserved in the store before it counts as held
            try:
                with anyio.CancelScope(shield=True):  # a transaction is never cut halfway
                    refused = await self.store.reserve(self.run.id, scopes, worst)
            finally:
                flight.reserving -= 1
            if refused is None:
                flight.holding += not retry  # a call holds once, however many worst cases
                flight.wake_one()  # there may be room for the next one waiting too
                view = self.run.spend
                if view is not None and RUN_SCOPE in scopes:
                    view.reserved = normalize_money(add_money(view.reserved, worst))
                return worst
            if flight.landings != landings:
                continue  # a call settled meanwhile: what it released may be enough
            if retry:
                break
            if not (flight.holding or flight.reserving):
                # on workers: while other processes hold reservations (None: in process)
                found = self.shared and await self.shared.wait(flight, scopes, again=again)
                again = False
                if isinstance(found, str):  # another process stopped the run
                    self._stopped_by(found)
                    await self._stop(found)
                if not found:
                    break
                continue
            await flight.turn()
        if self._stopped is None:
            self._stopped = f"budget reached (step {node.name!r}, {request.model})"
            try:  # the budget's figures in the reason; whatever happens, no call waits on
                with anyio.CancelScope(shield=True):  # stored before any call stops the run
                    self._stopped = await self._refusal(
                        node, refused, worst, request, counted, retry=retry
                    )
                    await self.store.budget_reached(self.run.id, refused, self._stopped)
            finally:
                self._stopped_by(self._stopped)
        if retry:
            raise _RetryNotCovered(self._stopped)
        await self._stop(self._stopped)

    def _stopped_by(self, reason: str) -> None:
        self._stopped = self.run.budget_stop = reason  # no call is sent any more
        if self.run.spend is not None:
            self.run.spend.reason = reason
        self.flight.wake_all()
        self._declared.set()

    async def _stop(self, reason: str) -> NoReturn:
        """No more calls: wait for those in flight to answer and be stored (they are paid),
        then stop the run (cancelled, resumable); on workers, every process's first."""
        await self._declared.wait()  # the reason stored (by the call that was refused)
        await self.flight.drained()
        await self.commit.commit()
        if self.shared is not None:
            await self.shared.landed()
        self.on_reached()  # run.cancel(): the run stops, cancelled and resumable
        if self.halt is not None:
            await self.halt()
        await anyio.lowlevel.checkpoint()  # the run's cancellation reaches this step here
        raise BudgetReached(reason)

    async def _settle(
        self, scopes: list[str], held: Decimal, cost: Decimal | None, lost: Decimal
    ) -> None:
        """Release ``held``; spend ``cost`` (a known answer's) and ``lost`` (attempts with no
        answer, at their worst)."""
        paid = add_money(cost if cost is not None else Decimal(0), lost) if lost else cost
        paid = paid if paid is not None else Decimal(0)
        with anyio.CancelScope(shield=True):  # a reservation is never left behind
            await self.store.settle(self.run.id, scopes, held, paid)
        view = self.run.spend
        if view is not None and RUN_SCOPE in scopes:
            view.reserved = normalize_money(add_money(view.reserved, held.copy_negate()))
            view.spent = normalize_money(add_money(view.spent, paid))

    async def _refusal(
        self,
        node: Node,
        scope: str,
        worst: Decimal,
        request: LLMRequest,
        counted: str,
        *,
        retry: bool = False,
    ) -> str:
        rows = {row.scope: row for row in await self.store.get_budgets(self.run.id)}
        where = (self.run.id, node.name, scope)
        return _refusal_text(where, rows.get(scope), worst, request.model, counted, retry)


def _refusal_text(
    where: tuple[str, str, str],
    row: BudgetRow | None,
    worst: Decimal,
    model: str,
    counted: str,
    retry: bool,
) -> str:
    """Why a call was refused: ``where`` is (run id, step, budget scope), ``row`` the
    budget's figures as stored."""
    run_id, step, scope = where
    what = "the run's budget" if scope == RUN_SCOPE else f"the budget of step {scope!r}"
    state = ""
    if row is not None:
        state = (
            f" (${fmt_money(row.spent)} spent, ${fmt_money(row.reserved)} reserved "
            f"of ${fmt_money(row.cap)})"
        )
    call = "a retry of a call" if retry else "a call"
    why = " (an earlier attempt got no answer: it counts at its worst)" if retry else ""
    return (
        f"budget reached: {what}{state} leaves no room for {call} of {model} "
        f"that may cost up to ${fmt_money(worst)} ({counted}; step {step!r}); it "
        f"was not sent{why}. " + budget_resume_line(run_id, None if scope == RUN_SCOPE else scope)
    )


class _RetryNotCovered(Exception):
    """A retry's worst case did not fit the budget: the call stops unsent, settled, and
    then the run stops (``Spend._send``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unanswered(
    node: Node,
    index: int,
    request: LLMRequest,
    worst: Decimal,
    attempts: int,
    unanswered: Unanswered,
) -> Decimal:
    """What a call's ``attempts`` that reached the provider with no answer saying what they
    cost are counted at (``worst`` each: the provider may bill them), handed to
    ``unanswered`` to be recorded with the run's calls (a resume counts it again)."""
    if not attempts:
        return Decimal(0)
    cost = normalize_money(times_money(worst, attempts))
    if cost:
        unanswered(node, index, request.model, cost)
    return cost


class InFlight:
    """An execution's calls that hold a reservation, and the calls waiting for room."""

    def __init__(self) -> None:
        self.holding = 0  # calls reserved and not settled yet
        self.reserving = 0  # reservations asked of the store, not answered yet
        self.landings = 0  # calls settled so far
        self.watching = False  # one refused call reads the rows (``SharedBudgets.wait``)
        self._waiting: deque[anyio.Event] = deque()
        self._landed: anyio.Event | None = None  # set when a call settles

    def landed(self) -> None:
        """A call settled: the first call waiting for room tries again."""
        self.holding -= 1
        self.landings += 1
        if self._landed is not None:
            self._landed.set()
            self._landed = None
        self.wake_one()

    def wake_one(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.is_set():
                turn.set()
                return

    def wake_all(self) -> None:
        while self._waiting:
            self._waiting.popleft().set()

    async def turn(self) -> None:
        """Wait until ``wake_one`` picks this call (FIFO) or ``wake_all``."""
        turn = anyio.Event()
        self._waiting.append(turn)
        try:
            await turn.wait()
        finally:
            if not turn.is_set():  # cancelled while waiting: never picked
                self._waiting.remove(turn)

    async def drained(self) -> None:
        """Until no call holds a reservation."""
        while self.holding:
            if self._landed is None:
                self._landed = anyio.Event()
            await self._landed.wait()
