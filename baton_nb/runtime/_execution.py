"""One execution of a run: readiness counters, concurrency, retries, cascade, group commit.

Every state change happens first in memory (the scheduler is the only writer of its
run) and is then committed by a single writer task in batches ("group commit"). A step's
result, its ``completed`` state and its dependents' counters go out in one transaction,
and dependents start only after that transaction committed: a crash never leaves a
dependent running on a result that is not stored.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
import numbers
import reprlib
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import nullcontext
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .. import _jsonutil
from .._errors import ProviderError, ResultNotSerializable, RunLocked, StorageError
from .._graph import GraphSpec
from .._outcomes import Discard, Snooze
from .._run import FAILED_STATES, TERMINAL_STATES, CallRecord, Run
from ..events import (
    StepUpdated,
    WorkflowFinished,
    has_subscribers,
    publish,
    topic_all,
    topic_workflow,
)
from ..store import Store, WriteBatch, utcnow
from ._context import Context
from ._node import Node, child_info, gc_paused, new_child_rows

if TYPE_CHECKING:
    from ..llm import Completion, LLMRequest

__all__ = ["Execution", "active_run", "active_runs"]

_ACTIVE: dict[str, Run] = {}


def active_run(run_id: str) -> Run | None:
    """The live Run object of a run executing in this process, if any."""
    return _ACTIVE.get(run_id)


def active_runs() -> list[Run]:
    """Runs executing in this process right now."""
    return list(_ACTIVE.values())


logger = logging.getLogger("baton_nb.runtime")
Outcome = tuple[str, Any, Any]  # (kind, value, detail)
_SCALARS = (str, int, float, bool, type(None))
LAZY_FLUSH = 0.05  # seconds a write nobody waits for may wait for company


class Execution:
    """Runs the nodes of one run to the end (or to cancellation)."""

    def __init__(
        self,
        graph: GraphSpec,
        store: Store,
        run: Run,
        nodes: dict[str, Node],
        *,
        owner: str,
        concurrency: int,
        models: dict[str, str],
        limits: dict[str, int],
        lease_ttl: float,
        resumed: bool,
    ) -> None:
        self.graph = graph
        self.store = store
        self.run = run
        self.nodes = nodes
        self.owner = owner
        self.models = models
        self.lease_ttl = lease_ttl
        self.resumed = resumed
        # Concurrency slots, FIFO. A step's task is spawned only once it holds its slots, so
        # a wide fan-out keeps nodes (not parked tasks) in the queues: per waiting step, no
        # task, coroutine, cancel scope, limiter waiter or event that would outlive the
        # GC's young generations.
        self._free = concurrency
        self._waiting: deque[Node] = deque()  # hold their key slot (if any), wait for one
        self._key_limits = limits
        self._key_free: dict[str, int] = {}
        self._key_waiting: dict[str, deque[Node]] = {}
        # Settled nodes whose commit the writer has not done yet: (touched, ready, callbacks)
        self._settling: list[tuple[list[Node], list[Node], list[tuple[Node, str, str]]]] = []
        self._context = contextvars.copy_context()
        self._topics = (topic_all(), topic_workflow(run.id))
        self._dirty: dict[int, Node] = {}
        self._pending = WriteBatch()
        self._dirt = anyio.Event()  # something to write
        self._urgent = anyio.Event()  # somebody waits for it to be committed
        self._flush_done = anyio.Event()
        self._settled = anyio.Event()
        self._stopping = anyio.Event()  # the run settled: writer and heartbeat return
        self._helpers = 0  # writer and heartbeat not returned yet
        self._helpers_done = anyio.Event()
        self._unsettled = sum(1 for n in nodes.values() if n.state not in TERMINAL_STATES)
        self._tg: TaskGroup | None = None
        self._storage_error: BaseException | None = None
        self._lease_lost = False
        self._cancelled = False
        self._loop_thread = threading.get_ident()
        self._token: Any = None

    # ── the whole execution ───────────────────────────────────────────────────

    async def execute(self) -> Run:
        run = self.run
        run.status = "running"
        run.started_at = run.started_at or utcnow()
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._context = contextvars.copy_context()  # each step's task starts from a copy
        run._canceller = self._request_cancel
        _ACTIVE[run.id] = run
        interrupted = False
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._helpers = 2
                tg.start_soon(self._writer)
                tg.start_soon(self._heartbeat)
                self._start_ready()
                if self._unsettled == 0:
                    self._settled.set()
                await self._settled.wait()
                await self._stop_helpers()
                tg.cancel_scope.cancel()  # steps still running that a quorum made unneeded
        except BaseException as exc:
            interrupted = True
            real = unwrap_group(exc)
            if real is not exc and not isinstance(real, anyio.get_cancelled_exc_class()):
                raise real from None
            raise
        finally:
            run._canceller = None
            _ACTIVE.pop(run.id, None)
            with anyio.CancelScope(shield=True):
                await self._finish(cancelled=interrupted or self._cancelled)
        return run

    def _start_ready(self) -> None:
        for node in self.nodes.values():
            if node.kind != "child" and node.state == "pending" and node.remaining == 0:
                self._launch(node)

    def _request_cancel(self) -> None:
        """Cancel from the event loop's thread or any other (a widget button, a signal)."""
        self._cancelled = True
        tg = self._tg
        if tg is None:
            return
        if threading.get_ident() == self._loop_thread:
            tg.cancel_scope.cancel()
        else:
            anyio.from_thread.run_sync(tg.cancel_scope.cancel, token=self._token)

    async def _finish(self, *, cancelled: bool) -> None:
        now = utcnow()
        for node in self.nodes.values():
            if node.state in ("executing", "retryable", "snoozed"):
                node.state, node.error, node.finished_at = "cancelled", "run cancelled", now
                self._mark(node)
                self._publish(node)
        failed = [
            n.name
            for n in self.nodes.values()
            if n.state in FAILED_STATES and not (n.parent and n.parent.state == "completed")
        ]
        pending = any(n.state not in TERMINAL_STATES for n in self.nodes.values())
        if cancelled or (pending and not failed):
            outcome = "cancelled"
        else:
            outcome = "failed" if failed or pending else "completed"
        run = self.run
        run.status, run.failed_steps, run.finished_at = outcome, failed, now
        self._pending.run = {
            "id": run.id,
            "status": outcome,
            "failed_steps": _jsonutil.dumps(failed),
            "finished_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if self._storage_error is None and not self._lease_lost:
            await self.store.write(self._take_batch())
        publish(
            WorkflowFinished(run.id, self.graph.name, outcome, list(failed), now), *self._topics
        )

    # ── group commit ──────────────────────────────────────────────────────────

    def _mark(self, node: Node) -> None:
        node.sync_info()
        self._dirty[node.id] = node
        self._dirt.set()

    def _take_batch(self) -> WriteBatch:
        batch = self._pending
        batch.run_id = self.run.id
        now = utcnow()  # one updated_at for the rows that commit together
        batch.nodes = [n.row(now) for n in self._dirty.values()]
        self._dirty = {}
        self._pending = WriteBatch()
        return batch

    async def _stop_helpers(self) -> None:
        """Let the writer and the heartbeat return instead of cancelling them.

        A cancelled task's CancelledError keeps its frames, and with them this execution
        and every node, result and step spec of the run, in a reference cycle: garbage
        that only a full (generation 2) collection frees, tens of ms on a big heap. What
        is still marked is written by ``_finish``, as before.
        """
        self._stopping.set()
        self._dirt.set()
        self._urgent.set()
        if self._helpers:
            await self._helpers_done.wait()

    def _helper_done(self) -> None:
        self._helpers -= 1
        if self._helpers == 0:
            self._helpers_done.set()

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        finally:
            self._helper_done()

    async def _write_loop(self) -> None:
        async with self.store.writer_connection() as conn:
            while True:
                await self._dirt.wait()
                if self._stopping.is_set():
                    return
                # Writes nobody waits for (a step started) ride along with the next commit
                # somebody needs, or go out after LAZY_FLUSH: half the transactions in chains.
                if self._urgent.is_set():
                    await anyio.lowlevel.checkpoint()  # what is ready now joins this commit
                else:
                    with anyio.move_on_after(LAZY_FLUSH):
                        await self._urgent.wait()
                self._dirt, self._urgent = anyio.Event(), anyio.Event()
                done, self._flush_done = self._flush_done, anyio.Event()
                settling, self._settling = self._settling, []
                batch = self._take_batch()
                try:
                    with anyio.CancelScope(shield=True):
                        if batch:
                            await self.store.write(batch, conn)
                except Exception as exc:
                    self._storage_error = exc
                    done.set()
                    raise StorageError(f"could not save run {self.run.id}: {exc}") from exc
                done.set()
                for touched, ready, callbacks in settling:
                    self._settled_after_commit(touched, ready, callbacks)

    async def _commit(self) -> None:
        """Wait until everything marked so far is committed."""
        done = self._flush_done
        self._dirt.set()
        self._urgent.set()
        await done.wait()
        if self._storage_error is not None:
            raise StorageError(f"could not save run {self.run.id}: {self._storage_error}")

    async def _heartbeat(self) -> None:
        try:
            await self._renew_lease()
        finally:
            self._helper_done()

    async def _renew_lease(self) -> None:
        stopping = self._stopping
        while True:
            with anyio.move_on_after(self.lease_ttl / 3):
                await stopping.wait()
            if stopping.is_set():
                return
            if not await self.store.renew_lease(self.run.id, self.owner, self.lease_ttl):
                self._lease_lost = True
                raise RunLocked(
                    f"run {self.run.id} lost its lease (another process took it over); "
                    "this execution stopped"
                )

    # ── launching ─────────────────────────────────────────────────────────────

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], node: Node, *args: Any) -> None:
        """Start ``fn(node, *args)`` in the run's task group (named after the node)."""
        tg = self._tg
        assert tg is not None
        if tg.cancel_scope.cancel_called:
            return  # the run is being cancelled: what has not started stays pending
        # In a copy of the run's context, not of whichever task happens to launch it.
        self._context.run(partial(tg.start_soon, fn, node, *args, name=f"baton:{node.name}"))

    def _launch(self, node: Node) -> None:
        if node.kind == "group":
            self._spawn(self._run_group, node)
            return
        key = node.spec.concurrency_key
        if key is not None:
            free = self._key_free.get(key)
            if free is None:
                free = self._key_limits.get(key, 1)
            if free <= 0:
                self._key_waiting.setdefault(key, deque()).append(node)
                return
            self._key_free[key] = free - 1
        self._enqueue(node)

    def _enqueue(self, node: Node) -> None:
        """Start ``node`` (holding its key slot, if any) when a concurrency slot is free."""
        if self._free > 0:
            self._free -= 1
            self._spawn(self._run_step, node)
        else:
            self._waiting.append(node)

    def _release(self, node: Node) -> None:
        """``node``'s attempt ended: hand its slots to the next waiting steps, FIFO."""
        waiting = self._waiting
        while waiting:
            nxt = waiting.popleft()
            if nxt.state in TERMINAL_STATES:  # cancelled while it waited (e.g. a quorum met)
                self._release_key(nxt)
                continue
            self._spawn(self._run_step, nxt)  # the slot passes to it
            break
        else:
            self._free += 1
        self._release_key(node)

    def _release_key(self, node: Node) -> None:
        key = node.spec.concurrency_key
        if key is None:
            return
        waiting = self._key_waiting.get(key)
        while waiting:
            nxt = waiting.popleft()
            if nxt.state not in TERMINAL_STATES:
                self._enqueue(nxt)  # the key slot passes to it
                return
        self._key_free[key] += 1

    async def _run_step(self, node: Node) -> None:
        """One attempt of a step that holds its slots; a retry or snooze queues it again."""
        try:
            if node.state in TERMINAL_STATES:
                return  # cancelled before it started (e.g. a quorum was met)
            node.attempt += 1
            self._transition(node, "executing", error=node.error)
            kind, value, detail = await self._invoke(node)
        finally:
            self._release(node)
        if kind == "completed":
            self._settle(node, "completed", value=value, encoded=detail)
            return
        if kind == "snooze":
            node.attempt -= 1  # a snooze does not use an attempt
            self._transition(node, "snoozed")
            await anyio.sleep(value)
            self._launch(node)
            return
        if kind == "error" and node.attempt < node.max_attempts:
            delay, problem = next_attempt_delay(node, value, detail)
            detail = None  # the exception and its frames: not kept through the wait
            if problem is not None:  # a broken backoff: no retry can be scheduled
                self._settle(node, "discarded", error=problem)
                return
            self._transition(node, "retryable", error=value)
            await anyio.sleep(delay)
            self._launch(node)
            return
        self._settle(node, "discarded", error=value)

    def _transition(self, node: Node, state: str, *, error: str | None = None) -> None:
        node.state = state
        node.error = error
        if state == "executing" and node.started_at is None:
            node.started_at = utcnow()
        self._mark(node)
        self._publish(node)

    async def _invoke(self, node: Node) -> Outcome:
        spec = node.spec
        ctx = Context(self, node, self._dep_results(node), self._model_for(node))
        kwargs = {d: ctx.results.get(d) for d in spec.kwarg_deps}
        args = (ctx,) if spec.wants_ctx else ()
        try:
            with anyio.fail_after(spec.timeout) if spec.timeout else _NO_TIMEOUT:
                if spec.is_async:
                    value = await spec.fn(*args, **kwargs)
                else:
                    call = partial(spec.fn, *args, **kwargs)
                    value = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except Discard as exc:
            return ("discard", exc.reason, None)
        except TimeoutError as exc:
            if spec.timeout is not None and not str(exc):
                return ("error", f"TimeoutError: attempt timed out after {spec.timeout:g}s", exc)
            return ("error", _describe(exc), exc)
        except Exception as exc:
            return ("error", _describe(exc), exc)  # the exception: its retry hint, if any
        if isinstance(value, Snooze):
            return ("snooze", value.seconds, None)
        if isinstance(value, Discard):
            return ("discard", value.reason, None)
        try:
            encoded = _jsonutil.dumps_result(node.name, value)
        except ResultNotSerializable as exc:
            return ("discard", f"ResultNotSerializable: {exc}", None)
        return ("completed", value, encoded)

    def _dep_results(self, node: Node) -> dict[str, Any]:
        owner = node.parent if node.parent is not None else node
        results = {}
        for dep in owner.deps:
            dep_node = self.nodes[dep]
            if dep_node.state == "completed":
                results[dep] = dep_node.result
        return results

    def _model_for(self, node: Node) -> str | None:
        if node.kind == "child" and node.model:
            return node.model
        return self.models.get(node.spec.name) or node.model

    # ── fan-out groups ────────────────────────────────────────────────────────

    async def _run_group(self, group: Node) -> None:
        self._transition(group, "executing")
        if group.spec.map_over is not None:
            problem = await self._expand_map(group)
            if problem is not None:
                self._settle(group, "discarded", error=problem)
                return
        todo = [c for c in group.children if c.state != "completed"]
        for child in todo:
            if (child.remaining, child.state, child.attempt, child.error) == _READY_CHILD:
                continue  # a map child just inserted ready: nothing to write again
            child.remaining = 0
            child.state, child.attempt, child.error = "pending", 0, None
            self._mark(child)
        group.tally = [len(group.children) - len(todo), 0]
        verdict = self._group_verdict(group)
        if verdict is not None:
            self._settle(group, verdict[0], value=verdict[1], encoded=verdict[2], error=verdict[3])
        for child in todo:
            if child.state == "pending":
                self._launch(child)

    async def _expand_map(self, group: Node) -> str | None:
        """Create (or, on resume, match) one child per item of the ``map_over`` result;
        an error message instead if the items cannot be mapped. Linear in the items."""
        spec = group.spec
        assert spec.map_over is not None
        source = self.nodes[spec.map_over]
        if source.state != "completed":
            return f"map_over={spec.map_over!r}: that step did not complete"
        items = source.result
        if not isinstance(items, list):
            return f"map_over={spec.map_over!r} needs a list result, got {type(items).__name__}"
        names = map_child_names(group.name, spec.map_over, spec.map_key, items)
        if isinstance(names, str):
            return names
        existing = {c.name: c for c in group.children}
        new = [(i, name) for i, name in enumerate(names) if name not in existing]
        with gc_paused():
            new_rows = new_child_rows(self.run.id, spec, group.name, new)
        ids = await self.store.insert_nodes(new_rows)
        with gc_paused():
            for row in new_rows:
                row["id"] = ids[row["step"]]
                info = child_info(row)
                child = Node(row, spec, info)
                child.parent = group
                self.nodes[child.name] = child
                self.run.steps[child.name] = info
                existing[child.name] = child
        self._unsettled += len(new_rows)
        if len(existing) > len(names):
            self._cancel_stale_children(existing, set(names), spec.map_over)
        group.children = [existing[name] for name in names]
        group.info.children = names
        for index, child in enumerate(group.children):
            child.item, child.item_index = items[index], index
        return None

    def _cancel_stale_children(
        self, existing: dict[str, Node], names: set[str], source: str
    ) -> None:
        """Children of an earlier execution whose item's key is gone (map_key or the data
        changed before a resume): settled, so the run does not wait for them."""
        for name, stale in existing.items():
            if name not in names and stale.state not in TERMINAL_STATES:
                stale.state, stale.finished_at = "cancelled", utcnow()
                stale.error = f"no longer an item of map_over={source!r}"
                self._unsettled -= 1
                self._mark(stale)

    def _group_verdict(self, group: Node) -> tuple[str, Any, str | None, str | None] | None:
        children = group.children
        total = len(children)
        quorum = min(group.spec.quorum or total, total)
        if group.tally is not None:  # no scan of every child at every child's settling
            done_count, failed_count = group.tally
            if done_count < quorum and total - failed_count >= quorum:
                return None
        done = [c for c in children if c.state == "completed"]
        failed = [c for c in children if c.state in FAILED_STATES]
        if len(done) >= quorum:
            if group.spec.models:
                value: Any = {c.model: c.result for c in children if c.state == "completed"}
            else:
                value = [c.result for c in children if c.state == "completed"]
            return ("completed", value, _jsonutil.dumps(value), None)
        if total - len(failed) < quorum:
            state = "discarded" if any(c.state == "discarded" for c in failed) else "cancelled"
            error = (
                f"quorum not reached: {len(done)} of {total} completed, {quorum} needed "
                f"(failed: {', '.join(c.name for c in failed)})"
            )
            return (state, None, None, error)
        return None

    # ── settling: terminal states, cascade, dependents ────────────────────────

    def _settle(
        self,
        node: Node,
        state: str,
        *,
        value: Any = None,
        encoded: str | None = None,
        error: str | None = None,
    ) -> None:
        """Make ``node`` terminal (and what cascades from it), to be committed next.

        The rest waits for that commit and is done by the writer right after it
        (``_settled_after_commit``): the step's task does not wait, it ends here.
        """
        touched: list[Node] = []
        ready: list[Node] = []
        callbacks: list[tuple[Node, str, str]] = []
        self._terminal(node, state, value, encoded, error, touched, ready, callbacks)
        if not touched:
            return  # already terminal: nothing new to commit or announce
        self._settling.append((touched, ready, callbacks))
        self._dirt.set()
        self._urgent.set()

    def _settled_after_commit(
        self, touched: list[Node], ready: list[Node], callbacks: list[tuple[Node, str, str]]
    ) -> None:
        """Announce committed terminal states and start the dependents they made ready."""
        for n in touched:
            self._publish(n)
        for n in ready:
            self._launch(n)
        if callbacks:
            self._spawn(self._run_callbacks, touched[0], callbacks, len(touched))
        else:
            self._count_settled(len(touched))

    async def _run_callbacks(
        self, _settled: Node, callbacks: list[tuple[Node, str, str]], count: int
    ) -> None:
        for dependent, kind, reason in callbacks:
            await self._run_callback(dependent, kind, reason)
        self._count_settled(count)

    def _count_settled(self, count: int) -> None:
        # Only now are these nodes settled: committed, announced, dependents launched.
        self._unsettled -= count
        if self._unsettled == 0:
            self._settled.set()

    def _terminal(
        self,
        node: Node,
        state: str,
        value: Any,
        encoded: str | None,
        error: str | None,
        touched: list[Node],
        ready: list[Node],
        callbacks: list[tuple[Node, str, str]],
    ) -> None:
        if node.state in TERMINAL_STATES:
            return
        node.state, node.error, node.finished_at = state, error, utcnow()
        tally = node.parent.tally if node.parent is not None else None
        if tally is not None:
            tally[0 if state == "completed" else 1] += 1
        if state == "completed":
            encoded = encoded or "null"
            if not isinstance(value, _SCALARS):
                # Downstream sees what a resumed run would read back: the stored JSON.
                value = _jsonutil.loads(encoded)
            node.set_result(value, encoded)
            self.run.results[node.name] = value
        self._mark(node)
        touched.append(node)
        if node.kind == "group":
            for child in node.children:
                # Not started, or waiting out a snooze or a retry backoff: not needed any
                # more (a waiting child wakes to find itself settled and does nothing).
                if child.state in _WAITING_STATES:
                    reason = (
                        f"not needed: quorum of {node.name!r} met"
                        if state == "completed"
                        else f"group {node.name!r} {state}"
                    )
                    self._terminal(
                        child, "cancelled", None, None, reason, touched, ready, callbacks
                    )
        if node.parent is not None and node.parent.state not in TERMINAL_STATES:
            verdict = self._group_verdict(node.parent)
            if verdict is not None:
                g_state, g_value, g_encoded, g_error = verdict
                self._terminal(
                    node.parent, g_state, g_value, g_encoded, g_error, touched, ready, callbacks
                )
        for dependent in node.dependents:
            if dependent.state in TERMINAL_STATES:
                continue
            if state == "completed" or self._ignores(dependent, state):
                dependent.remaining -= 1
                self._mark(dependent)
                if dependent.remaining == 0:
                    ready.append(dependent)
                continue
            reason = f"dependency {node.name!r} was {state}" + (f": {error}" if error else "")
            callbacks.append((dependent, state, reason))
            self._terminal(dependent, "cancelled", None, None, reason, touched, ready, callbacks)

    @staticmethod
    def _ignores(node: Node, dep_state: str) -> bool:
        if dep_state == "discarded":
            return node.spec.ignore_discarded
        return node.spec.ignore_cancelled

    async def _run_callback(self, node: Node, dep_state: str, reason: str) -> None:
        spec = node.spec
        callback = spec.on_dep_discarded if dep_state == "discarded" else spec.on_dep_cancelled
        if callback is None:
            return
        ctx = Context(self, node, self._dep_results(node), self._model_for(node))
        try:
            result = callback(reason, ctx)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_dep_%s callback of step %r raised", dep_state, node.name)

    # ── events ────────────────────────────────────────────────────────────────

    def _publish(self, node: Node) -> None:
        if not has_subscribers(*self._topics):
            return
        event = StepUpdated(
            workflow_id=self.run.id,
            workflow_label=self.graph.name,
            step_name=node.name,
            worker=node.spec.worker,
            state=node.state,
            job_id=node.id,
            attempt=node.attempt,
            has_result=node.info.has_result,
            error=node.error,
            timestamp=utcnow(),
            parent=node.parent.name if node.parent is not None else None,
            max_attempts=node.max_attempts,
        )
        publish(event, *self._topics)

    # ── LLM calls: replay, stats, captured context ────────────────────────────

    async def _stored_completions(self, node: Node) -> dict[int, dict[str, str]]:
        stored: dict[int, dict[str, str]] = {}
        for index, (digest, response) in (
            await self.store.get_completions(self.run.id, node.name)
        ).items():
            stored.setdefault(index, {})[digest] = response
        return stored

    async def llm_call(self, node: Node, index: int, request: LLMRequest) -> Completion:
        from .._errors import OutputValidationError
        from ..llm import Completion, complete, request_hash

        digest = request_hash(request)
        if self.resumed and not node.history_loaded:
            node.completions = await self._stored_completions(node)
            node.history_loaded = True
        stored = node.completions.get(index, {}).get(digest)
        debug = self._debug(node)
        if debug:  # before the call: a call that fails keeps its request on record
            self._capture_request(node, request)
        if stored is not None:
            completion = replace(Completion.from_json(stored), replayed=True)
        else:
            try:
                completion = await complete(request)
            except Exception as exc:
                if debug:
                    self.debug_log(node, "error", _describe(exc), {"model": request.model})
                paid = exc.completion if isinstance(exc, OutputValidationError) else None
                if isinstance(paid, Completion):
                    # paid for, so counted; not stored, so a retry asks again
                    self._record_call(node, index, paid)
                    await self._commit()
                raise
            encoded = completion.to_json()
            node.completions.setdefault(index, {})[digest] = encoded
            self._pending.completions.append(
                {
                    "run_id": self.run.id,
                    "step": node.name,
                    "call_index": index,
                    "request_hash": digest,
                    "response": encoded,
                    "created_at": utcnow(),
                }
            )
        self._record_call(node, index, completion)
        if debug:
            self._capture_response(node, completion)
        await self._commit()
        return completion

    def _record_call(self, node: Node, index: int, completion: Completion) -> None:
        call = CallRecord.from_completion(
            self.run.id, node.name, node.attempt, index, completion, utcnow()
        )
        self.run.calls.append(call)
        node.info.add_call(call)
        self._pending.stats.append(call.stats_row())
        self._dirt.set()
        if has_subscribers(*self._topics):
            publish(call.event(self.graph.name), *self._topics)

    def _debug(self, node: Node) -> bool:
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
        self.debug_log(node, "request", "", {"messages": list(request.messages), "params": params})

    def _capture_response(self, node: Node, completion: Completion) -> None:
        self.debug_log(
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

    def debug_log(self, node: Node, kind: str, message: str, data: Any) -> None:
        from ..llm import redact_secrets

        entry = {
            "run_id": self.run.id,
            "step": node.name,
            "attempt": node.attempt,
            "kind": kind,
            "message": redact_secrets(message),
            "data": None if data is None else redact_secrets(_jsonutil.dumps(data)),
            "created_at": utcnow(),
        }
        self._pending.logs.append(entry)
        self.run.logs.append(entry)
        self._dirt.set()


_WAITING_STATES = frozenset({"pending", "snoozed", "retryable"})
_READY_CHILD = (0, "pending", 0, None)  # (remaining, state, attempt, error) of a child to run


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_if_coroutine(value: object) -> None:
    # An async function given where a plain one is expected: close its coroutine so that
    # Python does not warn "never awaited" on top of the clear error raised by the caller.
    if inspect.iscoroutine(value):
        value.close()


def map_child_names(
    group: str, source: str, map_key: Callable[[Any], Any] | None, items: list[Any]
) -> list[str] | str:
    """The child names ``group[key]`` of a map over ``items`` (key: the index, or
    ``map_key(item)``), or an error message: a map_key that raises, is async, or gives
    a key twice. A set keeps the duplicate check linear (100,000 items: milliseconds)."""
    if map_key is None:
        return [f"{group}[{index}]" for index in range(len(items))]
    names: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            key = map_key(item)
            _close_if_coroutine(key)
            if inspect.isawaitable(key):
                raise TypeError(
                    f"it returned {type(key).__name__}; map_key must be a plain "
                    "(not async) function"
                )
            name = f"{group}[{key}]"  # a key whose str() raises fails here
        except Exception as exc:
            return f"step {group!r}: map_key raised {_describe(exc)} (item {index} of {source!r})"
        if name in seen:
            return f"map_key gave the key {key!r} twice; keys must be unique"
        seen.add(name)
        names.append(name)
    return names


def next_attempt_delay(
    node: Node, attempt_error: str, exc: BaseException | None
) -> tuple[float, str | None]:
    """Seconds before ``node``'s next attempt: its backoff, and at least the wait the
    provider asked for when the attempt failed on a rate limit (``ProviderError``
    ``retry_after``: after a 429 or 503 the call gave up on, re-sending sooner only meets
    the same answer). Or an error naming the step if its backoff is broken."""
    delay, problem = _backoff_delay(node, attempt_error)
    if problem is None:
        delay = max(delay, retry_hint(exc))
    return delay, problem


def retry_hint(exc: BaseException | None) -> float:
    """The largest ``retry_after`` of a ``ProviderError`` in ``exc``, its causes and
    contexts (a step may wrap the error it got) or its group's errors; 0 if none."""
    found = 0.0
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen or len(seen) > 100:
            continue
        seen.add(id(current))
        hint = current.retry_after if isinstance(current, ProviderError) else None
        if hint is not None and math.isfinite(hint):
            found = max(found, hint)
        todo += [current.__cause__, current.__context__]
        todo += getattr(current, "exceptions", ())
    return found


def _backoff_delay(node: Node, attempt_error: str) -> tuple[float, str | None]:
    """Seconds to wait before the next attempt, or an error naming the step and option.

    The user's ``backoff`` may raise or return something that is not a number of seconds;
    that fails the step (no retry can be scheduled) instead of crashing the whole run.
    Negative delays count as 0.
    """
    attempt = node.attempt
    problem: str | None = None
    delay = 0.0
    try:
        raw = node.spec.backoff(attempt)
    except Exception as exc:
        problem = f"backoff({attempt}) raised {_describe(exc)}"
    else:
        _close_if_coroutine(raw)
        if isinstance(raw, bool) or not isinstance(raw, (numbers.Real, Decimal)):
            problem = (
                f"backoff({attempt}) returned {type(raw).__name__} {reprlib.repr(raw)}, "
                "not a number of seconds"
            )
        else:
            try:
                delay = float(raw)
            except (ValueError, OverflowError):  # e.g. Decimal("sNaN")
                delay = math.nan
            if not math.isfinite(delay):
                problem = f"backoff({attempt}) returned {raw!r}, not a finite number of seconds"
    if problem is not None:
        return 0.0, (
            f"step {node.name!r}: {problem}; no retry possible after attempt {attempt} "
            f"failed with {attempt_error}"
        )
    return max(0.0, delay), None


_NO_TIMEOUT = nullcontext()  # reusable: one for every attempt without a timeout


def unwrap_group(exc: BaseException) -> BaseException:
    """The one real error inside (nested) exception groups, if there is exactly one."""
    inner = getattr(exc, "exceptions", None)
    while inner is not None and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc
