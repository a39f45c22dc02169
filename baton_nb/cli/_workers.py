"""``baton-nb worker`` (serve submitted runs) and ``baton-nb workers`` (list live ones)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from typing import Any

import anyio

from .._builder import Workflow
from .._errors import ConfigurationError
from .._owners import process_gone
from ..runtime._worker import ServedWorkflow, Worker
from ..store import open_worker_store
from ._output import out as _out

__all__ = ["add_worker_commands", "cmd_worker", "cmd_workers", "load_workflow"]

logger = logging.getLogger(__name__)


def add_worker_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "worker",
        parents=[common],
        help="serve submitted runs of these workflows (Postgres; stop with SIGTERM)",
        description="A long-running worker: coordinates submitted runs and runs their steps, "
        "claimed from Postgres (docs/workers.md). Modules are imported from the working "
        "directory first (as python -m does), then PYTHONPATH. SIGTERM or Ctrl-C: stop "
        "claiming, let running steps finish within --grace seconds, give the rest back.",
    )
    p.add_argument("workflows", nargs="*", metavar="MODULE:WORKFLOW", help="workflows served")
    p.add_argument("--concurrency", type=int, default=100, metavar="N", help="steps at once")
    p.add_argument("--grace", type=float, default=30.0, metavar="S", help="seconds on SIGTERM")
    p.add_argument(
        "--lease-ttl", type=float, default=30.0, metavar="S", help="lease of a claimed step"
    )
    p.add_argument(
        "--accept-other-code",
        action="store_true",
        help="run submitted runs whose code hash differs from this worker's",
    )
    p.add_argument("--refuse-by-value", action="store_true", help="never run code shipped by value")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(handler=cmd_worker)
    q = sub.add_parser("workers", parents=[common], help="list live workers (Postgres)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_workers)


async def cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    importable_here()
    served = [ServedWorkflow.of(load_workflow(ref), ref) for ref in args.workflows]
    worker = Worker(
        args.db,
        served,
        concurrency=args.concurrency,
        accept_other_code=args.accept_other_code,
        refuse_by_value=args.refuse_by_value,
        lease_ttl=args.lease_ttl,
        grace=args.grace,
        freeze_heap=True,  # this process is the worker's alone
    )
    if worker.db is None or not str(worker.db).startswith("postgresql"):
        await open_worker_store(args.db)  # the clear "workers need Postgres" error
    stop = anyio.Event()

    async def signals() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for signum in received:
                if not stop.is_set():
                    logger.info("%s received: stopping", signal.Signals(signum).name)
                stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(signals)
        await worker.serve(stop)
        tg.cancel_scope.cancel()
    return 0


async def cmd_workers(args: argparse.Namespace) -> int:
    import json

    workers = await open_worker_store(args.db)
    try:
        rows = await workers.workers()
    finally:
        await workers.close()
    now = datetime.now(timezone.utc)
    if args.json:
        _out(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "host": r.host,
                        "pid": r.pid,
                        "workflows": r.workflows,
                        "heartbeat_age_s": round((now - r.heartbeat_at).total_seconds(), 1),
                        "in_flight": r.in_flight,
                        "done": r.done,
                        "stopping": r.stopping,
                        "gone": process_gone(r.host, r.pid),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        _out("no live workers")
        return 0
    _out(
        f"{'worker':<28} {'host':<16} {'pid':>7} {'beat':>6} {'in flight':>9} {'done':>8}  "
        "workflows"
    )
    for r in rows:
        age = (now - r.heartbeat_at).total_seconds()
        state = " (stopping)" if r.stopping else ""
        if process_gone(r.host, r.pid):
            # killed (kill -9, a crash): no goodbye; its row stays until its beat is old
            state = (
                f" (gone: no process {r.pid} on this host; its tasks go to other workers as "
                "their leases end)"
            )
        served = ", ".join(r.workflows) or "(by value only)"
        _out(
            f"{r.id:<28} {r.host:<16} {r.pid:>7} {age:>5.1f}s {r.in_flight:>9} {r.done:>8}  "
            f"{served}{state}"
        )
    return 0


def importable_here() -> None:
    """The working directory on ``sys.path``, last: a worker started where ``pipeline.py``
    is imports ``pipeline:wf`` (a console script gets its own folder there instead). Last,
    after the standard library and the installed packages: a local ``getpass.py`` or
    ``configparser.py`` shadows nothing (asyncpg imports those late, as it connects)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def load_workflow(ref: str) -> Any:
    """Import ``module:attribute`` (a ``bn.Workflow``); a clear error if it is not one."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"{ref!r} is not MODULE:WORKFLOW; name the module and the workflow in it, "
            "e.g. pipeline:wf"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
            # a file's path where the module's name goes: ``pipeline.py:wf``, ``src/pipeline:wf``
            stem = module_name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
            raise ConfigurationError(
                f"{ref!r} names a file; write the module's name, as Python imports it: "
                f"{stem}:{attr} (run the worker in the folder that holds {stem}.py, or where "
                "it is importable: PYTHONPATH)"
            ) from exc
        raise ConfigurationError(
            f"cannot import {module_name!r} for {ref!r}: {exc}; run the worker in the folder "
            "that holds the module, or where it is importable (PYTHONPATH)"
        ) from exc
    if not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, Workflow))
        close = difflib.get_close_matches(attr, found, n=1)
        hint = (
            f"did you mean {module_name}:{close[0]}?"
            if close
            else f"its workflows: {', '.join(f'{module_name}:{n}' for n in found)}"
            if found
            else "it defines no bn.Workflow at its top level"
        )
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}; {hint}")
    workflow = getattr(module, attr)
    if not isinstance(workflow, Workflow):
        raise ConfigurationError(f"{ref!r} is not a bn.Workflow (got {type(workflow).__name__})")
    return workflow
