"""JSON encoding of step results and params: strict, with pydantic, dataclass and
``Decimal`` support."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from decimal import Decimal
from typing import Any

from ._errors import ResultNotSerializable, describe_error
from ._money import fmt_money

__all__ = ["dumps", "dumps_result", "loads"]

_STORABLE = "dicts, lists, str, int, float, bool, None, Decimal or a pydantic model"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Money (``completion.cost``) and any other Decimal: its exact value as a decimal
        # string without exponent or trailing zeros (``"0.000211625"``), as pydantic's JSON
        # mode stores a Decimal field. JSON has no exact number type a float would not
        # read back as: it comes back as that str (``Decimal(text)`` is the same amount).
        if not value.is_finite():
            raise ValueError(f"Decimal('{value}') is not a finite amount")
        return fmt_money(value)
    if _library_object(value) is not None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"a {type(value).__name__} is not JSON; return a sorted list instead")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _library_object(value: Any) -> str | None:
    """What to return instead of a baton_nb answer object (a ``Completion``, a
    ``ToolRun``): never stored whole (its raw provider body and messages are in the call
    store already, and it would read back as a dict, not the object)."""
    kind = type(value)
    if not kind.__module__.startswith("baton_nb."):  # named, not imported: a lower layer
        return None
    if kind.__name__ == "Completion":
        return (
            "return its text (c.text), its structured answer (c.parsed) or a dict of the "
            'fields you need, e.g. {"text": c.text, "cost": c.cost}'
        )
    if kind.__name__ == "ToolRun":
        return (
            "return its final text (r.text), its structured answer (r.parsed) or a dict "
            'of the fields you need, e.g. {"text": r.text, "cost": r.cost}'
        )
    return None


# One encoder for every call: ``json.dumps`` with options builds a new one each time, which
# cost more than encoding a small step result (docs/performance.md, "Fourth round").
_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    if type(value) is int:  # a common step result: the encoder writes int's repr
        return int.__repr__(value)
    return _ENCODER.encode(value)


def dumps_result(step: str, value: Any) -> str:
    """Encode a step's result, or raise ResultNotSerializable naming the step, where in the
    value the object that cannot be stored is, its type and what to return instead."""
    try:
        return dumps(value)
    except Exception as exc:  # also nested too deep (RecursionError), a model_dump raising
        problem = str(exc) if isinstance(exc, (TypeError, ValueError)) else describe_error(exc)
        found = (
            _unstorable(value, "result", 0, set()) if not isinstance(exc, RecursionError) else None
        )
        if found is None:
            instead = f"return {_STORABLE}"
            if "Circular reference" in problem:  # the encoder's words for a value in itself
                instead = "it contains itself: return one without the reference back"
            raise ResultNotSerializable(
                f"step {step!r} returned a value that cannot be stored as JSON ({problem}); "
                f"{instead}"
            ) from exc
        where, what, hint = found
        if where == "result":
            said = f"step {step!r} returned {what}, which cannot be stored as JSON"
        else:
            said = (
                f"step {step!r} returned a value that cannot be stored as JSON: {where} is {what}"
            )
        raise ResultNotSerializable(f"{said}; {hint}" if hint else said) from exc


def _article(name: str) -> str:
    """``a Completion``, ``an Event``, ``a Usage``, ``a UUID`` (a leading U and a name in
    capitals read as a consonant, mostly)."""
    vowel = name[:1].lower() in "aeio" and not name[:2].isupper()
    return f"{'an' if vowel else 'a'} {name}"


def _unstorable(value: Any, where: str, depth: int, seen: set[int]) -> tuple[str, str, str] | None:
    """``(where, what, hint)`` for the first object in ``value`` that cannot be stored
    (``result['cost']``, ``a Completion``, what to return instead); None if none is found
    (the error came from elsewhere: a ``model_dump`` that raised, a circular reference).
    ``seen``: the containers walked already, each once (a value that refers to itself, or
    shares parts, is walked in linear time; the encoder said what was circular)."""
    if depth > 100 or value is None or isinstance(value, (str, bool, int)):
        return None
    name = type(value).__name__
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return where, f"the float {value!r}", "JSON has no NaN or infinity: return None or a str"
    if isinstance(value, Decimal):
        if value.is_finite():
            return None
        return where, f"Decimal('{value}')", "only finite amounts are stored: return None or a str"
    if inspect.iscoroutine(value):
        # what to write instead is said by the caller, which knows the step (``_attempt``)
        return where, "a coroutine (a call not awaited)", ""
    instead = _library_object(value)
    if instead is not None:
        return where, _article(name), instead
    if isinstance(value, (dict, list, tuple)) or dataclasses.is_dataclass(value):
        if id(value) in seen:
            return None
        seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if key is not None and not isinstance(key, (str, int, float, bool)):
                return (
                    f"{where}'s key {key!r}",
                    f"of type {type(key).__name__}",
                    "JSON keys are str (int, float, bool and None are written as str): "
                    "use str keys",
                )
            found = _unstorable(item, f"{where}[{key!r}]", depth + 1, seen)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{where}[{index}]", depth + 1, seen)
            if found is not None:
                return found
        return None
    if callable(getattr(value, "model_dump", None)):
        return None  # a pydantic model: dumped by pydantic (its own error, if any)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found = _unstorable(getattr(value, f.name), f"{where}.{f.name}", depth + 1, seen)
            if found is not None:
                return found
        return None
    if isinstance(value, (set, frozenset)):
        return where, _article(name), "JSON has no sets: return a sorted list instead"
    return where, _article(name), f"return {_STORABLE} (e.g. its fields as a dict, or str(...))"


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
