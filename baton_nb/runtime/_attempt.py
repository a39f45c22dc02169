"""Running one attempt of a step: call its function (timeout, sync functions in a thread)
and turn what happened into an ``Outcome``. No state changes here: the scheduler decides."""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from builtins import BaseExceptionGroup  # Python 3.11 (ruff's default target predates it)
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from typing import Any

import anyio

from .. import _jsonutil
from .._dep_types import validate_deps
from .._errors import (
    ConfigurationError,
    ProviderError,
    ResultNotSerializable,
    describe_error,
    unwrap_group,
)
from .._graph import StepSpec
from .._outcomes import Discard, Snooze
from .._run import Run
from .._states import FAILED_STATES, NodeKind, State
from ..store import AttemptRow, utcnow
from ._commit import GroupCommit
from ._decisions import (
    PARKED,
    CallParked,
    Completed,
    Discarded,
    Failed,
    Outcome,
    Parked,
    Snoozed,
)
from ._groups import close_if_coroutine, partial_value
from ._node import Node, redacted_error

__all__ = [
    "dep_results",
    "ended_attempt",
    "keep_attempt",
    "model_for",
    "retry_hint",
    "run_attempt",
]

# Python's words for a coroutine used as a value ('coroutine' object..., not coroutine), and
# for a coroutine expected where something else was given ("a coroutine was expected")
_COROUTINE_TYPE = re.compile(r"\bcoroutine\b")
_COROUTINE_WANTED = re.compile(r"\ban? coroutine\b", re.IGNORECASE)
_NO_TIMEOUT = nullcontext()  # reusable: one for every attempt without a timeout
_NO_KWARGS: dict[str, Any] = {}  # never changed: ``**`` copies it into the call


def ended_attempt(
    run_id: str, node: Node, outcome: Outcome, began: datetime, now: datetime
) -> AttemptRow | None:
    """The history row of an attempt the scheduler concluded: one that failed (retryable,
    discarded) or that completed after failed ones; None for a first-attempt success, a
    snooze or a park (no attempt used) and a node settled meanwhile."""
    if isinstance(outcome, (Snoozed, Parked)):
        return None
    state = node.state
    if state is State.COMPLETED:
        if node.attempt <= 1 or not isinstance(outcome, Completed):
            return None
        error = None
    elif state is State.RETRYABLE or (
        state is State.DISCARDED and isinstance(outcome, (Failed, Discarded))
    ):
        error = node.error
    else:
        return None
    return AttemptRow(run_id, node.name, node.attempt, state.value, error, began, now)


def keep_attempt(
    commit: GroupCommit, run: Run, node: Node, outcome: Outcome, began: datetime
) -> None:
    """Keep a concluded attempt in the retry history, if it belongs there (``ended_attempt``):
    stored with the next commit, on the live Run now (``run.steps[name].attempts``)."""
    ended = ended_attempt(run.id, node, outcome, began, utcnow())
    if ended is not None:
        commit.add_rows(attempt=ended)
        run.steps[node.name].add_attempt(ended)


async def run_attempt(node: Node, ctx: Any, results: Mapping[str, Any]) -> Outcome:
    """Call the step's function once with ``ctx`` and its deps' ``results``."""
    spec = node.spec
    kwargs = {d: results.get(d) for d in spec.kwarg_deps} if spec.kwarg_deps else _NO_KWARGS
    args = (ctx,) if spec.wants_ctx else ()
    try:
        if spec.dep_types:  # deps annotated with a pydantic model get instances of it
            validate_deps(spec.name, spec.fn, kwargs, spec.dep_types)
        with anyio.fail_after(spec.timeout) if spec.timeout else _NO_TIMEOUT:
            if spec.is_async:
                value = await spec.fn(*args, **kwargs)
            else:
                call = partial(spec.fn, *args, **kwargs)
                value = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except Discard as exc:
        return Discarded(redacted_error(exc.reason))
    except TimeoutError as exc:
        if spec.timeout is not None and not str(exc):
            error = f"TimeoutError: attempt timed out after {spec.timeout:g}s"
            return _failed(ctx, spec, exc, error)
        return _failed(ctx, spec, exc)
    except Exception as exc:
        return _failed(ctx, spec, exc)
    except CallParked:
        return PARKED  # a call went to a provider batch: the node waits for its answer
    except BaseExceptionGroup as group:  # calls made together (a task group), some parked
        parked, rest = group.split(CallParked)
        if parked is None or (rest is not None and not isinstance(rest, Exception)):
            raise
        return PARKED if rest is None else _failed(ctx, spec, rest)
    except anyio.get_cancelled_exc_class() as exc:
        if _cancel_requested():
            raise  # the run is cancelled (or ends): the driver winds it down
        # Raised by the step's own code (it awaited a task it had cancelled): an error
        # like any other, not a cancellation of the whole run.
        return _failed(ctx, spec, exc)
    if isinstance(value, Snooze):
        return Snoozed(value.seconds)
    if isinstance(value, Discard):
        return Discarded(redacted_error(value.reason))
    try:
        encoded = _jsonutil.dumps_result(node.name, value)
    except ResultNotSerializable as exc:
        error = f"ResultNotSerializable: {exc}"
        hint = _returned_unawaited(spec, value)
        return Discarded(redacted_error(f"{error}; {hint}" if hint else error))
    return Completed(value, encoded)


def _returned_unawaited(spec: StepSpec, value: Any) -> str | None:
    """What to write when the step returned a coroutine (``return ctx.complete(...)``), or
    a list, tuple or dict holding some (``[ctx.complete(...) for m in models]``): None for
    another unserialisable result. Those coroutines are closed, so Python does not warn
    "never awaited" on top, later, under another step."""
    if inspect.iscoroutine(value):
        value.close()
        if not spec.is_async and not _made_by_ctx(value):
            return _wrapped_hint(spec, value)  # a sync decorator over an async def step
        return _await_hint(spec)
    if not isinstance(value, (list, tuple, dict)):
        return None
    items = value.values() if isinstance(value, dict) else value
    found = [item for item in items if inspect.iscoroutine(item)]
    for coroutine in found:
        coroutine.close()
    if not found:
        return None
    where = f"the {type(value).__name__} the step returned holds {len(found)} coroutine(s)"
    together = ", or all at once: await asyncio.gather(*calls)" if spec.is_async else ""
    return f"{_await_hint(spec)} ({where}: await each{together})"


def _made_by_ctx(coroutine: Any) -> bool:
    """Whether ``coroutine`` is a call of ``ctx.complete``, ``ctx.synthesize`` or
    ``ctx.run_tools`` (not the step's own async function)."""
    from ._context import Context

    methods = (Context.complete, Context.synthesize, Context.run_tools)
    return getattr(coroutine, "cr_code", None) in {m.__code__ for m in methods}


def _wrapped_hint(spec: StepSpec, coroutine: Any) -> str:
    """A plain def step that returned a coroutine of its own: its function is not async
    def to ``inspect.iscoroutinefunction``, most likely a sync decorator whose wrapper
    returns ``fn(...)`` of an async def (``functools.wraps`` does not make it async)."""
    name = getattr(coroutine, "__qualname__", None) or "an async function"
    mark = ""
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        mark = ", or mark the wrapper with inspect.markcoroutinefunction(wrapper)"
    return (
        f"step {spec.name!r} returned a coroutine ({name}) without awaiting it: its "
        "function is not async def, so it is run as a plain def step; probably a sync "
        "decorator wrapping an async def (a def wrapper that returns fn(...)). Make the "
        f"wrapper async def and write return await fn(...){mark}"
    )


def _failed(
    ctx: Any, spec: StepSpec, exc: BaseException, error: str | None = None
) -> Failed | Discarded:
    """A raised error: retried by the step's policy, except a ``ConfigurationError`` (a
    bad model name, option, message or schema: the same request fails the same way every
    time), which fails the step at once with its message, and a coroutine used without
    ``await`` (``ctx.complete(...).text``: the same code fails the same way every time),
    which fails it at once with what to write. Every failure returns through here, so
    that under ``debug=True`` each keeps its traceback (``Context._keep_traceback``)."""
    real = unwrap_group(exc)
    hint = _await_hint(spec) if _used_unawaited(real) else None
    if hint is not None:
        real.add_note(hint)  # in the traceback too (debug=True, a notebook)
    keep_traceback = getattr(ctx, "_keep_traceback", None)  # a Context (tests pass others)
    if keep_traceback is not None:
        keep_traceback(exc)
    if isinstance(real, ConfigurationError):
        return Discarded(redacted_error(describe_error(real)))
    if hint is not None:
        return Discarded(redacted_error(f"{describe_error(real)}; {hint}"))
    return Failed(redacted_error(error or describe_error(exc)), retry_hint(exc))


def _used_unawaited(exc: BaseException) -> bool:
    """Whether ``exc`` is a coroutine used as what it gives: Python's error names the type
    ``coroutine`` (``ctx.complete(...).text``: ``'coroutine' object has no attribute``;
    ``[...]``: ``... is not subscriptable``; ``len(...)``: ``object of type 'coroutine'
    has no len()``; ``json.loads(...)``: ``... not coroutine``; ``"a" + ...``). Not when
    it says "a coroutine" was expected (``asyncio.create_task(fn)``), the opposite
    mistake. That coroutine is closed if the error holds it (an ``AttributeError``'s
    ``obj``), so Python does not warn "never awaited" later, when it is collected, under
    whatever runs then; a ``TypeError`` does not hold it: it is collected, and warned
    about, at once, in the step."""
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    message = str(exc)
    if not _COROUTINE_TYPE.search(message) or _COROUTINE_WANTED.search(message):
        return False
    close_if_coroutine(getattr(exc, "obj", None))
    return True


def _await_hint(spec: StepSpec) -> str:
    """What to write instead, for an async step and for a plain ``def`` one (run in a
    thread, where nothing can be awaited)."""
    if spec.is_async:
        return (
            "a coroutine was used without await (ctx.complete(...), ctx.synthesize(...), "
            "ctx.run_tools(...) and any async function return one): await it inside the "
            "async def step, as in (await ctx.complete(...)).text"
        )
    return (
        f"step {spec.name!r} is a plain def step, which cannot await: ctx.complete(...) "
        "(and ctx.synthesize, ctx.run_tools) return coroutines. Make the step async def and "
        "write (await ctx.complete(...)).text"
    )


def _cancel_requested() -> bool:
    """Whether this task is being cancelled: on asyncio, a cancel scope (the run's task
    group) asked for it; elsewhere a CancelledError is always taken as a cancellation."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop (trio)
        return True
    return task is None or task.cancelling() > 0


def retry_hint(exc: BaseException | None) -> float:
    """The largest ``retry_after`` of a ``ProviderError`` in ``exc``, its causes and
    contexts (a step may wrap the error it got) or its group's errors; 0 if none.

    After a 429 or 503 the call gave up on, re-sending sooner than the provider asked only
    meets the same answer: the step's next attempt waits at least this long.
    """
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


def dep_results(node: Node, nodes: Mapping[str, Node]) -> dict[str, Any]:
    """The results of ``node``'s completed deps (a fan-out child sees its group's deps').

    A fan-out group that failed, which ``node`` runs after by an ignore flag, gives what
    its completed children returned (``partial_value``: None for the others), so the
    survivors of a map where a few items failed reach the next step."""
    owner = node.parent if node.parent is not None else node
    results = {}
    for dep in owner.deps:
        dep_node = nodes[dep]
        if dep_node.state is State.COMPLETED:
            results[dep] = dep_node.result
        elif dep_node.kind is NodeKind.GROUP and dep_node.state in FAILED_STATES:
            value = partial_value(dep_node)
            if value is not None:
                results[dep] = value
    return results


def model_for(node: Node, models: Mapping[str, str]) -> str | None:
    """``ctx.model``: a multi-model child's model, else the run's model map for the step."""
    if node.kind is NodeKind.CHILD and node.model:
        return node.model
    return models.get(node.spec.name) or node.model
