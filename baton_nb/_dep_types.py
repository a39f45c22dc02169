"""Dependency parameters annotated with pydantic models get model instances.

Results are stored as JSON (DESIGN: a step's result is JSON-serialisable), so a step that
returns a pydantic model hands its dependents a dict, on the first run as on a resume (the
result then comes from the store). A dependent whose parameter names the model in its
annotation (``one: Verdict``, ``Verdict | None``, ``list[Verdict]``, ``dict[str,
Verdict]`` for a fan-out group) gets it validated into that type with a pydantic
``TypeAdapter``. Every other annotation is left alone: no validation, no new error.

``None`` always passes: it is what a dependent that ignores a failed dep gets for it, and
what a tolerant step's list/dict holds for a child that did not complete.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
import types
import typing
import warnings
from collections import abc
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DependencyTypeWarning", "model_annotations", "validate_deps"]


def model_annotations(fn: Callable[..., Any], params: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """``(param, annotation)`` for each of ``params`` whose annotation involves a pydantic
    model. Annotations written as strings (``from __future__ import annotations``) are
    resolved in the function's module and closure; one that cannot be yet (a model of a
    later notebook cell) is kept as its text, resolved again when the step runs."""
    if not params or "pydantic" not in sys.modules:
        return ()  # no pydantic model can be named without pydantic imported
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    found = []
    for name in params:
        parameter = signature.parameters.get(name)
        if parameter is None or parameter.annotation is parameter.empty:
            continue
        annotation = _resolved(fn, parameter.annotation)
        if annotation is None and isinstance(parameter.annotation, str):
            found.append((name, parameter.annotation))  # resolved at the step's attempts
        elif annotation is not None and _involves_model(annotation):
            found.append((name, annotation))
    return tuple(found)


class DependencyTypeWarning(UserWarning):
    """A dep's result could not be read as the model its parameter names: the dependent
    gets the stored JSON (a dict), as a parameter without the annotation would."""


def validate_deps(
    step: str, fn: Callable[..., Any], kwargs: dict[str, Any], annotated: Sequence[tuple[str, Any]]
) -> None:
    """Replace in ``kwargs`` the deps named in ``annotated`` by instances of their types.

    The stored JSON is read in pydantic's JSON mode, by field name as well as alias,
    without the model's computed fields: what ``model_dump(mode="json")`` wrote reads back
    even for strict models (dates, UUIDs, enums, tuples as JSON gives them), aliased fields
    and ``extra="forbid"``. The shared value is never changed (other dependents and
    ``run.results`` see the JSON). A result that still does not fit, or a model pydantic
    cannot build an adapter for, leaves the dependent the JSON, with a
    :class:`DependencyTypeWarning` naming the step, the parameter and the reason: a run that
    worked before the annotation was honoured is never failed by it."""
    for name, annotation in annotated:
        value = kwargs.get(name)
        if value is None:
            continue
        if isinstance(annotation, str):  # not resolved when the step was defined: a model
            annotation = _resolved(fn, annotation)  # of a later cell; tried again now
            if annotation is None or not _involves_model(annotation):
                continue
        try:
            adapter = _adapter_of(annotation)
            kwargs[name] = adapter.validate_json(
                json.dumps(_without_computed(value, annotation)), **_by_name()
            )
        except Exception as exc:  # pydantic's errors (validation, an undefined model): warned
            warnings.warn(
                DependencyTypeWarning(
                    f"step {step!r}: the result of {name!r} is passed as stored (JSON), not "
                    f"as {_type_name(annotation)}: {_reason(exc)}. Annotate the parameter "
                    f"with the type step {name!r} returns, or with dict, and read it with "
                    "Model.model_validate(...)"
                ),
                stacklevel=2,
            )


@functools.cache
def _by_name() -> dict[str, Any]:
    """Read aliased fields by their names too (pydantic >= 2.11; model_dump writes names)."""
    from pydantic import VERSION

    return {"by_name": True} if tuple(map(int, VERSION.split(".")[:2])) >= (2, 11) else {}


def _reason(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]  # a ValidationError has at least one
        where = ".".join(str(p) for p in first["loc"]) or "the value"
        return f"{where}: {first['msg']} ({exc.error_count()} error(s))"
    hint = "if the model refers to one defined later, call its model_rebuild()"
    return f"{type(exc).__name__}: {exc} ({hint})"


_SEQUENCES = {
    list,
    set,
    frozenset,
    abc.Sequence,
    abc.MutableSequence,
    abc.Set,
    abc.Collection,
    abc.Iterable,
}
_MAPPINGS = {dict, abc.Mapping, abc.MutableMapping}


def _without_computed(value: Any, tp: Any) -> Any:
    """``value`` without the keys of the computed fields ``model_dump`` added, at any depth
    of ``tp`` (a model, a list / tuple / dict of them, ``X | None``, ``Annotated`` and
    nested ones: ``list[M] | None``, ``dict[str, list[M]]``): a copy, the stored value is
    shared. In a union, the one option that involves a model is followed (``M | str``,
    ``list[M] | int | None``); a union of several options with a model is left as it is
    (which one is meant is pydantic's to pick)."""
    if _is_model(tp):
        computed = tp.model_computed_fields
        if computed and isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in computed}
        return value
    args = typing.get_args(tp)
    if not args:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _without_computed(value, args[0])
    if origin in (typing.Union, types.UnionType):
        with_model = [a for a in args if _involves_model(a)]
        return _without_computed(value, with_model[0]) if len(with_model) == 1 else value
    if isinstance(value, list):
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return [_without_computed(v, args[0]) for v in value]
            pairs = zip(value, args, strict=False)  # tuple[M, N]: by position
            return [_without_computed(v, a) for v, a in pairs] + value[len(args) :]
        if origin in _SEQUENCES:
            return [_without_computed(v, args[0]) for v in value]
    if isinstance(value, dict) and origin in _MAPPINGS and len(args) == 2:
        return {k: _without_computed(v, args[1]) for k, v in value.items()}
    return value


def _adapter_of(annotation: Any) -> Any:
    try:
        return _adapter(annotation)
    except TypeError:  # an unhashable annotation (Annotated[..., {...}]): not memoised
        return _adapter.__wrapped__(annotation)


@functools.lru_cache(maxsize=256)
def _adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(_none_allowed(annotation))


def _resolved(fn: Callable[..., Any], annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(fn)
    if not inspect.isfunction(target):
        target = getattr(type(target), "__call__", target)  # noqa: B004 (a callable object)
    namespace = dict(getattr(target, "__globals__", {}))
    code = getattr(target, "__code__", None)
    cells = getattr(target, "__closure__", None) or ()
    if code is not None:
        for var, cell in zip(code.co_freevars, cells, strict=False):
            try:
                namespace[var] = cell.cell_contents
            except ValueError:  # an empty cell
                continue
    try:
        value = eval(annotation, namespace)  # the function's own annotation, as typing does
        if isinstance(value, str):  # "'Later'": quoted under `from __future__ import annotations`
            value = eval(value, namespace)
        return value
    except Exception:  # a name defined elsewhere or later: not resolved yet
        return None


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _involves_model(tp: Any) -> bool:
    if _is_model(tp):
        return True
    return any(_involves_model(arg) for arg in typing.get_args(tp) if not isinstance(arg, str))


def _none_allowed(tp: Any) -> Any:
    """``tp`` with each model in it also accepting None (a child that did not complete)."""
    if _is_model(tp):
        return tp | None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:  # Annotated[list[Model], ...]: the type, its metadata kept
        return typing.Annotated[(_none_allowed(tp.__origin__), *tp.__metadata__)]
    if origin is None or not args:
        return tp
    new = tuple(_none_allowed(a) if _involves_model(a) else a for a in args)
    if new == args:
        return tp
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[new]  # noqa: UP007 (built from a tuple)
    if isinstance(origin, type):
        return types.GenericAlias(origin, new)
    return tp


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", repr(tp))  # list[Verdict], not list[mod.Verdict]
