"""A ``Run`` shown as a cell's result in a fresh kernel (jupyter_client) that never imported
``baton_nb.widget``: ``bn.Run.load`` (as after "Restart the kernel now", docs/batch.md) and
a live Run both show the DAG view — the saved snapshot, the widget — not a line of text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
from tests.integration._kernel import iopub_of, started_kernel

jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.slow

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

LOAD = """
import sys
import baton_nb as bn

[last] = await bn.runs("sqlite:///{db}", limit=1)
stored = await bn.Run.load(last.id, db="sqlite:///{db}")
print("widget imported before:", "baton_nb.widget" in sys.modules)
stored
"""

LIVE = """
live = bn.Run("live-run-of-this-kernel", "shown")
live.status = "running"
live
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    with started_kernel(cwd=str(tmp_path)) as started:
        yield started


def _stored_run(db: Path) -> str:
    wf = bn.Workflow("shown", db=f"sqlite:///{db}")

    @wf.step()
    async def a(ctx: bn.Context) -> int:
        return 1

    @wf.step()
    async def b(ctx: bn.Context, a: int) -> int:
        return a + 1

    async def run() -> str:
        return (await wf.run(display=False)).id

    return anyio.run(run)


def _shown(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """What the cell printed, and the bundles it showed (its result's or displayed)."""
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert not errors, "\n".join(line for e in errors for line in e["traceback"])
    printed = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
    bundles = [
        m["content"]["data"] for m in msgs if m["msg_type"] in ("execute_result", "display_data")
    ]
    return printed, bundles


def test_a_loaded_run_shows_the_snapshot_without_importing_the_widget(
    kernel: Any, tmp_path: Path
) -> None:
    _manager, client = kernel
    db = tmp_path / "rep.db"
    run_id = _stored_run(db)

    printed, [bundle] = _shown(iopub_of(client, client.execute(LOAD.format(db=db))))
    assert "widget imported before: False" in printed  # the user imported baton_nb only
    assert "bn-snapshot" in bundle.get("text/html", ""), bundle  # the saved DAG snapshot
    assert run_id in bundle["text/plain"] and "completed" in bundle["text/plain"]

    _printed, [live] = _shown(iopub_of(client, client.execute(LIVE)))
    assert WIDGET_MIME in live and "text/html" in live  # the widget, its static view beside
