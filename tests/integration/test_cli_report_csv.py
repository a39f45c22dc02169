"""``baton-nb report --csv PATH`` prints the totals and the file written, not the table
(which is in the file: a big map's table is a wall of lines); ``--table`` prints it too."""

from __future__ import annotations

import csv
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.cli import main
from baton_nb.reports import grouped_text, summary_text

ITEMS = 30


def _map_run(db: str) -> bn.Run:
    wf = bn.Workflow("many", db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"topic {i}" for i in range(ITEMS)]

    @wf.step(map_over="items")
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(prompt=ctx.item, model="mock/gpt-4o-mini", max_tokens=20)
        return str(answer.text)

    run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "completed"
    return run


@pytest.fixture
def many(tmp_path: Path) -> tuple[str, bn.Run]:
    db = f"sqlite:///{tmp_path / 'many.db'}"
    return db, _map_run(db)


def test_csv_prints_the_totals_and_the_path_not_the_table(
    many: tuple[str, bn.Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run = many
    path = tmp_path / "costs.csv"
    assert main(["report", run.id, "--csv", str(path), "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        summary_text(run.report()),
        f"wrote {ITEMS} rows (one per run, step and model) to {path}",
        "the table is in the CSV; --table prints it here too",
    ]
    assert out.startswith("Cost: $") and f" for 1 run, {ITEMS} calls, " in out
    assert "ask[0]" not in out  # no row of the table
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == [f"ask[{i}]" for i in range(ITEMS)]


def test_csv_with_table_prints_both(
    many: tuple[str, bn.Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run = many
    path = tmp_path / "costs.csv"
    assert main(["report", run.id, "--csv", str(path), "--table", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out == f"{run.report()}\nwrote {ITEMS} rows (one per run, step and model) to {path}\n"
    assert all(f"ask[{i}]" in out for i in range(ITEMS))

    assert main(["report", run.id, "--by", "step", "--csv", str(path), "--table", "--db", db]) == 0
    out = capsys.readouterr().out
    grouped = grouped_text(run.report(), run.report().by_step())  # Cost: line, table, total
    assert out == f"{grouped}\nwrote 1 row (one per step) to {path}\n"


def test_by_with_csv_prints_the_totals_too(
    many: tuple[str, bn.Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run = many
    path = tmp_path / "models.csv"
    assert main(["report", "--by", "model", "--csv", str(path), "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        summary_text(run.report()),
        f"wrote 1 row (one per model) to {path}",
        "the table is in the CSV; --table prints it here too",
    ]


def test_without_csv_the_table_is_printed_as_before(
    many: tuple[str, bn.Run], capsys: pytest.CaptureFixture[str]
) -> None:
    db, run = many
    assert main(["report", run.id, "--db", db]) == 0
    assert capsys.readouterr().out == f"{run.report()}\n"
    assert main(["report", run.id, "--table", "--db", db]) == 0  # the same: asked twice
    assert capsys.readouterr().out == f"{run.report()}\n"


def test_no_calls_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'none.db'}"
    wf = bn.Workflow("quiet", db=db)

    @wf.step()
    async def only(ctx: bn.Context) -> int:
        return 1

    anyio.run(lambda: wf.run(display=False))
    path = tmp_path / "none.csv"
    assert main(["report", "--csv", str(path), "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Cost: no LLM calls.",
        f"wrote 0 rows (one per run, step and model) to {path}",
    ]


def test_table_with_json_is_a_usage_error(
    many: tuple[str, bn.Run], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = many
    assert main(["report", "--json", "--table", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "--table prints the table beside --csv; --json prints JSON only" in err
