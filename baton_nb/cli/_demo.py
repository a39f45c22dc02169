"""``baton-nb demo``: an offline fan-out + synthesis workflow on the mock provider."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._builder import Workflow
from .._dburl import DEFAULT_URL
from .._errors import ConfigurationError
from .._money import plural
from .._states import RunStatus
from ..store import resolve_url
from ._commands import write_csv
from ._output import out

__all__ = [
    "DEFAULT_CSV",
    "DEFAULT_DB",
    "DEMO_MODELS",
    "DEMO_PROMPTS",
    "build_demo",
    "check_demo",
    "cmd_demo",
]

DEFAULT_DB = DEFAULT_URL  # the one every command reads: `baton-nb runs` finds the demo
DEFAULT_CSV = "baton_demo_costs.csv"
DEMO_MODELS = ("mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.5-flash")
DEMO_PROMPTS = (
    "Explain durable execution to a data scientist in one paragraph.",
    "When is a DAG of LLM calls better than a single long prompt?",
    "How should a small team keep track of what its LLM calls cost?",
    "What makes a retry of a paid API call safe?",
    "Summarise the trade-offs of SQLite versus Postgres for a job queue.",
    "Why compare several models on the same prompt before choosing one?",
    "What should a notebook show while a long workflow runs?",
    "How do you decide how long to keep workflow history?",
    "What is the difference between a retry and a resume?",
    "Give three tips for writing prompts that are easy to evaluate.",
)


def build_demo(db: str) -> Workflow:
    """One prompt (``params["prompt"]``) answered by three mock models side by side, then
    one call that synthesises their answers."""
    wf = Workflow("baton-demo", db=db)

    @wf.step(models=list(DEMO_MODELS))
    async def answer(ctx: Any) -> str:
        completion = await ctx.complete(prompt=ctx.params["prompt"], max_tokens=120)
        return str(completion.text)

    @wf.step(deps=["answer"])
    async def synthesis(ctx: Any) -> str:
        merged = await ctx.synthesize(ctx.results["answer"], model=DEMO_MODELS[0], max_tokens=160)
        return str(merged.text)

    return wf


def check_demo(args: argparse.Namespace) -> None:
    """Usage errors of ``demo`` (exit 2), found before any run."""
    if not 1 <= args.prompts <= len(DEMO_PROMPTS):
        raise ConfigurationError(f"--prompts must be between 1 and {len(DEMO_PROMPTS)}")


async def cmd_demo(args: argparse.Namespace) -> int:
    check_demo(args)
    db = args.db or os.environ.get("BATON_NB_DB") or DEFAULT_DB
    wf = build_demo(db)
    out(
        f"baton-nb demo: {plural(args.prompts, 'prompt')}, each fanned out over "
        f"{len(DEMO_MODELS)} mock models and synthesised; offline, stored in {_where(db)}"
    )
    run_ids, failed = [], 0
    for prompt in DEMO_PROMPTS[: args.prompts]:
        run = await wf.run(params={"prompt": prompt}, display="text")
        run_ids.append(run.id)
        failed += run.status != RunStatus.COMPLETED
    report = await _report(db, run_ids)
    out(f"\n{report}\n")
    path = await write_csv(report, args.csv)
    rows = plural(len(report.rows), "row")
    out(f"cost CSV ({rows}, one per run, step and model) written to {path}")
    # The exact next commands: with the default database (or $BATON_NB_DB) they need no --db.
    default = os.environ.get("BATON_NB_DB") or DEFAULT_URL
    db_flag = "" if db == default else f" --db {db}"
    out("next:")
    out(f"  baton-nb runs{db_flag}")
    out(f"  baton-nb show {run_ids[-1]}{db_flag}")
    out(f"  baton-nb report {run_ids[-1]}{db_flag}")
    out(f"  in Python: await bn.runs({'' if db == default else f'db={db!r}'})")
    return 1 if failed else 0


def _where(db: str) -> str:
    """The database URL, and for a SQLite file given relative to the cwd, its full path."""
    url = resolve_url(db)
    path = url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else ""
    if path and path != ":memory:" and not os.path.isabs(path):
        return f"{url} ({os.path.abspath(path)})"
    return url


async def _report(db: str, run_ids: list[str]) -> Any:
    from .._query import report

    return await report(db, run_ids=run_ids)
