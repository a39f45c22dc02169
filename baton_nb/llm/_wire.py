"""Shapes shared by the provider adapters and the transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from baton_nb._errors import ConfigurationError
from baton_nb._usage import Usage

from ._config import Endpoint
from ._neutral import unsupported
from ._types import FinishReason, LLMRequest, ToolCall, assistant_message

__all__ = [
    "Adapter",
    "HttpCall",
    "Parsed",
    "RetryableFailure",
    "StreamState",
    "as_int",
    "auto_detail_only",
    "cut_off",
    "object_arguments",
]


@dataclass(frozen=True)
class HttpCall:
    """One HTTP POST to make. ``headers`` hold the key: never log or show them."""

    url: str
    headers: dict[str, str] = field(repr=False)
    body: dict[str, Any]


@dataclass(frozen=True)
class Parsed:
    """What an adapter read from a provider response."""

    text: str
    usage: Usage | None
    raw: dict[str, Any]
    reported_cost: Decimal | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    finish_reason: FinishReason | None = None
    reasoning: str | None = None
    message: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message", assistant_message(self.text, self.tool_calls))

    def keep_raw_text(self, text: str) -> None:
        """The JSON text ``raw`` was decoded from (the response body as received), kept for
        the secrets check and the replay store (``Scrubber.json_encoded``) while ``raw`` is
        still that object. Not a field: equality and ``replace()`` do not see it."""
        object.__setattr__(self, "_raw_text", (self.raw, text))

    def raw_text(self) -> str | None:
        """The text kept by :meth:`keep_raw_text`, if ``raw`` is still the object decoded."""
        kept = self.__dict__.get("_raw_text")
        return kept[1] if kept is not None and kept[0] is self.raw else None


def new_parsed(
    text: str,
    usage: Usage | None,
    raw: dict[str, Any],
    reported_cost: Decimal | None,
    tool_calls: tuple[ToolCall, ...],
    refusal: str | None,
    finish_reason: FinishReason | None,
    reasoning: str | None,
) -> Parsed:
    """``Parsed(...)`` of these fields (its message made from them, as ``__post_init__``
    does), made by filling its ``__dict__`` in field order: a frozen dataclass's
    ``__init__`` sets each field with ``object.__setattr__`` (an adapter parses one per
    call). The same object (a test compares it with the constructor's)."""
    parsed = _new_object(Parsed)
    parsed.__dict__.update(
        {
            "text": text,
            "usage": usage,
            "raw": raw,
            "reported_cost": reported_cost,
            "tool_calls": tool_calls,
            "refusal": refusal,
            "finish_reason": finish_reason,
            "reasoning": reasoning,
            "message": assistant_message(text, tool_calls),
        }
    )
    return parsed


_new_object = object.__new__


class RetryableFailure(Exception):
    """An attempt failed in a way a later attempt may not (429, 5xx, timeouts, resets)."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class StreamState(Protocol):
    """Accumulates server-sent events into a :class:`Parsed`.

    ``done()`` is called for a ``data: [DONE]`` line. ``result()`` raises
    :class:`RetryableFailure` (see :func:`cut_off`) when the stream ended without
    its provider's end marker: a partial answer is never a completed call.
    """

    def feed(self, event: str | None, data: dict[str, Any]) -> None: ...

    def done(self) -> None: ...

    def result(self) -> Parsed: ...


class Adapter(Protocol):
    """One provider wire format."""

    def build(self, endpoint: Endpoint, model: str, request: LLMRequest) -> HttpCall: ...

    def parse(self, body: dict[str, Any]) -> Parsed: ...

    def stream_state(self) -> StreamState: ...


def as_int(value: Any) -> int:
    """A token count from JSON (``None``, floats and strings tolerated) as a non-negative int."""
    if type(value) is int:  # the usual case, without int() and max()
        return value if value > 0 else 0
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def cut_off(what: str) -> RetryableFailure:
    """A stream that stopped before its end marker (a dropped connection, a proxy timeout)."""
    return RetryableFailure(
        None, f"stream ended before {what}: the answer is incomplete (retrying the call)"
    )


def object_arguments(call: dict[str, Any], endpoint: Endpoint, model: str, field: str) -> ToolCall:
    """An assistant tool call for a provider that takes its arguments as a JSON object
    (Anthropic's ``tool_use`` input, Gemini's ``functionCall`` args), not as text."""
    parsed = ToolCall.from_dict(call)
    if parsed.arguments is None:
        raise ConfigurationError(
            f"tool call {parsed.id!r} ({parsed.name}) has arguments that are not a JSON "
            f"object; {endpoint.name}/{model} needs an object as {field}"
        )
    return parsed


def auto_detail_only(image: dict[str, Any], endpoint: Endpoint, model: str) -> None:
    """Refuse an image ``detail`` a provider has no setting for (Anthropic, Gemini)."""
    detail = image.get("detail")
    if detail not in (None, "auto"):
        raise unsupported(endpoint.name, model, f"image detail {detail!r}", "drop 'detail'")
