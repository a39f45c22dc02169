"""Token usage of one or more LLM calls, normalised across providers."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

__all__ = ["USAGE_FIELDS", "Usage", "usage_values"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of LLM calls.

    ``input_tokens`` counts *all* prompt tokens, including the cached ones
    (``cached_input_tokens``) and the ones written to a prompt cache
    (``cache_write_tokens``). ``cache_write_1h_tokens`` are the part of the cache
    writes made with Anthropic's 1-hour lifetime (the rest are 5-minute writes); each
    part is charged at its own rate. ``reasoning_tokens`` are part of
    ``output_tokens`` and never charged twice. ``web_search_requests`` counts the
    server-side web searches of the call (Anthropic's ``server_tool_use``), which
    providers charge per request on top of the tokens.

    New fields come last and default to 0, so ``Usage(1000, 0, 0, 50)`` keeps its
    meaning and rows stored before a field existed read it as 0.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0

    def __post_init__(self) -> None:
        if (  # the usual case, every count a plain int >= 0, in one expression (~4x faster)
            type(self.input_tokens) is int
            and type(self.cached_input_tokens) is int
            and type(self.cache_write_tokens) is int
            and type(self.output_tokens) is int
            and type(self.reasoning_tokens) is int
            and type(self.cache_write_1h_tokens) is int
            and type(self.web_search_requests) is int
            and self.input_tokens >= 0
            and self.cached_input_tokens >= 0
            and self.output_tokens >= 0
            and self.reasoning_tokens >= 0
            and self.web_search_requests >= 0
            and 0 <= self.cache_write_1h_tokens <= self.cache_write_tokens
        ):
            return
        for name in _FIELDS:
            value = getattr(self, name)
            # an int (or a subclass of int but bool), not negative; type() first: fastest
            not_int = type(value) is not int and (
                not isinstance(value, int) or isinstance(value, bool)
            )
            if not_int or value < 0:
                raise ValueError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"Usage.cache_write_1h_tokens ({self.cache_write_1h_tokens}) are part of "
                f"cache_write_tokens ({self.cache_write_tokens}) and cannot exceed them"
            )

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        # Sums of valid counts are valid: built without ``__post_init__``'s checks (this runs
        # for every LLM call, and for the views' running totals).
        out = object.__new__(Usage)
        put = object.__setattr__
        put(out, "input_tokens", self.input_tokens + other.input_tokens)
        put(out, "cached_input_tokens", self.cached_input_tokens + other.cached_input_tokens)
        put(out, "cache_write_tokens", self.cache_write_tokens + other.cache_write_tokens)
        put(out, "output_tokens", self.output_tokens + other.output_tokens)
        put(out, "reasoning_tokens", self.reasoning_tokens + other.reasoning_tokens)
        put(out, "cache_write_1h_tokens", self.cache_write_1h_tokens + other.cache_write_1h_tokens)
        put(out, "web_search_requests", self.web_search_requests + other.web_search_requests)
        return out

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes with the default 5-minute lifetime."""
        return self.cache_write_tokens - self.cache_write_1h_tokens

    def to_dict(self) -> dict[str, int]:
        return dict(zip(_FIELDS, usage_values(self), strict=True))  # one attrgetter, not 7

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """From ``to_dict`` output or a stats row; a field the data lacks (an older row) is 0."""
        return cls(**{name: int(data.get(name, 0) or 0) for name in _FIELDS})


# The field names, in order: dataclasses.fields() builds a tuple on each call (per call
# of a fan-out, several times).
_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
USAGE_FIELDS = _FIELDS  # for the replay store's writer (llm/_types.py)
usage_values = attrgetter(*_FIELDS)  # a Usage's counts, as a tuple in its fields' order
