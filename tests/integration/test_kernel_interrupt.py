"""Kernel › Interrupt and ``run.cancel()`` in a real kernel (DESIGN §4): the run is stored
resumable, ``wf.last_run`` holds it, and the cell ends with one short message naming the
run, what finished and the line that resumes it — no traceback through the library."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._kernel import iopub_of, started_kernel

jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.slow

SETUP = """
import asyncio, pathlib
import baton_nb as bn

flow = bn.Workflow("interrupt-me", db="sqlite:///{db}")
calls = {{"first": 0, "slow": 0}}
hang = True

@flow.step()
async def first(ctx):
    calls["first"] += 1
    return 1

@flow.step()
async def slow(ctx, first):
    calls["slow"] += 1
    pathlib.Path("{marker}").write_text("executing")
    if hang:
        await asyncio.sleep(60)
    return first + 1

@flow.step()
async def last(ctx, slow):
    return slow + 1
"""


@pytest.fixture
def kernel() -> Iterator[Any]:
    with started_kernel() as started:
        yield started


_outputs = iopub_of


def _run(client: Any, code: str) -> list[dict[str, Any]]:
    return _outputs(client, client.execute(code))


def _text(msgs: list[dict[str, Any]]) -> str:
    parts = []
    for msg in msgs:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            parts.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            parts.append(content["data"].get("text/plain", ""))
    return "".join(parts)


def _errors(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["content"] for m in msgs if m["msg_type"] == "error"]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.05)


def test_kernel_interrupt_leaves_a_resumable_run_and_one_short_message(
    kernel: Any, tmp_path: Path
) -> None:
    manager, client = kernel
    marker = tmp_path / "executing"
    assert not _errors(_run(client, SETUP.format(db=tmp_path / "k.db", marker=marker)))
    msg_id = client.execute("run = await flow.run(display=False)")
    _wait_for(marker)
    manager.interrupt_kernel()
    [error] = _errors(_outputs(client, msg_id))
    shown = "\n".join(error["traceback"])
    assert len(error["traceback"]) <= 3, shown  # one message, no frames through the library
    assert "File " not in shown and "baton_nb" not in shown
    assert "interrupted" in shown and "1 completed" in shown and "1 cancelled" in shown
    resume = [line for line in shown.splitlines() if "await flow.run(run_id=" in line]
    assert resume, shown
    line = resume[0][resume[0].index("await flow.run") :]

    state = _text(_run(client, "print(flow.last_run.id, flow.last_run.status)"))
    run_id = state.split()[0]
    assert state.split()[1] == "cancelled" and run_id in line

    # The printed line resumes it: `first` is not run again.
    msgs = _run(client, f"hang = False\nrun = {line}\nprint(run.id, run.status, calls)")
    assert not _errors(msgs), _errors(msgs)
    assert f"{run_id} completed {{'first': 1, 'slow': 2}}\n" in _text(msgs)


def test_run_cancel_in_a_kernel_prints_the_resume_line(kernel: Any, tmp_path: Path) -> None:
    _manager, client = kernel
    marker = tmp_path / "executing"
    assert not _errors(_run(client, SETUP.format(db=tmp_path / "c.db", marker=marker)))
    code = f"""
async def cancel_soon():
    while not pathlib.Path("{marker}").exists():
        await asyncio.sleep(0.01)
    flow.last_run.cancel()   # the live Run, from another task
asyncio.ensure_future(cancel_soon())
run = await flow.run(display="text")
"""
    msgs = _run(client, code)
    assert not _errors(msgs), _errors(msgs)
    text = _text(msgs)
    assert "cancelled, stored and resumable" in text and "1 completed" in text
    assert 'await flow.run(run_id="' in text
    state = _text(_run(client, "print(run.status, run is flow.last_run)"))
    assert state.strip() == "cancelled True"
