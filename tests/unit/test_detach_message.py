"""The line a cell of ``wf.run(..., workers=True)`` ends with when it stops before the run:
its code on lines of its own, that run as they are copied (the password masked)."""

from __future__ import annotations

import ast

import pytest

from baton_nb._detach import detached

RUN_ID = "3a6d0c2e9f2b4c1d8e7f6a5b4c3d2e1f"


def _said(db: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    detached(RUN_ID, db, RuntimeError("stopped"))  # outside IPython: printed
    return capsys.readouterr().out.splitlines()


def test_the_follow_again_code_is_alone_on_its_lines_and_runs_as_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = 'postgresql://baton:s3cret"x@db.example/baton'
    prose, *code = _said(db, capsys)
    assert prose.startswith(f"detached from run {RUN_ID}: it goes on on the workers.")
    assert code == [
        f'run = await bn.SubmittedRun.attach("{RUN_ID}", db="postgresql://baton:***@db.example/baton")',
        "await run.wait()",
    ]
    assert "s3cret" not in "\n".join(code)
    tree = ast.parse("async def cell():\n" + "".join(f"    {line}\n" for line in code))
    [call] = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args]
    assert ast.literal_eval(call.args[0]) == RUN_ID


def test_without_a_database_the_default_one_is_meant(capsys: pytest.CaptureFixture[str]) -> None:
    _prose, *code = _said("", capsys)
    assert code == [f'run = await bn.SubmittedRun.attach("{RUN_ID}")', "await run.wait()"]
