"""``display="text"`` in a real Jupyter kernel: the progress line is rewritten in place
(carriage returns, which the notebook renders), although the kernel's stderr is no
terminal; whole lines are for a non-terminal stream outside a kernel (a log, a pipe)."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.slow

CODE = """
import sys, io, anyio, baton_nb as bn
from baton_nb.widget import TextProgress
print("isatty", sys.stderr.isatty())
wf = bn.Workflow("jt", db="sqlite:///{db}")

@wf.step()
async def items(ctx):
    return list(range(3))

@wf.step(map_over="items")
async def work(ctx):
    await anyio.sleep(0.05)
    return ctx.item

run = await wf.run(display="text")
log = io.StringIO()  # a file opened in the kernel is still no terminal: whole lines
TextProgress(run, stream=log).close()
print("log lines", repr(log.getvalue()))
"""


def test_text_progress_in_a_kernel_rewrites_its_line(tmp_path: Path) -> None:
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        msg_id = client.execute(CODE.format(db=tmp_path / "jt.db"))
        streams: dict[str, str] = {"stdout": "", "stderr": ""}
        while True:
            try:
                msg = client.get_iopub_msg(timeout=60)
            except queue.Empty:
                pytest.fail(f"no idle from the kernel; so far {streams}")
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error":
                pytest.fail("\n".join(content["traceback"]))
            if kind == "stream":
                streams[content["name"]] += content["text"]
            if kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "isatty False" in streams["stdout"]
    err = streams["stderr"]
    assert "\r" in err and "[jt]" in err and "4/4 completed" in err  # rewritten in place
    assert "log lines '[jt]" in streams["stdout"] and "\\r" not in streams["stdout"]
