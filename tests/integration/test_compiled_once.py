"""What a run's store compiles is compiled once per process, not once per run: on SQLite
each run's store has an engine of its own, whose statements (SQLAlchemy's, and the
runtime's driver statements) were compiled again at every run (docs/performance.md,
"Tenth round: the fixed cost of a run")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.sql import compiler

import baton_nb as bn
from baton_nb.store import Store

pytestmark = pytest.mark.anyio


def _workflow(db: str, name: str) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [1, 2, 3]

    @wf.step(map_over="items")
    async def double(ctx: bn.Context) -> int:
        return int(ctx.item) * 2

    @wf.step()
    async def total(ctx: bn.Context, double: list[int]) -> int:
        return sum(double)

    return wf


async def test_a_run_compiles_nothing_again(
    db_url: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite each run on a new file (a store, an engine of its own); on Postgres each
    run through the loop's shared engine."""
    name = f"compiled-once-{unique}"

    def database(file: str) -> str:
        return f"sqlite:///{tmp_path / file}" if db_url.startswith("sqlite") else db_url

    for file in ("a.db", "b.db"):  # whatever the process compiles for a run: done here
        run = await _workflow(database(file), name).run(display=False)
        assert run.status == "completed"
    compiled: list[Any] = []
    real = compiler.SQLCompiler.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        compiled.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(compiler.SQLCompiler, "__init__", counting)
    db = database("c.db")
    run = await _workflow(db, name).run(display=False)
    assert compiled == []
    monkeypatch.undo()
    # what the statements compiled on other engines wrote and read is all there
    assert run.status == "completed" and run.results["total"] == 12
    async with await Store.open(db) as store:
        row = (await store.list_runs(workflow=name))[0]
        assert row.id == run.id and row.status.value == "completed"
        assert row.created_at is not None and row.created_at.tzinfo is not None
        nodes = await store.get_nodes(run.id)
        assert sorted(n.step for n in nodes) == [
            "double",
            "double[0]",
            "double[1]",
            "double[2]",
            "items",
            "total",
        ]
