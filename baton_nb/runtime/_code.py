"""Which code a worker runs for a submitted run (DESIGN §10).

A workflow defined in an importable module is referenced by import path
(``module:attribute``) and a hash of its steps' code: a worker whose module has other code
refuses the run. A workflow defined in a notebook (``__main__``) travels by value:
cloudpickled into the database, unpickled by the worker. Whoever can write the database
can therefore run code on the workers; ``--refuse-by-value`` turns by-value runs away.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import types
from functools import lru_cache
from typing import Any

from .._errors import ConfigurationError
from .._graph import GraphSpec

__all__ = ["code_hash", "code_ref_of", "dumps_workflow", "loads_workflow"]


def _fn_code(fn: Any, files: dict[str, tuple[int, int] | None]) -> str:
    """A step function's code as text, once per code object (a plain function) or function
    object: ``inspect.getsource`` costs ~50 µs (~0.3 ms of a run of three steps), and a
    fan-out of 1,000 steps of one function hashed it per step on every ``wf.run()``
    (``resume_key``: 50 ms a run). A plain function's text is that of its code object
    (``getsource`` reads the lines its code says), which every function made by one
    ``def`` shares: the steps of a workflow built by a function, called again for each
    run, are read once (docs/performance.md, "Tenth round"). A function redefined in a
    notebook cell has a new code object, so a new entry. A file's modification time and
    size are part of the key (``files``: looked at once per ``code_hash``): code objects
    compare equal when only a default value, a decorator line or a comment differs, and
    ``getsource`` reads those, so a module edited and reloaded is read again."""
    if type(fn) is types.FunctionType and not hasattr(fn, "__wrapped__"):
        code = fn.__code__
        path = code.co_filename
        if path not in files:
            files[path] = _file_version(path)
        # equal code objects of two files are equal keys (their file is not compared)
        key = (code, path, files[path])
        found = _BY_CODE.get(key)
        if found is None:
            if len(_BY_CODE) >= _CACHED:
                _BY_CODE.clear()
            found = _BY_CODE[key] = _fn_code_of(fn)
        return found
    try:
        return _fn_code_cached(fn)
    except TypeError:  # an unhashable callable
        return _fn_code_of(fn)


_CACHED = 4096
_BY_CODE: dict[tuple[types.CodeType, str, tuple[int, int] | None], str] = {}


def _file_version(path: str) -> tuple[int, int] | None:
    """A source file's modification time and size; None for code with no file on disk (a
    notebook cell: its name holds a hash of its text)."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=_CACHED)
def _fn_code_cached(fn: Any) -> str:
    return _fn_code_of(fn)


def _fn_code_of(fn: Any) -> str:
    try:
        return str(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return repr(fn)
        return _code_text(code)


def _code_text(code: types.CodeType) -> str:
    """A function's code without its source (a REPL, ``exec``, ``python -c``), the same in
    every process: its bytecode, names and constants, nested code (a comprehension, an
    inner function) by the same text, not by ``repr`` (which holds a memory address), and
    a frozenset's members sorted (their order follows the process's string hashing)."""
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames)]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_text(const))
        elif isinstance(const, frozenset):
            parts.append(repr(sorted(map(repr, const))))
        else:
            parts.append(repr(const))
    return "\0".join(parts)


def code_hash(graph: GraphSpec) -> str:
    """A hash of the steps' code and shape: equal on two machines iff they run the same."""
    digest = hashlib.sha256(graph.name.encode())
    files: dict[str, tuple[int, int] | None] = {}  # each source file looked at once
    for name in sorted(graph.steps):
        spec = graph.steps[name]
        digest.update(f"\0{name}\0{sorted(spec.deps)}\0{spec.map_over}\0".encode())
        digest.update(_fn_code(spec.fn, files).encode())
    return digest.hexdigest()[:16]


def code_ref_of(workflow: Any) -> str | None:
    """``module:attribute`` of an importable module that holds ``workflow``; None for a
    workflow defined in a notebook or a script (``__main__``): it goes by value."""
    for module_name in {getattr(s.fn, "__module__", None) for s in workflow._steps.values()}:
        if not module_name or module_name == "__main__":
            continue
        module = sys.modules.get(module_name)
        for attr, value in vars(module or object()).items():
            if value is workflow:
                return f"{module_name}:{attr}"
    return None


def dumps_workflow(workflow: Any) -> bytes:
    """The workflow by value (cloudpickle), for workers that do not have its code."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(workflow))
    except Exception as exc:
        raise ConfigurationError(
            f"workflow {workflow.name!r} cannot be shipped to workers by value: {exc}; "
            "define it in an importable module and start the workers with MODULE:WORKFLOW"
        ) from exc


def loads_workflow(blob: bytes) -> Any:
    import cloudpickle

    return cloudpickle.loads(blob)
