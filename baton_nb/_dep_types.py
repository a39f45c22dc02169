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
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import ConfigurationError

__all__ = ["model_annotations", "validate_deps"]


def model_annotations(fn: Callable[..., Any], params: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """``(param, annotation)`` for each of ``params`` whose annotation involves a pydantic
    model. Annotations written as strings (``from __future__ import annotations``) are
    resolved in the function's module and closure; one that cannot be is left alone."""
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
        if annotation is not None and _involves_model(annotation):
            found.append((name, annotation))
    return tuple(found)


def validate_deps(step: str, kwargs: dict[str, Any], annotated: Sequence[tuple[str, Any]]) -> None:
    """Validate in place the deps of ``kwargs`` named in ``annotated`` into their types.
    Raises ConfigurationError naming the step, the parameter and what to do."""
    from pydantic import ValidationError

    for name, annotation in annotated:
        value = kwargs.get(name)
        if value is None:
            continue
        try:
            kwargs[name] = _adapter_of(annotation).validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]  # a ValidationError has at least one
            where = ".".join(str(p) for p in first["loc"]) or "the value"
            raise ConfigurationError(
                f"step {step!r}: the result of {name!r} does not fit the annotation of its "
                f"parameter {name}: {_type_name(annotation)} ({where}: {first['msg']}; "
                f"{exc.error_count()} error(s)). Annotate the "
                f"parameter with the type step {name!r} returns, or with dict (no "
                "validation), and read it with Model.model_validate(...)"
            ) from None


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
        return eval(annotation, namespace)  # the function's own annotation, as typing does
    except Exception:  # a name defined elsewhere or later: not resolved, left alone (no
        return None  # validation), as an annotation naming no model


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
