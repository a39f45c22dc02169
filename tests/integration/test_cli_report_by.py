"""``baton-nb report --by GROUP --csv PATH`` writes the grouping asked for, in the CSV's
columns; without ``--by`` a row per (run, step, model), and the output says which."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.cli import main
from baton_nb.reports import CSV_COLUMNS


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    return rows


def test_report_by_writes_the_grouping_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATON_NB_DB", raising=False)
    assert main(["demo", "--prompts", "2"]) == 0  # 2 runs x (3 models + synthesis)
    capsys.readouterr()
    report = anyio.run(lambda: bn.report("sqlite:///baton.db"))
    run_ids = report.run_ids

    assert main(["report", "--csv", "all.csv"]) == 0
    assert f"wrote 8 rows (one per run, step and model) to {tmp_path / 'all.csv'}" in (
        capsys.readouterr().out
    )
    assert len(_rows(tmp_path / "all.csv")) == 8

    assert main(["report", "--by", "model", "--csv", "models.csv"]) == 0
    out = capsys.readouterr().out
    assert f"wrote 3 rows (one per model) to {tmp_path / 'models.csv'}" in out
    by_model = {r["model"]: r for r in _rows(tmp_path / "models.csv")}
    assert list(by_model) == list(report.by_model())
    for model, totals in report.by_model().items():
        row = by_model[model]
        assert (int(row["calls"]), Decimal(row["cost_usd"])) == (totals.calls, totals.cost)
        assert int(row["output_tokens"]) == totals.usage.output_tokens
        # one workflow and provider for all: kept; several runs: the run column is empty
        assert (row["workflow"], row["provider"], row["run_id"]) == ("baton-demo", "mock", "")
    # mock/gpt-4o-mini answers and synthesises: two steps, so no step named
    assert by_model["mock/gpt-4o-mini"]["step"] == ""
    assert by_model["mock/claude-haiku-4-5"]["step"] == "answer[mock/claude-haiku-4-5]"

    assert main(["report", "--by", "step", "--csv", "steps.csv"]) == 0
    assert "wrote 2 rows (one per step)" in capsys.readouterr().out
    steps = {r["step"]: r for r in _rows(tmp_path / "steps.csv")}
    assert list(steps) == ["answer", "synthesis"]  # fan-out children summed, as printed
    assert (steps["answer"]["model"], steps["synthesis"]["model"]) == ("", "mock/gpt-4o-mini")
    assert int(steps["answer"]["calls"]) == report.by_step()["answer"].calls == 6

    assert main(["report", *run_ids, "--by", "run", "--csv", "runs.csv"]) == 0
    assert "wrote 2 rows (one per run)" in capsys.readouterr().out
    runs = _rows(tmp_path / "runs.csv")
    assert sorted(r["run_id"] for r in runs) == sorted(run_ids)
    assert sum(Decimal(r["cost_usd"]) for r in runs) == report.total
    assert all(r["step"] == "" and r["model"] == "" for r in runs)


def test_report_by_csv_keeps_a_groups_known_cost_beside_its_unpriced_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group summing a priced and an unpriced model writes the priced model's cost (the
    table's ``0.0123+?``) and counts the unpriced call: every CSV sums to the known total."""
    db = f"sqlite:///{tmp_path / 'mix.db'}"
    wf = bn.Workflow("mix", db=db)

    @wf.step()
    async def both(ctx: bn.Context) -> str:
        a = await ctx.complete(prompt="x", model="mock/gpt-4o-mini", max_tokens=20)
        b = await ctx.complete(prompt="y", model="mock/zzqq-unpriced", max_tokens=20)
        return str(a.text) + str(b.text)

    with pytest.warns(UserWarning, match="no price known"):
        anyio.run(lambda: wf.run(display=False))
    report = anyio.run(lambda: bn.report(db))
    assert report.unpriced_calls == 1 and report.total > 0
    for by in (None, "step", "run", "model"):
        path = tmp_path / f"{by}.csv"
        argv = ["report", "--db", db, "--csv", str(path), "--table"]  # the table printed too
        assert main([*argv, *(["--by", by] if by else [])]) == 0
        printed = capsys.readouterr().out
        rows = _rows(path)
        known = sum((Decimal(r["cost_usd"]) for r in rows if r["cost_usd"]), Decimal(0))
        assert known == report.total, by
        assert sum(int(r["unpriced_calls"]) for r in rows) == 1, by
        if by in ("step", "run"):  # one row: both models summed
            (row,) = rows
            assert (Decimal(row["cost_usd"]), row["unpriced_calls"]) == (report.total, "1")
            assert f"{row['cost_usd']}+?" in printed.replace("$", "") or "+?" in printed
    # a row whose calls were all unpriced keeps an empty cost, never 0
    by_model = {r["model"]: r for r in _rows(tmp_path / "model.csv")}
    assert by_model["mock/zzqq-unpriced"]["cost_usd"] == ""
    assert by_model["mock/zzqq-unpriced"]["unpriced_calls"] == "1"
    assert by_model["mock/gpt-4o-mini"]["unpriced_calls"] == "0"


def test_report_by_starts_with_the_cost_line_and_ends_with_a_total_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--by`` (with ``--csv --table`` too) prints what the ungrouped report does around
    its table: the ``Cost: $...`` headline first, a ``total`` row last."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATON_NB_DB", raising=False)
    assert main(["demo", "--prompts", "2"]) == 0
    capsys.readouterr()
    assert main(["report", "--csv", "plain.csv"]) == 0
    headline = capsys.readouterr().out.splitlines()[0]
    assert headline.startswith("Cost: $") and "for 2 runs, 8 calls" in headline
    assert main(["report", "--table"]) == 0
    plain_total = next(
        line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("total")
    )

    for by, groups in (("step", 2), ("model", 3), ("run", 2)):
        for extra in ([], ["--csv", f"{by}.csv", "--table"]):
            assert main(["report", "--workflow", "baton-demo", "--by", by, *extra]) == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0] == headline, (by, extra)
            assert lines[1].split()[0] == by
            total = lines[2 + groups].split()
            assert total[0] == "total" and total[1:] == plain_total[1:], (by, extra, lines)
            if extra:
                assert lines[3 + groups].startswith(f"wrote {groups} rows (one per {by})")
            else:
                assert len(lines) == 3 + groups
