"""Under ``debug=True`` every failed attempt keeps its traceback in the step's captured
context (docs/concepts.md): a raised error, a ``TimeoutError`` (raised, or the step's
``timeout``), a cancellation the step's own code raised."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

import baton_nb as bn


def _tracebacks(run: bn.Run, step: str) -> list[str]:
    return [e["data"]["traceback"] for e in run.context(step) if e["kind"] == "error"]


def test_every_failure_keeps_its_traceback_under_debug(tmp_path: Path) -> None:
    wf = bn.Workflow("t", db=f"sqlite:///{tmp_path / 't.db'}", debug=True)

    @wf.step(max_attempts=1)
    async def raised_timeout(ctx: bn.Context) -> None:
        raise TimeoutError("read timed out")

    @wf.step(max_attempts=1, timeout=0.01)
    async def timed_out(ctx: bn.Context) -> None:
        await anyio.sleep(30)

    @wf.step(max_attempts=1)
    async def own_cancel(ctx: bn.Context) -> None:
        task = asyncio.ensure_future(asyncio.sleep(30))
        task.cancel()
        await task

    @wf.step(max_attempts=1)
    async def plain(ctx: bn.Context) -> None:
        raise ValueError("plain failure")

    run = anyio.run(lambda: wf.run(display=False))
    assert run.steps["raised_timeout"].error == "TimeoutError: read timed out"
    assert run.steps["timed_out"].error == "TimeoutError: attempt timed out after 0.01s"
    for step, raised in [("raised_timeout", "TimeoutError: read timed out"),
                         ("timed_out", "in timed_out"), ("own_cancel", "CancelledError"),
                         ("plain", "ValueError: plain failure")]:  # fmt: skip
        (trace,) = _tracebacks(run, step)
        assert "Traceback (most recent call last)" in trace and raised in trace, step
    loaded = anyio.run(lambda: bn.Run.load(run.id, db=wf.db))
    assert len(_tracebacks(loaded, "raised_timeout")) == 1


@pytest.mark.parametrize("debug", [False])
def test_no_traceback_without_debug(tmp_path: Path, debug: bool) -> None:
    wf = bn.Workflow("t", db=f"sqlite:///{tmp_path / 't.db'}", debug=debug)

    @wf.step(max_attempts=1)
    async def raised_timeout(ctx: bn.Context) -> None:
        raise TimeoutError("read timed out")

    run = anyio.run(lambda: wf.run(display=False))
    assert run.steps["raised_timeout"].error == "TimeoutError: read timed out"
    assert _tracebacks(run, "raised_timeout") == []
