"""``wf.run(..., workers=True)``: submit to the workers, show the run live, wait for it.

Interrupting the cell detaches: the run goes on on the workers, and how to follow it
again is printed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._dburl import safe_url
from ._run import Run
from ._watch import watch

__all__ = ["run_on_workers"]


async def run_on_workers(
    wf: Any,
    params: Mapping[str, Any] | None,
    *,
    db: str | None,
    concurrency: int,
    models: Mapping[str, str] | None,
    display: bool | str | None,
    show_progress: Callable[[Run, bool | str | None], Any],
) -> Run:
    run = await wf.submit(params, db=db, concurrency=concurrency, models=models)
    detached = True
    try:
        async with watch(run.id, run.db or None) as live:
            handle = show_progress(live.run, display)
            try:
                async for _update in live:
                    pass
            finally:
                if handle is not None:
                    handle.close()
        detached = False
    finally:
        if detached:
            where = f", db={safe_url(run.db)!r}" if run.db else ""
            print(
                f"detached from run {run.id}: it goes on on the workers. Follow it again with "
                f"run = await bn.SubmittedRun.attach({run.id!r}{where}); await run.wait() "
                f"(or bn.watch({run.id!r}{where}); run.cancel() cancels it)"
            )
    finished: Run = await run.wait()
    return finished  # the run ended: raises bn.RunRefused if a worker refused it
