"""``bn.Context``: what a step function sees, and its door to LLM calls (with replay)."""

from __future__ import annotations

import difflib
import inspect
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from functools import cache
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, describe_error
from .._jsonutil import dumps as json_text

if TYPE_CHECKING:
    from ..llm import Completion, LLMRequest
    from ._calls import Calls
    from ._node import Node
    from ._tools import ToolRun

__all__ = ["CALLED_AS", "Context"]

# The method the step called ("ctx.synthesize"...), for messages about the call it makes.
CALLED_AS: ContextVar[str] = ContextVar("baton_nb_called_as", default="ctx.complete")

DEFAULT_SYNTHESIS_INSTRUCTION = (
    "You are given answers to the same task from several sources. Merge them into one "
    "answer that keeps what they agree on, resolves disagreements explicitly, and drops "
    "repetition."
)


class Context:
    """Passed to every step: run and step identity, params, dependency results, LLM calls."""

    def __init__(
        self,
        calls: Calls,
        node: Node,
        params: dict[str, Any],
        results: dict[str, Any],
        model: str | None,
    ) -> None:
        self._calls = calls
        self._node = node
        self._call_index = 0
        self.run_id: str = calls.run_id
        self.workflow_name: str = calls.graph.name
        self.step: str = node.name
        self.attempt: int = node.attempt
        self.params: dict[str, Any] = params
        self.results: dict[str, Any] = results
        self.model: str | None = model
        self.item: Any = node.item

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} step={self.step!r} attempt={self.attempt}>"

    async def complete(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        model: str | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        timeout: float | None = None,
        price_as: str | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        reasoning: Any = None,
        cache: bool | None = None,
        cache_salt: str | None = None,
        extra: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Completion:
        """Call an LLM. Answered from the replay store if this call was already paid for.

        ``messages`` is any iterable of OpenAI-shaped message dicts (a message may also be
        a pydantic model, the OpenAI SDK's message: taken by its ``model_dump()``), or
        ``prompt='...'`` one user message.

        ``cache=False`` sends this call even when the workflow's response cache is on
        (``cache=True`` uses it when the workflow's is off); ``cache_salt`` makes its cache
        key another one (fresh samples), never sent (docs/spend_less.md).

        ``tools`` (JSON-Schema function dicts or Python functions), ``tool_choice``,
        ``response_format`` (a pydantic model class or a JSON Schema; the validated
        answer is ``.parsed``) and ``reasoning`` are translated for every provider.

        Other keyword arguments, and ``extra={...}``, are merged as they are into the
        provider's JSON body (its own names: ``top_p``, ``stop``...). A keyword argument
        that is a near miss of one of the options above (``temprature=``) is an error
        saying which one was meant; ``extra={"temprature": 0}`` sends it on purpose.
        """
        LLMRequest, plain_request, prompt_messages, aimport_validator, awith_parsed = _llm_api()
        model = model or self.model
        if not model:
            raise ConfigurationError(
                f"step {self.step!r}: no model for ctx.complete(); pass model='provider/name' "
                "or set models={step: model} on the Workflow or wf.run()"
            )
        if (
            prompt is not None
            and messages is None
            and not options
            and extra is None
            and not tools
            and tool_choice is None
            and response_format is None
            and reasoning is None
        ):
            # The usual call (a prompt, no provider fields, tools, output format nor
            # reasoning): the same request, made without the frozen dataclass's __init__
            # nor copying the one message built here twice (``plain_request``).
            request = plain_request(
                model,
                ({"role": "user", "content": prompt},),
                temperature,
                max_tokens,
                stream,
                timeout,
                price_as,
                _check_cache(self.step, cache),
                _check_salt(self.step, cache_salt),
            )
            index = self._call_index
            self._call_index += 1
            completion = await self._calls.complete(self._node, index, request)
            return await awith_parsed(completion, request) if completion.replayed else completion
        # the provider fields first: a near miss of prompt= (promt=) is named as one, not
        # taken for a call without a prompt
        provider_fields = _provider_extras(self.step, options, extra)
        if messages is None and prompt is None:
            raise ConfigurationError(_no_prompt(self.step, options))
        given = prompt_messages("ctx.complete()", prompt, messages)
        if response_format is not None:  # (no coroutine made per call for nothing)
            await aimport_validator(response_format)  # the schema is checked in LLMRequest
        request = LLMRequest(
            model=model,
            messages=given,  # checked and copied there (a string: an error saying so)
            temperature=temperature,
            max_tokens=max_tokens,
            stream=stream,
            timeout=timeout,
            price_as=price_as,
            extra=provider_fields,
            tools=tuple(tools or ()),
            tool_choice=tool_choice,
            response_format=response_format,
            reasoning=reasoning,
            cache=_check_cache(self.step, cache),
            cache_salt=_check_salt(self.step, cache_salt),
        )
        index = self._call_index
        self._call_index += 1
        completion = await self._calls.complete(self._node, index, request)
        # a fresh answer was validated by complete(); a replayed one is validated again
        return await awith_parsed(completion, request) if completion.replayed else completion

    async def run_tools(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
        prompt: str | None = None,
        max_rounds: int = 8,
        **kwargs: Any,
    ) -> ToolRun:
        """Run the model <-> tool loop: call the model with ``tools`` (Python functions),
        run the ones it asks for, send their results back, until it answers (at most
        ``max_rounds`` model calls; the last is asked with ``tool_choice="none"``).
        Each model call is a recorded call: a resumed step replays the rounds already
        paid for. ``kwargs`` go to :meth:`complete` (``model=``, ``response_format=``...)."""
        from ._tools import run_tools

        token = CALLED_AS.set("ctx.run_tools")
        try:
            # as in complete(): a near miss (promt=, max_round=) is named as one first, then
            # a call without a prompt names the provider fields it got
            fields = {k: v for k, v in kwargs.items() if k not in _complete_options()}
            _check_near_misses(self.step, fields, _RUN_TOOLS_OPTIONS)
            if messages is None and prompt is None:
                raise ConfigurationError(_no_prompt(self.step, fields))
            return await run_tools(
                self, messages, tools=tools, prompt=prompt, max_rounds=max_rounds, **kwargs
            )
        finally:
            CALLED_AS.reset(token)

    async def synthesize(
        self,
        answers: Mapping[str, Any] | Sequence[Any],
        *,
        model: str | None = None,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> Completion:
        """One call that merges a fan-out's answers (``{model: answer}`` or a list)."""
        if answers is None:  # a tolerant step's dep whose children all failed
            raise ConfigurationError(_no_answers(self.step, self._node.spec.deps, self.results))
        items = list(answers.items()) if isinstance(answers, Mapping) else list(enumerate(answers))
        if not items:  # a map over [] (no children), the same mistake at every attempt
            raise ConfigurationError(
                _empty_answers(self.step, answers, self._node.spec.deps, self.results)
            )
        parts = [
            f"### Answer {i + 1} ({key})\n{_text_of(value)}" for i, (key, value) in enumerate(items)
        ]
        prompt = "\n\n".join(parts)
        messages = [
            {"role": "system", "content": instruction or DEFAULT_SYNTHESIS_INSTRUCTION},
            {"role": "user", "content": prompt},
        ]
        token = CALLED_AS.set("ctx.synthesize")
        try:
            return await self.complete(messages, model=model, **kwargs)
        finally:
            CALLED_AS.reset(token)

    def log(self, message: str, **data: Any) -> None:
        """Write a line to this step's captured context (``run.context(step)``)."""
        self._calls.log(self._node, "log", str(message), data or None)

    def _keep_traceback(self, exc: BaseException) -> None:
        """Under ``debug=True``, what the step's attempt raised, with its traceback, goes to
        its captured context (an ``error`` entry of ``run.context(step)``, the traceback in
        its ``data``); otherwise only the error's message is stored (``step.error``)."""
        if self._calls.debug(self._node):
            trace = "".join(traceback.format_exception(exc))
            self._calls.log(self._node, "error", describe_error(exc), {"traceback": trace})


@cache
def _llm_api() -> tuple[type[LLMRequest], Any, Any, Any, Any]:
    """``baton_nb.llm``'s names ``Context.complete`` needs: imported at the first call, as
    before (this module imports no ``llm`` at its top), then kept. Import statements in the
    method cost ~1.8 us a call (importlib's ``_handle_fromlist`` for a package, each time)."""
    from ..llm import LLMRequest
    from ..llm._neutral import prompt_messages
    from ..llm._output import aimport_validator, awith_parsed
    from ..llm._types import plain_request

    return LLMRequest, plain_request, prompt_messages, aimport_validator, awith_parsed


def _check_cache(step: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(
            f"step {step!r}: ctx.complete(cache=...) takes True, False or None, got {value!r}"
        )
    return value


def _check_salt(step: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"step {step!r}: ctx.complete(cache_salt=...) takes a string, got {value!r}"
        )
    return value


def _as_json(value: Any) -> str | None:
    """``value`` as JSON (as a step's result is stored), or None if it is not JSON (a set)."""
    try:
        return json_text(value)
    except (TypeError, ValueError, RecursionError):
        return None


def _text_of(value: Any) -> str:
    """An answer as the synthesis prompt shows it: a completion's or a string's text as it
    is; a structured answer (dict, list, number, pydantic model) as JSON, as the step's
    result is stored (``{"ok": true}``, never Python's ``{'ok': True}``)."""
    text = getattr(value, "text", None)
    if isinstance(text, str):
        return text
    if isinstance(value, Mapping) and isinstance(value.get("text"), str):
        return str(value["text"])
    if not isinstance(value, str):
        encoded = _as_json(value)
        if encoded is not None:
            return encoded
    return str(value)


@cache
def _complete_options() -> tuple[str, ...]:
    """The named options of ``ctx.complete`` (from its signature: never out of date)."""
    parameters = inspect.signature(Context.complete).parameters.values()
    return tuple(p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD)


# ``ctx.run_tools``'s own named options, besides those of ``ctx.complete`` it passes on
_RUN_TOOLS_OPTIONS = ("tools", "max_rounds")


@cache
def _near_option(name: str, own: tuple[str, ...] = ()) -> str | None:
    """The named option ``name`` nearly spells, if any (``own``: the calling method's
    options besides ``ctx.complete``'s): once per name (difflib costs tens of µs a name,
    and a provider field such as ``top_p`` comes with every call)."""
    close = difflib.get_close_matches(name, _complete_options() + own, n=1, cutoff=0.8)
    return close[0] if close else None


def _check_near_misses(step: str, fields: Mapping[str, Any], own: tuple[str, ...] = ()) -> None:
    """A keyword argument taken as a provider field that is a near miss of a named option
    (``temprature``: a typo, which would be sent and ignored or refused by the provider,
    not a setting) is an error naming the option meant and the method called."""
    for name in fields:
        close = _near_option(name, own)
        if close is not None:
            raise ConfigurationError(
                f"step {step!r}: {CALLED_AS.get()}() got {name}=, which is not one of its "
                f"options; did you mean {close}=? (To send {name!r} to the provider as it is, "
                f"pass extra={{{name!r}: ...}}.)"
            )


def _provider_extras(
    step: str, options: Mapping[str, Any], extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What goes into the provider's body as it is: ``extra=`` and the other keyword
    arguments, those not a near miss of a named option (``_check_near_misses``)."""
    if options:
        _check_near_misses(step, options)
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigurationError(
            f"step {step!r}: ctx.complete(extra=...) takes a dict of provider fields, "
            f"got {type(extra).__name__}"
        )
    return {**options, **extra} if extra else dict(options)


def _no_prompt(step: str, options: Mapping[str, Any]) -> str:
    """Why ``ctx.complete()`` (or ``ctx.run_tools()``) has nothing to send, naming the
    keyword arguments it took as provider fields (``text='hi'``: not a prompt, nor a near
    miss of ``prompt=``)."""
    given = ""
    if options:
        names = ", ".join(f"{name}=" for name in options)
        given = (
            f" (it got {names}, which it does not take as the prompt: other keyword "
            "arguments are provider fields, sent as they are)"
        )
    return f"step {step!r}: {CALLED_AS.get()}() needs messages=[...] or prompt='...'{given}"


def _empty_answers(step: str, answers: Any, deps: Sequence[str], results: Mapping[str, Any]) -> str:
    """Why ``ctx.synthesize([])`` (or ``{}``) has nothing to merge, naming the deps whose
    result is empty (a map step over an empty list: no children, an empty list)."""
    empty = [d for d in deps if isinstance(results.get(d), (list, dict)) and not results[d]]
    why = ""
    if empty:
        names = ", ".join(repr(d) for d in empty)
        why = f" ({names} gave an empty result: a map step over an empty list runs no child)"
    return (
        f"step {step!r}: ctx.synthesize() got an empty {type(answers).__name__}: no answers "
        f"to synthesise{why}. Check the map's input (the step it maps over returned an "
        "empty list?), or check for no answers before synthesising (return a fallback, "
        "or raise bn.Discard(...))"
    )


def _no_answers(step: str, deps: Sequence[str], results: Mapping[str, Any]) -> str:
    """Why ``ctx.synthesize(None)`` has nothing to merge, naming the deps that gave None."""
    missing = [d for d in deps if results.get(d) is None]
    why = ""
    if missing:
        names = ", ".join(repr(d) for d in missing)
        why = f" (no child of {names} completed: a step that ignores a failed dep gets None)"
    return (
        f"step {step!r}: ctx.synthesize() got None: no answers to synthesise{why}. Check for "
        "None before synthesising (return a fallback, or raise bn.Discard(...))"
    )
