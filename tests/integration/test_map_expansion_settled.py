"""A map settled early (a quorum met) and killed before its last chunks were stored: the
resume opens no settled group again, so it stores the missing children cancelled itself
(``runtime/_expand.store_settled_rest``); every item has its one row, nothing settled
changes and nothing runs again."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.store import Store
from tests.integration._process import kill9, load_module, wait_for_file, workflow_process
from tests.integration.test_map_expansion import MAP_MODULE

pytestmark = pytest.mark.anyio

ITEMS = 50
QUORUM_MODULE = MAP_MODULE.replace('@wf.step(map_over="src")', '@wf.step(map_over="src", quorum=2)')


@pytest.mark.slow  # a real subprocess
async def test_killed_after_a_quorum_before_the_last_chunks_every_item_gets_its_row(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    assert QUORUM_MODULE != MAP_MODULE
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "quorum.py"
    script.write_text(QUORUM_MODULE)
    run_id = f"quorum-{unique}"
    env = {**os.environ, "MARKS": str(marks), "ITEMS": str(ITEMS)}
    # "before": it stalls before storing chunk 3
    async with workflow_process(script, db_url, run_id, "before", env=env) as proc:
        with anyio.fail_after(30):
            await wait_for_file(proc, marks / "stalled")
            async with await Store.open(db_url) as store:  # the quorum met and committed
                while True:
                    group = {n.step: n for n in await store.get_nodes(run_id)}["each"]
                    if group.state == "completed":
                        break
                    await anyio.sleep(0.02)
        kill9(proc)

    async with await Store.open(db_url) as store:
        before = {n.step: n for n in await store.get_nodes(run_id)}
    children_before = {name: n for name, n in before.items() if n.parent == "each"}
    assert len(children_before) == 20  # two chunks of 10 stored, the third not
    ran_before = Counter((marks / "ran").read_text().split())

    monkeypatch.setenv("MARKS", str(marks))
    monkeypatch.setenv("ITEMS", str(ITEMS))
    wf = load_module(script, "quorum_workflow").build(db_url)
    run = await wf.run(run_id=run_id, display=False)  # the dead holder's lease taken over
    assert run.status == "completed", run.failed_steps
    assert Counter((marks / "ran").read_text().split()) == ran_before  # nothing ran again
    assert run.steps["each"].children == [f"each[{i}]" for i in range(ITEMS)]

    async with await Store.open(db_url) as store:
        after = {n.step: n for n in await store.get_nodes(run_id)}
    children = {name: n for name, n in after.items() if n.parent == "each"}
    assert sorted(children) == sorted(f"each[{i}]" for i in range(ITEMS))  # one row each
    group_before, group_after = before["each"], after["each"]
    assert (group_after.state, group_after.result) == (group_before.state, group_before.result)
    for name, child in children_before.items():  # nothing settled changed
        if child.state in ("completed", "cancelled", "discarded"):
            assert (children[name].state, children[name].error) == (child.state, child.error)
    for i in range(20, ITEMS):
        child = children[f"each[{i}]"]
        assert child.state == "cancelled", child
        assert child.error == "not needed: quorum of 'each' met"
        assert child.item_index == i and child.attempt == 0
    loaded = await bn.Run.load(run_id, db=db_url)
    assert loaded.steps["each"].children == [f"each[{i}]" for i in range(ITEMS)]
    assert loaded.counts() == run.counts()
    assert loaded.counts()["cancelled"] >= ITEMS - 20
