"""Kernel › Restart mid-run in a real kernel (jupyter_client), then the same cell again:
the run is resumed, whatever the restart left stored — ``cancelled`` by the interrupt a
restart sends first (with who stopped it) or ``running`` when the process died before its
end was written — and no call is paid twice (counted at the fake provider)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from baton_nb.store import Store
from tests.fakes.provider_server import FakeProviderServer
from tests.integration._kernel import iopub_of, started_kernel

jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.slow

ITEMS = 6
# Even items answer and complete at once; odd ones pay their call, then wait while the
# file ``hang`` exists: the restart comes with 3 children completed and 3 executing.
CELL = """
import pathlib
import anyio
import baton_nb as bn

bn.configure(providers={{"openai": {{
    "base_url": "{base_url}/v1", "api_key": "sk-test-openai-0123456789abcdef"}}}})
wf = bn.Workflow("restart-me", db="sqlite:///{db}")

@wf.step()
async def items(ctx):
    return list(range({items}))

@wf.step(map_over="items")
async def ask(ctx):
    reply = await ctx.complete(model="openai/gpt-4o-mini", prompt=f"item {{ctx.item}}")
    while ctx.item % 2 and pathlib.Path("{hang}").exists():
        await anyio.sleep(0.05)
    return reply.text

run = await wf.run(concurrency={items}, display="text")
print("DONE", run.id, run.status)
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    with started_kernel(cwd=str(tmp_path)) as started:
        yield started


def _outputs(client: Any, msg_id: str, timeout: float = 60) -> str:
    """The text one execution printed (its errors' tracebacks too)."""
    out = []
    for msg in iopub_of(client, msg_id, timeout):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))
    return "".join(out)


async def _progress(db: str) -> tuple[str, int, int]:
    """The run's id, its children completed and the calls stored."""
    async with await Store.open(db) as store:
        runs = await store.list_runs(workflow="restart-me")
        if not runs:
            return "", 0, 0
        nodes = await store.get_nodes(runs[0].id)
        stats = await store.get_stats([runs[0].id])
    done = sum(n.parent == "ask" and n.state.value == "completed" for n in nodes)
    return runs[0].id, done, len(stats)


@pytest.mark.parametrize("how", ["restart", "interrupt-then-restart"])
def test_a_kernel_restart_mid_run_then_the_same_cell_resumes_paying_nothing_twice(
    kernel: Any, tmp_path: Path, fake_providers: FakeProviderServer, how: str
) -> None:
    """``restart``: Kernel › Restart, which interrupts and then shuts the kernel down; the
    run's end may or may not be written before the process dies. ``interrupt-then-restart``:
    the interrupt's end surely written first (Kernel › Interrupt, then Restart): the run
    stored ``cancelled``, which a re-run in the same kernel would not resume."""
    manager, client = kernel
    db = tmp_path / "restart.db"
    hang = tmp_path / "hang"
    hang.write_text("")
    cell = CELL.format(base_url=fake_providers.base_url, db=db, hang=hang, items=ITEMS)
    first = client.execute(cell)
    deadline = time.monotonic() + 60
    while True:  # every call paid and stored, the even children completed: restart now
        run_id, done, stored = anyio.run(_progress, f"sqlite:///{db}")
        if done == ITEMS // 2 and stored == ITEMS == fake_providers.request_count:
            break
        assert time.monotonic() < deadline, (done, stored, fake_providers.request_count)
        time.sleep(0.05)

    if how == "interrupt-then-restart":
        manager.interrupt_kernel()
        assert f'await wf.run(run_id="{run_id}")' in _outputs(client, first)
    manager.restart_kernel()  # what Kernel › Restart does: interrupt, then shut down
    client.wait_for_ready(timeout=60)

    async def stored() -> tuple[str, str | None, int]:
        async with await Store.open(f"sqlite:///{db}") as store:
            row = await store.get_run(run_id)
        assert row is not None
        return row.status.value, row.stopped_by, row.executions

    status, stopped_by, _ = anyio.run(stored)
    # cancelled by the interrupt (who stopped it stored), or left running by the kill
    assert status in ("cancelled", "running"), status
    if how == "interrupt-then-restart":
        assert status == "cancelled"
    if status == "cancelled":
        assert stopped_by is not None and stopped_by.startswith(f"{socket.gethostname()}:")

    hang.unlink()
    printed = _outputs(client, client.execute(cell))
    assert f"resuming run {run_id} of 'restart-me', left unfinished by " in printed, printed
    assert f"DONE {run_id} completed" in printed, printed
    status, stopped_by, executions = anyio.run(stored)
    assert (status, stopped_by, executions) == ("completed", None, 2)
    paid = Counter(str(r.json["messages"][-1]["content"]) for r in fake_providers.requests)
    assert paid == Counter({f"item {i}": 1 for i in range(ITEMS)})  # nothing paid twice
