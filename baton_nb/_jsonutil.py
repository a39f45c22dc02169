"""JSON encoding of step results and params: strict, with pydantic and dataclass support."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ._errors import ResultNotSerializable, describe_error

__all__ = ["dumps", "dumps_result", "loads"]


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"a {type(value).__name__} is not JSON; return a sorted list instead")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One encoder for every call: ``json.dumps`` with options builds a new one each time, which
# cost more than encoding a small step result (docs/performance.md, "Fourth round").
_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    if type(value) is int:  # a common step result: the encoder writes int's repr
        return int.__repr__(value)
    return _ENCODER.encode(value)


def dumps_result(step: str, value: Any) -> str:
    """Encode a step's result, or raise ResultNotSerializable naming the step."""
    try:
        return dumps(value)
    except Exception as exc:  # also nested too deep (RecursionError), a model_dump raising
        problem = str(exc) if isinstance(exc, (TypeError, ValueError)) else describe_error(exc)
        raise ResultNotSerializable(
            f"step {step!r} returned a value that cannot be stored as JSON ({problem}); "
            "return dicts, lists, str, int, float, bool, None or a pydantic model"
        ) from exc


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
