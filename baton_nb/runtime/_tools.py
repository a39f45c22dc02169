"""``ctx.run_tools(...)``: the model <-> tool-function loop, one recorded call per round.

Built on ``ctx.complete`` only: each model call takes the step's next call index, so a
step that crashed or was retried replays the rounds it already paid for from the replay
store (the tool functions run again; their results must be the same for the following
rounds to replay too) and continues from there.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from .._errors import ConfigurationError
from .._money import normalize_money, sum_money

if TYPE_CHECKING:
    from ..llm import Completion
    from ._context import Context

__all__ = ["ToolRun", "run_tools"]

DEFAULT_MAX_ROUNDS = 8


@dataclass(frozen=True)
class ToolResult:
    """One tool call and what the function answered (``error`` when it was not run)."""

    call_id: str
    name: str
    arguments: dict[str, Any] | None
    output: str
    error: bool = False


@dataclass(frozen=True)
class ToolRun:
    """The end of a tool loop: the final answer, every round's completion, the whole
    conversation (ready to continue), and each tool call with its result."""

    completion: Completion
    messages: list[dict[str, Any]]
    completions: list[Completion] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.completion.text

    @property
    def parsed(self) -> Any:
        return self.completion.parsed

    @property
    def rounds(self) -> int:
        return len(self.completions)

    @property
    def cost(self) -> Decimal | None:
        """Total USD of the rounds; ``None`` if any round's price is unknown."""
        costs = [c.cost for c in self.completions]
        if any(c is None for c in costs):
            return None
        return normalize_money(sum_money(c for c in costs if c is not None))


class _Function:
    def __init__(self, fn: Callable[..., Any]) -> None:
        from ..llm._neutral import arguments_model, function_tool

        self.fn = fn
        self.tool = function_tool(fn)
        self.model = arguments_model(fn)
        self.wants_ctx = "ctx" in inspect.signature(fn).parameters

    async def __call__(self, arguments: dict[str, Any], ctx: Context) -> Any:
        values = self.model.model_validate(arguments)
        kwargs = {name: getattr(values, name) for name in type(values).model_fields}
        if self.wants_ctx:  # a tool may take the step's context (not shown to the model)
            kwargs["ctx"] = ctx
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        # a plain function may block (files, HTTP): keep it off the event loop
        return await anyio.to_thread.run_sync(lambda: self.fn(**kwargs))


def _functions(
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
) -> dict[str, _Function]:
    items = list(tools.values()) if isinstance(tools, Mapping) else list(tools)
    if not items or not all(callable(t) for t in items):
        raise ConfigurationError(
            "run_tools(tools=[...]) takes a non-empty list of Python functions"
        )
    functions = {f.tool.name: f for f in map(_Function, items)}
    if len(functions) != len(items):
        raise ConfigurationError("run_tools: two tool functions have the same name")
    return functions


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return json.dumps(value, ensure_ascii=False, default=str)


async def _run_call(functions: dict[str, _Function], call: Any, ctx: Context) -> ToolResult:
    """Run one call; a wrong name or wrong arguments go back to the model as an error
    it can correct. An exception inside the function fails the step (it is a bug or an
    outage of the tool, not the model's mistake)."""
    from pydantic import ValidationError

    function = functions.get(call.name)
    if function is None:
        known = ", ".join(functions)
        return ToolResult(
            call.id,
            call.name,
            call.arguments,
            f"error: no tool {call.name!r} (tools: {known})",
            True,
        )
    if call.arguments is None:
        message = f"error: arguments must be a JSON object, got {call.arguments_json[:200]!r}"
        return ToolResult(call.id, call.name, None, message, True)
    try:
        output = await function(call.arguments, ctx)
    except ValidationError as exc:
        return ToolResult(
            call.id, call.name, call.arguments, f"error: invalid arguments: {exc}", True
        )
    return ToolResult(call.id, call.name, call.arguments, _as_text(output))


async def run_tools(
    ctx: Context,
    messages: Iterable[Mapping[str, Any]] | None,
    *,
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
    prompt: str | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    **kwargs: Any,
) -> ToolRun:
    """Call the model with ``tools``, run the functions it asks for, send back their
    results, and repeat until it answers without calling a tool. The last allowed round
    is asked with ``tool_choice="none"``, so the loop ends with an answer."""
    from ..llm._neutral import freeze_messages, prompt_messages

    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise ConfigurationError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
    if "tool_choice" in kwargs and kwargs["tool_choice"] == "none":
        raise ConfigurationError("run_tools with tool_choice='none' would never call a tool")
    functions = _functions(tools)
    schemas = [f.tool for f in functions.values()]
    # checked copies (a string, or a list of strings, is an error saying what to pass)
    history = list(freeze_messages(prompt_messages("ctx.run_tools()", prompt, messages)))
    completions: list[Completion] = []
    results: list[ToolResult] = []
    for round_ in range(max_rounds):
        options = dict(kwargs)
        if round_ == max_rounds - 1:
            options["tool_choice"] = "none"
        completion = await ctx.complete(history, tools=schemas, **options)
        completions.append(completion)
        history.append(dict(completion.message))
        if not completion.tool_calls:
            break
        for call in completion.tool_calls:
            result = await _run_call(functions, call, ctx)
            results.append(result)
            history.append({"role": "tool", "tool_call_id": call.id, "content": result.output})
    return ToolRun(completions[-1], history, completions, results)
