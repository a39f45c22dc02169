"""``baton-nb show``: its calls agree with ``runs`` and ``report`` (paid calls; replayed
ones apart), and its attempts list only the steps that were retried."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb._money import fmt_money
from baton_nb.cli import main


def _flaky_run(db: str) -> bn.Run:
    """A step that pays for one call, then raises twice: its retries replay the call."""
    wf = bn.Workflow("flaky", db=db)

    @wf.step(max_attempts=3, backoff=lambda attempt: 0.0)
    async def a(ctx: bn.Context) -> str:
        answer = await ctx.complete(prompt="hi", model="mock/gpt-4o-mini", max_tokens=20)
        if ctx.attempt < 3:
            raise ConnectionError(f"flaky #{ctx.attempt}")
        return str(answer.text)

    run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "completed"
    return run


def _table_rows(out: str) -> dict[str, dict[str, str]]:
    """The step table of ``show``: each step's right-aligned cells (from ``time`` on), by
    column name, read between the right edges of the header's names."""
    header, *lines = out.split("\n\n", 2)[1].splitlines()
    names = header.split()
    edges = [header.index(f" {n}") + 1 + len(n) for n in names[1:]]  # names are unique
    rows = {}
    for line in lines:
        cells = {
            n: line[a:b].strip() for n, a, b in zip(names[4:], edges[2:-1], edges[3:], strict=True)
        }
        rows[line.split()[1]] = cells
    return rows


def test_show_counts_paid_calls_as_runs_and_report_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'flaky.db'}"
    run = _flaky_run(db)
    totals = run.report().totals()
    assert (totals.calls, totals.replayed_calls) == (1, 2)

    assert main(["show", run.id, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "  1 call (2 replayed, not charged again)  " in out
    row = _table_rows(out)["a"]
    assert (row["calls"], row["replayed"], row["layer"]) == ("1", "2", "0")
    assert row["cost_usd"] == fmt_money(totals.known_cost)  # the paid call's, once

    assert main(["runs", "--json", "--db", db]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["calls"], listed["replayed_calls"]) == (1, 2)
    assert main(["report", run.id, "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 1


def test_show_sums_a_maps_paid_calls_and_keeps_replayed_ones_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A map whose second child replays its call once: the map's row counts the paid calls
    of its children (as the header does), the replayed one in its own column."""
    db = f"sqlite:///{tmp_path / 'map.db'}"
    wf = bn.Workflow("mapped", db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1, 2]

    @wf.step(map_over="items", max_attempts=2, backoff=lambda attempt: 0.0)
    async def work(ctx: bn.Context) -> str:
        answer = await ctx.complete(prompt=f"item {ctx.item}", model="mock/gpt-4o-mini")
        if ctx.item == 1 and ctx.attempt == 1:
            raise ConnectionError("lost the answer")
        return str(answer.text)

    run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "completed"
    assert main(["show", run.id, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "  3 calls (1 replayed, not charged again)  " in out
    rows = _table_rows(out)
    assert (rows["work"]["calls"], rows["work"]["replayed"]) == ("3", "1")
    assert rows["work[1]"]["calls"] == "1"
    assert rows["work[0]"]["replayed"] == "" and rows["work[1]"]["replayed"] == "1"


def test_show_without_replays_has_no_replayed_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'plain.db'}"
    wf = bn.Workflow("plain", db=db)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return str((await ctx.complete(prompt="hi", model="mock/gpt-4o-mini")).text)

    run = anyio.run(lambda: wf.run(display=False))
    assert main(["show", run.id, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "  1 call  cost $" in out
    header = out.split("\n\n", 2)[1].splitlines()[0].split()
    assert header == ["state", "step", "deps", "attempt", "time", "calls", "tokens", "cost_usd",
                      "layer"]  # fmt: skip


def test_show_lists_only_retried_steps_and_says_where_tracebacks_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step that failed at its only attempt is not "retried"; its error is under errors:
    with where its traceback can be read (kept under debug=True, in run.context)."""
    db = f"sqlite:///{tmp_path / 'boom.db'}"
    wf = bn.Workflow("boom", db=db)

    @wf.step(max_attempts=1)
    async def bad(ctx: bn.Context) -> None:
        raise RuntimeError("kaboom in my step")

    run = anyio.run(lambda: wf.run(display=False))
    assert main(["show", run.id, "--db", db]) == 1
    out = capsys.readouterr().out
    assert "bad: RuntimeError: kaboom in my step" in out
    assert "attempts (retried steps)" not in out
    assert "a step run with debug=True keeps each failed attempt's traceback" in out
    assert f'bn.Run.load("{run.id}", db=...)' in out

    debug_db = f"sqlite:///{tmp_path / 'debug.db'}"
    traced = bn.Workflow("traced", db=debug_db, debug=True)

    @traced.step(max_attempts=2, backoff=lambda attempt: 0.0)
    async def deep(ctx: bn.Context) -> None:
        raise RuntimeError(f"kaboom #{ctx.attempt}")

    run = anyio.run(lambda: traced.run(display=False))
    errors = [e for e in run.context("deep") if e["kind"] == "error"]
    assert [(e["attempt"], e["message"]) for e in errors] == [
        (1, "RuntimeError: kaboom #1"),
        (2, "RuntimeError: kaboom #2"),
    ]
    trace = errors[0]["data"]["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in deep" in trace and trace.rstrip().endswith("RuntimeError: kaboom #1")
    loaded = anyio.run(lambda: bn.Run.load(run.id, db=debug_db))
    stored = [(e["kind"], e["data"]) for e in loaded.context("deep")]
    assert stored == [(e["kind"], e["data"]) for e in run.context("deep")]  # not only in memory
    assert main(["show", run.id, "--db", debug_db]) == 1
    out = capsys.readouterr().out
    assert "attempts (retried steps):\n  deep #1  retryable" in out
    assert "tracebacks of deep: run.context(step) in Python" in out


def test_show_prints_an_error_shared_by_many_steps_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget stop cancels every step left with the same long message: ``errors:`` says
    it once, naming the steps (the first few and how many more), not once per step."""
    db = f"sqlite:///{tmp_path / 'budget.db'}"
    wf = bn.Workflow("bud", db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(12))

    @wf.step(map_over="items")
    async def ask(ctx: bn.Context) -> str:
        await anyio.sleep(0.05 * ctx.item)
        reply = await ctx.complete(prompt=f"item {ctx.item}", model="mock/gpt-4o", max_tokens=50)
        return str(reply.text)

    run = anyio.run(lambda: wf.run(budget="0.001", concurrency=12, display=False))
    assert run.status == "cancelled" and run.budget_stop is not None
    cancelled = [s for s in run.steps.values() if s.error and "budget" in s.error]
    assert len(cancelled) > 3
    assert main(["show", run.id, "--db", db]) == 1  # a cancelled run, as its help says
    out = capsys.readouterr().out
    errors = out.split("\nerrors:\n", 1)[1]
    message = cancelled[0].error
    assert errors.count(message) == 1, errors
    assert f"({len(cancelled)} steps)" in errors, errors
    assert f"and {len(cancelled) - 3} more" in errors, errors


def test_show_help_says_what_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--help"]) == 0
    assert "Exits 1 if the run failed or was cancelled." in capsys.readouterr().out


def _map_failing(db: str, n: int, bad: Callable[[int], bool]) -> bn.Run:
    """A map ``each`` of ``n`` items whose ``bad`` ones are discarded, each with its own
    message (``item 7 is bad``)."""
    wf = bn.Workflow("failing", db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(n))

    @wf.step(map_over="items")
    async def each(ctx: bn.Context) -> int:
        if bad(ctx.item):
            raise bn.Discard(f"item {ctx.item} is bad")
        return int(ctx.item)

    return anyio.run(lambda: wf.run(display=False))


def test_show_lists_a_big_fanouts_failures_and_first_children_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1,000-item map printed 1,000 lines: ``show`` lists a fan-out's children that did
    not complete and the first ones, 20 in all, and counts the others; ``--all`` lists
    every child."""
    db = f"sqlite:///{tmp_path / 'big.db'}"
    run = _map_failing(db, 50, lambda item: item in (7, 33))
    assert run.status == "failed"
    assert main(["show", run.id, "--db", db]) == 1
    out = capsys.readouterr().out
    table = out.split("\n\n", 2)[1]
    listed = [line.split()[1] for line in table.splitlines() if " each[" in line]
    firsts = [f"each[{i}]" for i in range(19) if i != 7]  # 18 completed, in order
    assert listed == [*firsts[:7], "each[7]", *firsts[7:], "each[33]"], listed
    line = "each: 20 of its 50 children listed; 30 more: 30 completed (baton-nb show --all"
    assert line in out
    assert main(["show", run.id, "--db", db, "--all"]) == 1
    out = capsys.readouterr().out
    assert sum(" each[" in line for line in out.split("\n\n", 2)[1].splitlines()) == 50
    assert "children listed" not in out


def test_show_lists_twenty_distinct_errors_and_counts_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each failed item has its own message: ``errors:`` lists 20 and counts the others
    (``--all``: every one), as the table lists a fan-out's children."""
    db = f"sqlite:///{tmp_path / 'errs.db'}"
    run = _map_failing(db, 60, lambda item: item % 2 == 1)
    assert main(["show", run.id, "--db", db]) == 1
    errors = capsys.readouterr().out.split("\nerrors:\n", 1)[1]
    # 31 distinct: the group's ("each: 30 of 60 failed: ...") and each failed item's
    assert errors.startswith("  each: 30 of 60 failed")
    assert sum("is bad" in line for line in errors.splitlines()) == 19
    assert "… 11 other errors (11 steps; baton-nb show --all lists every one)" in errors
    assert main(["show", run.id, "--db", db, "--all"]) == 1
    errors = capsys.readouterr().out.split("\nerrors:\n", 1)[1]
    assert sum("is bad" in line for line in errors.splitlines()) == 30
