"""Argument parsing and dispatch for ``baton-nb``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio

from .._dburl import resolve_url
from .._errors import BatonError, ConfigurationError, RunNotFound
from .._query import RUN_STATUS_FILTERS
from ..pricing import UnknownPriceWarning
from ..reports import as_time, parse_duration
from . import _cache, _commands, _demo, _price
from ._output import OutputError, silence_stdout
from ._workers import add_worker_commands

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUSES = RUN_STATUS_FILTERS  # the stored ones, and abandoned (running, its process gone)
# One default database for every command, the demo included: `baton-nb runs` (and
# `bn.runs()`) right after `baton-nb demo` list the demo's runs, no --db to guess.
DB_HELP = "database URL (default: $BATON_NB_DB, else sqlite:///baton.db)"
PRICING_HELP = (
    "a price file (docs/pricing.md) laid over the shipped prices, as "
    "bn.configure(pricing=PATH) does, for the commands that price calls: report --reprice, "
    "price, demo, worker (default: $BATON_NB_PRICING, read by those commands only); "
    "a PATH given here is checked by every command"
)
# Commands that price calls, and so load the price file of $BATON_NB_PRICING: `price`,
# `demo` and `worker` (the calls their steps make); `report` with --reprice (prices_calls).
# The others show the costs stored as the calls ran (runs, show, report without --reprice,
# cache) or none (prune, workers): a stale or broken $BATON_NB_PRICING does not stop them.
PRICING_COMMANDS = frozenset({"price", "demo", "worker"})
# Commands that only read (or delete from) an existing database: a missing SQLite file is an
# error for them, never created empty (a typo in --db would otherwise "find" no runs).
NEEDS_DATABASE = frozenset({"runs", "show", "report", "prune", "cache"})


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(text: str) -> datetime:
    try:
        value = as_time(text, "time")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert value is not None
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    p.add_argument(
        "--since", type=_when, metavar="WHEN", help="runs created since: 7d, 24h or 2025-06-14"
    )
    p.add_argument("--until", type=_when, metavar="WHEN", help="runs created before WHEN")


def _common(db_help: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--pricing", metavar="PATH", default=argparse.SUPPRESS, help=PRICING_HELP)
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``baton-nb`` argument parser (``--db`` and ``--pricing`` are accepted before or
    after the command)."""
    common = _common(DB_HELP)
    parser = argparse.ArgumentParser(
        prog="baton-nb",
        parents=[common],
        description="Durable DAG runs for LLM fan-out: run the demo, list and inspect runs, "
        "export costs, prune old runs, look up model prices.",
        epilog="Exit codes: 0 ok, 1 run failed or cancelled (show) or unknown id, 2 bad arguments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub, common)
    _add_runs(sub, common)
    _add_show(sub, common)
    _add_report(sub, common)
    _add_prune(sub, common)
    _add_cache(sub, common)
    _add_price(sub, common)
    add_worker_commands(sub, common)
    return parser


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="offline demo: fan-out over 3 mock models + synthesis, cost table and CSV",
        description="Run an offline demo workflow (mock provider, no API key, no network) "
        "on the default database (sqlite:///baton.db unless --db or $BATON_NB_DB, as for "
        "every command), print its cost table, write the cost CSV and the next commands.",
    )
    p.add_argument(
        "--csv",
        metavar="PATH",
        default=_demo.DEFAULT_CSV,
        help=f"cost CSV to write (default: {_demo.DEFAULT_CSV})",
    )
    p.add_argument("--prompts", type=_count, default=3, metavar="N", help="prompts (1-10)")
    p.set_defaults(handler=_demo.cmd_demo, check=_demo.check_demo)


def _add_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="list runs, newest first")
    _filters(p)
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--limit", type=_count, default=50, metavar="N", help="at most N runs (0: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_commands.cmd_runs)


def _add_show(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "show",
        parents=[common],
        help="one run as a DAG: states, attempts, errors, cost",
        description="Show a run's steps layer by layer. Exits 1 if the run failed or was "
        "cancelled.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or enough of its start")
    p.add_argument(
        "--all",
        action="store_true",
        help="list every child of a fan-out (by default the ones that did not complete and "
        "the first ones, 20 in all, the others counted)",
    )
    p.set_defaults(handler=_commands.cmd_show)


def _add_report(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="cost per (run, step, model): table, CSV or JSON",
        description="Cost report over runs (all runs unless RUN_IDs or filters are given).",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="run ids, or enough of their start")
    _filters(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--csv",
        metavar="PATH",
        help="write the CSV to PATH: a row per (run, step, model), or per group with --by; "
        "prints the totals and the path, not the table (--table prints it too)",
    )
    out.add_argument("--json", action="store_true", help="print JSON rows per (run, step, model)")
    p.add_argument(
        "--by",
        choices=("step", "model", "run"),
        help="totals per step/model/run, printed (and in the CSV with --csv)",
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="with --csv, print the table as well (printed without --csv anyway)",
    )
    p.add_argument(
        "--reprice",
        action="store_true",
        help="price every call again with today's prices (for models unknown when they ran)",
    )
    p.set_defaults(handler=_commands.cmd_report, check=_commands.check_report)


def _add_prune(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune",
        parents=[common],
        help="delete finished runs older than a cut-off (and old debug logs)",
        description="Delete finished (completed/failed/cancelled) runs older than --older-than "
        "with all their rows; unfinished runs are never touched. --debug-logs-older-than "
        "also deletes older debug logs of any run.",
    )
    p.add_argument("--older-than", type=_duration, metavar="AGE", help="e.g. 7d, 24h, 2w")
    p.add_argument(
        "--debug-logs-older-than", type=_duration, metavar="AGE", help="e.g. 24h (any run)"
    )
    p.add_argument(
        "--cache-older-than",
        type=_duration,
        metavar="AGE",
        help="also delete response-cache answers cached longer ago (e.g. 30d)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument(
        "--batch-size", type=_count, default=500, metavar="N", help="runs per transaction"
    )
    p.set_defaults(handler=_commands.cmd_prune, check=_commands.check_prune)


def _add_cache(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cache",
        parents=[common],
        help="the response cache: size, hits, money saved; --clear",
        description="The response cache of the database (Workflow(cache=True), "
        "docs/spend_less.md): answers stored, their size, hits and the money they saved. "
        "--clear deletes answers (all, or --older-than AGE); nothing is evicted otherwise.",
    )
    _cache.add_cache_arguments(p, _duration)
    p.set_defaults(handler=_cache.cmd_cache)


def _add_price(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "price",
        parents=[common],
        help="the price of a model: its source and every rate",
        description="Look a model up in the prices (your price file, baton_nb's overrides, "
        "genai-prices): where its price comes from, how the name matched, every rate "
        "(see docs/pricing.md); with token counts, the cost of one call.",
    )
    _price.add_price_arguments(p, _count, _when)
    p.set_defaults(handler=_price.cmd_price)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``baton-nb`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's usage error (code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.db = getattr(args, "db", None)
    args.pricing = getattr(args, "pricing", None)
    try:
        with _unknown_prices_name_the_option():
            missing = _preflight(args)  # checks that need no database and no event loop
            if missing is not None:
                return _fail(missing, EXIT_FAILED)
            code: int = anyio.run(args.handler, args)
    except ConfigurationError as exc:
        return _fail(f"{exc}", EXIT_USAGE)
    except RunNotFound as exc:
        return _fail(f"{exc}", EXIT_FAILED)
    except BatonError as exc:
        return _fail(f"{exc}", EXIT_FAILED)
    except (BrokenPipeError, OutputError) as exc:
        return _output_failed(exc)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return code


def prices_calls(args: argparse.Namespace) -> bool:
    """Whether the command prices calls (`PRICING_COMMANDS`, and `report --reprice`): only
    those load the price file of $BATON_NB_PRICING."""
    return args.command in PRICING_COMMANDS or (args.command == "report" and bool(args.reprice))


def _preflight(args: argparse.Namespace) -> str | None:
    """Check what can be checked before any work: the command's own usage rules and the CSV
    path (usage errors, raised); load the price file of --pricing (any command: the user
    asked for it), else, for the commands that price calls, of $BATON_NB_PRICING (a bad one
    is a usage error naming the file, the model and the field); then, for commands that
    read runs, that the SQLite file exists (the message is returned)."""
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    csv_path = getattr(args, "csv", None)
    if csv_path:
        check_csv_path(csv_path)
    args.pricing = _price.use_price_file(args.pricing, from_env=prices_calls(args))
    if args.command in NEEDS_DATABASE:
        path = sqlite_file(resolve_url(args.db))
        if path is not None and not os.path.isfile(path):
            return (
                f"no database at {os.path.abspath(path)} "
                "(run a workflow first, or pass --db / BATON_NB_DB)"
            )
    return None


# Said after the library's warning of a model with no price, which names
# bn.configure(pricing=...): what loads a price file here.
PRICING_HINT = (
    "With baton-nb, load a price file with --pricing my_prices.json "
    "(or BATON_NB_PRICING=my_prices.json)."
)


@contextlib.contextmanager
def _unknown_prices_name_the_option() -> Iterator[None]:
    """Show `UnknownPriceWarning` as ``baton-nb: warning: ...`` (no file and line of library
    code), saying how the command loads a price file; other warnings as Python shows them."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            if not issubclass(category, UnknownPriceWarning):
                shown(message, category, filename, lineno, file, line)
                return
            with contextlib.suppress(OSError, ValueError):  # stderr gone: nothing to tell
                print(f"baton-nb: warning: {message} {PRICING_HINT}", file=sys.stderr, flush=True)

        warnings.showwarning = show
        yield


def check_csv_path(path: str) -> None:
    """Raise ``ConfigurationError`` (exit 2) if a CSV cannot be written at ``path``."""
    where = os.path.abspath(path)
    if os.path.isdir(path):
        raise ConfigurationError(
            f"cannot write the CSV to {path!r}: it is a directory; "
            f"give a file name, e.g. --csv {os.path.join(path, 'costs.csv')}"
        )
    folder = os.path.dirname(where)
    if not os.path.isdir(folder):
        raise ConfigurationError(
            f"cannot write the CSV to {path!r}: folder {folder!r} does not exist"
        )
    if os.path.exists(where) and not os.access(where, os.W_OK):
        raise ConfigurationError(f"cannot write the CSV to {path!r}: the file is read-only")
    if not os.path.exists(where) and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"cannot write the CSV to {path!r}: folder {folder!r} is not writable"
        )


def sqlite_file(url: str) -> str | None:
    """The file of a ``sqlite:///path`` URL; ``None`` for in-memory SQLite and for Postgres."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("sqlite", "sqlite+aiosqlite") or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return path


def _output_failed(exc: BaseException) -> int:
    """stdout is gone (closed pipe, full disk): no traceback; exit 1."""
    silence_stdout()
    cause = exc.__cause__ if isinstance(exc, OutputError) else exc
    if isinstance(cause, BrokenPipeError) or getattr(cause, "errno", None) == errno.EPIPE:
        return EXIT_FAILED  # `baton-nb runs | head`: the reader left; say nothing, like cat
    reason = getattr(cause, "strerror", None) or str(cause)
    return _fail(f"cannot write to standard output: {reason}", EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError, ValueError):  # stderr gone too: the exit code is left
        print(f"baton-nb: error: {message}", file=sys.stderr, flush=True)
    return code
