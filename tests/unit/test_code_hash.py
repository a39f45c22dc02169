"""``code_hash`` of steps whose source cannot be read (a REPL, ``exec``, ``python -c``):
the same in every process, so a re-run there resumes its run and a worker accepts it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import baton_nb as bn
from baton_nb.runtime._code import code_hash

SCRIPT = """
import baton_nb as bn
from baton_nb.runtime._code import code_hash
src = '''
wf = bn.Workflow("x", db="sqlite:///:memory:")
@wf.step()
async def a(ctx):
    return [i for i in range(3) if str(i) in {"a", "b", "c"}]
'''
ns = {"bn": bn}
exec(src, ns)
print(code_hash(ns["wf"].graph()))
"""


def test_the_hash_of_code_without_source_is_the_same_in_two_processes() -> None:
    # A comprehension is a nested code object (its repr holds a memory address) and a
    # frozenset constant's order follows the process's string hashing: neither shows.
    hashes = {
        subprocess.run(
            [sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert len(hashes) == 1 and len(next(iter(hashes))) == 16


def test_a_function_shared_by_many_steps_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out of 1,000 steps of one function read its source per step on every
    ``wf.run()`` (``resume_key``): 50 ms a run, the fan-out benchmark at half speed."""
    reads: list[object] = []
    real = inspect.getsource

    def counting(obj: object) -> str:
        reads.append(obj)
        return real(obj)  # type: ignore[arg-type]

    async def shared(ctx: bn.Context) -> None:
        return None

    wf = bn.Workflow("many", db="sqlite:///:memory:")
    for i in range(1000):
        wf.add(f"s{i}", shared)
    monkeypatch.setattr(inspect, "getsource", counting)
    first = code_hash(wf.graph())
    assert code_hash(wf.graph()) == first
    assert len(reads) <= 1


def test_the_steps_of_a_workflow_built_again_are_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A workflow made by a function for each run: its steps are new function objects of
    the same code objects, read once (the source of one ``def`` is the same), and hashed
    the same; a step of other code is read and hashed apart."""
    reads: list[object] = []
    real = inspect.getsource

    def counting(obj: object) -> str:
        reads.append(obj)
        return real(obj)  # type: ignore[arg-type]

    def build(plus: int) -> bn.Workflow:
        wf = bn.Workflow("built", db="sqlite:///:memory:")

        @wf.step()
        async def a(ctx: bn.Context) -> int:
            return 1

        if plus:

            @wf.step()
            async def b(ctx: bn.Context, a: int) -> int:
                return a + 1

        else:

            @wf.step()  # the same name, other code
            async def b(ctx: bn.Context, a: int) -> int:  # type: ignore[no-redef]
                return a - 1

        return wf

    monkeypatch.setattr(inspect, "getsource", counting)
    first = code_hash(build(1).graph())
    assert len(reads) == 2
    assert code_hash(build(1).graph()) == first
    assert len(reads) == 2
    assert code_hash(build(0).graph()) != first
    assert len(reads) == 3


def test_a_module_edited_and_reloaded_is_hashed_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's code object is equal when only a default value changed (defaults live on
    the function): the source read per code object is kept per file version too, so an
    edited module reloaded (``importlib.reload``, ``%autoreload``) is read and hashed again
    (else a worker runs its old code, a resume keeps the old code's steps)."""
    import importlib
    import os

    source = """import baton_nb as bn
wf = bn.Workflow("reloaded", db="sqlite:///:memory:")

@wf.step()
async def draft(ctx: bn.Context, temperature: float = {t}) -> float:
    return temperature
"""
    module = tmp_path / "reloaded_steps.py"
    module.write_text(source.format(t=0.2))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "reloaded_steps", raising=False)
    loaded = importlib.import_module("reloaded_steps")
    before = code_hash(loaded.wf.graph())
    module.write_text(source.format(t=0.9))  # the same size: the time tells the edit
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = importlib.reload(loaded)
    assert code_hash(again.wf.graph()) != before
    monkeypatch.delitem(sys.modules, "reloaded_steps", raising=False)
