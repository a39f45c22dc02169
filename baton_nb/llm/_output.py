"""``Completion.parsed``: the structured answer, validated against ``response_format``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace

import anyio.to_thread

from baton_nb._errors import OutputValidationError

from ._neutral import OutputKind
from ._schema import validate_json
from ._types import Completion, FinishReason, LLMRequest

__all__ = ["aimport_validator", "awith_parsed", "with_parsed"]


def with_parsed(completion: Completion, request: LLMRequest) -> Completion:
    """``completion`` with ``parsed`` set from its text, for a JSON ``response_format``.

    A refusal or a tool-call turn has nothing to parse (``parsed`` stays ``None``).
    An answer that is not valid JSON, or fails the schema or the pydantic model,
    raises :class:`OutputValidationError` carrying the (paid) completion.
    """
    fmt = request.response_format
    if fmt is None or fmt.kind is OutputKind.TEXT:
        return completion
    if completion.refusal is not None or completion.tool_calls:
        return completion
    try:
        value = validate_json(completion.text, fmt.schema, fmt.model_class)
    except ValueError as exc:
        cut = (
            " (the answer was cut off at max_tokens)"
            if (completion.finish_reason is FinishReason.LENGTH)
            else ""
        )
        what = fmt.model_class.__name__ if fmt.model_class is not None else f"schema {fmt.name!r}"
        raise OutputValidationError(
            f"{completion.model}: the structured answer does not match {what}{cut}: {exc}",
            completion,
        ) from None
    return replace(completion, parsed=value)


async def awith_parsed(completion: Completion, request: LLMRequest) -> Completion:
    """:func:`with_parsed` on the event loop: the JSON Schema validator (``jsonschema``,
    whose import builds an RFC 3987 grammar: seconds on a loaded machine) is imported in
    a worker thread the first time a schema without a pydantic model is checked."""
    fmt = request.response_format
    if (
        fmt is not None
        and fmt.schema is not None
        and fmt.model_class is None
        and "jsonschema" not in sys.modules
    ):
        await anyio.to_thread.run_sync(_import_jsonschema)
    return with_parsed(completion, request)


async def aimport_validator(response_format: object) -> None:
    """Before a request with a JSON Schema dict is built on the event loop (its schema is
    checked then, ``check_schema``): ``jsonschema`` imported in a worker thread, if it is
    not yet (as :func:`awith_parsed` does)."""
    if isinstance(response_format, Mapping) and "jsonschema" not in sys.modules:
        await anyio.to_thread.run_sync(_import_jsonschema)


def _import_jsonschema() -> None:
    import jsonschema  # noqa: F401
