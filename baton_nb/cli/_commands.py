"""The ``baton-nb`` subcommands other than ``demo``: runs, show, report, prune, price."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import anyio.to_thread

from .._dburl import safe_url
from .._errors import ConfigurationError, RunNotFound
from .._money import fmt_money, plural
from .._prune import prune
from .._query import report, runs
from .._run import Run
from .._states import RunStatus
from ..reports import GROUP_KEYS, CostReport, CostRow, grouped_text, summary_text
from ..store import ReadStore, Store
from ._output import out as _out
from ._show import CHILDREN_SHOWN, render_run

__all__ = [
    "check_prune",
    "cmd_prune",
    "cmd_report",
    "cmd_runs",
    "cmd_show",
    "grouped",
    "report_json",
    "write_csv",
]


async def cmd_runs(args: argparse.Namespace) -> int:
    found = await runs(
        args.db,
        workflow=args.workflow,
        since=args.since,
        until=args.until,
        status=args.status,
        limit=args.limit or None,
    )
    if args.json:
        _out(json.dumps([r.to_dict() for r in found], indent=2))
        return 0
    _out(str(found))
    if args.limit and len(found) == args.limit:
        _out(f"(the {args.limit} newest; --limit 0 lists all)")
    return 0


async def resolve_run_ids(db: str | None, typed: list[str]) -> list[str]:
    """The full run ids for what was typed: each an id or an unambiguous prefix of one."""
    if not typed:
        return []
    store = await Store.open(db)
    try:
        return [await _resolve_one(store, text) for text in typed]
    finally:
        await store.close()


async def _resolve_one(store: ReadStore, text: str) -> str:
    found = await store.run_ids_starting_with(text, limit=4)
    if not found:
        raise RunNotFound(
            f"no run {text!r} in {safe_url(store.url)}; list runs with `baton-nb runs`"
        )
    if found[0] != text and len(found) > 1:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise ConfigurationError(f"run id {text!r} is ambiguous ({shown}); type more of it")
    return found[0]


async def cmd_show(args: argparse.Namespace) -> int:
    (run_id,) = await resolve_run_ids(args.db, [args.run_id])
    run = await Run.load(run_id, db=args.db)
    _out(render_run(run, None if args.all else CHILDREN_SHOWN))
    return 1 if run.status in (RunStatus.FAILED, RunStatus.CANCELLED) else 0


async def write_csv(rep: CostReport, path: str) -> str:
    """Write the report's CSV off the event loop; return the absolute path."""

    def write() -> str:
        try:
            rep.to_csv(path)
        except OSError as exc:  # checked before the work began, but the disk may be full
            reason = exc.strerror or str(exc)
            raise ConfigurationError(f"cannot write the CSV to {path!r}: {reason}") from None
        return os.path.abspath(path)

    return await anyio.to_thread.run_sync(write)


_MONEY = ("cost_usd", "fees_usd", "saved_usd", "unanswered_usd")


def report_json(rep: CostReport) -> dict[str, Any]:
    """A report as JSON-ready data: totals and one record per (run, step, model)."""
    rows = []
    for record in rep.to_records():
        money = {k: None if record[k] is None else fmt_money(record[k]) for k in _MONEY}
        rows.append({**record, **money})
    return {
        "total_cost_usd": fmt_money(rep.total),
        "complete": rep.complete,
        "unpriced_calls": rep.unpriced_calls,
        "calls": rep.calls,
        "replayed_calls": rep.replayed_calls,
        "cached_calls": rep.cached_calls,
        "saved_usd": fmt_money(rep.saved),
        # the part of total_cost_usd charged for attempts that got no answer (worst case)
        "unanswered_usd": fmt_money(rep.totals().unanswered),
        "tokens": rep.tokens.to_dict(),
        "rows": rows,
    }


async def cmd_report(args: argparse.Namespace) -> int:
    rep = await report(
        args.db,
        run_ids=await resolve_run_ids(args.db, args.run_ids) or None,
        workflow=args.workflow,
        since=args.since,
        until=args.until,
        reprice=args.reprice,
    )
    if args.json:
        _out(json.dumps(report_json(rep), indent=2))
        return 0
    if args.csv and not args.table:
        # The totals and the file: the table itself is in the CSV (a 1,000-child map's
        # table is a thousand lines); --table prints it too.
        _out(summary_text(rep))
    elif args.by == "step":  # the Cost: line, then the table and its total row
        _out(grouped_text(rep, rep.by_step()))
    elif args.by == "model":
        _out(grouped_text(rep, rep.by_model()))
    elif args.by == "run":
        _out(grouped_text(rep, rep.by_run()))
    else:
        _out(str(rep))
    if args.csv:
        written = grouped(rep, args.by) if args.by else rep
        path = await write_csv(written, args.csv)
        grain = f"one per {args.by}" if args.by else "one per run, step and model"
        _out(f"wrote {plural(len(written.rows), 'row')} ({grain}) to {path}")
        if not args.table and written.rows:
            _out("the table is in the CSV; --table prints it here too")
    return 0


def check_report(args: argparse.Namespace) -> None:
    """Usage errors of ``report`` (exit 2), found before the database is touched."""
    if args.table and args.json:
        raise ConfigurationError(
            "--table prints the table beside --csv; --json prints JSON only: give one of them"
        )


def grouped(rep: CostReport, by: str) -> CostReport:
    """The report's rows summed per step, model or run (what ``report --by`` prints), in the
    CSV's columns: the column grouped by holds the group's name; each other key column
    (run_id, workflow, step, model, provider) is filled when every row summed into the
    group has the same value there, and left empty when they differ."""
    name_of = GROUP_KEYS[by]  # as the printed table groups them
    groups: dict[str, list[CostRow]] = {}
    for row in rep.rows:
        groups.setdefault(name_of(row), []).append(row)
    out = []
    for name, rows in groups.items():
        total = CostRow(
            run_id=name if by == "run" else _same(rows, "run_id"),
            workflow=_same(rows, "workflow"),
            step=name if by == "step" else _same(rows, "step"),
            model=name if by == "model" else _same(rows, "model"),
            provider=_same(rows, "provider"),
        )
        for row in rows:
            total.merge(row)
        out.append(total)
    return CostReport(out)


def _same(rows: list[CostRow], key: str) -> str:
    values = {getattr(row, key) for row in rows}
    return values.pop() if len(values) == 1 else ""


def check_prune(args: argparse.Namespace) -> None:
    """Usage errors of ``prune`` (exit 2), found before the database is touched."""
    ages = (args.older_than, args.debug_logs_older_than, args.cache_older_than)
    if all(age is None for age in ages):
        raise ConfigurationError(
            "prune needs --older-than AGE (finished runs), --debug-logs-older-than AGE "
            "and/or --cache-older-than AGE, e.g. baton-nb prune --older-than 7d"
        )
    if args.batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")


async def cmd_prune(args: argparse.Namespace) -> int:
    check_prune(args)
    result = await prune(
        args.db,
        older_than=args.older_than,
        debug_log_max_age=args.debug_logs_older_than,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        cache_older_than=args.cache_older_than,
    )
    _out(str(result))
    return 0
