"""``wf.run(..., workers=True)``: submit to the workers, show the run live, wait for it.

Interrupting the cell detaches: the run goes on on the workers, and how to follow it
again is printed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._detach import detached
from ._errors import ConfigurationError
from ._run import Run
from ._watch import watch

if TYPE_CHECKING:
    from .runtime import Following, SubmittedRun

__all__ = ["run_on_workers", "submit"]


async def submit(
    wf: Any,
    params: Mapping[str, Any] | None,
    db: str | None,
    concurrency: int,
    models: dict[str, str],
    by_value: bool | None,
) -> SubmittedRun:
    """``wf.submit(...)`` with its options checked: the run queued (``runtime.submit_run``)."""
    from .runtime import submit_run

    return await submit_run(
        wf, params=params, db=db, concurrency=concurrency, models=models, by_value=by_value
    )


async def run_on_workers(
    wf: Any,
    params: Mapping[str, Any] | None,
    run_id: str | None,
    budget: object,
    db: str | None,
    concurrency: int,
    models: Mapping[str, str] | None,
    display: bool | str | None,
    show_progress: Callable[[Run, bool | str | None], Any],
    resume: bool = False,
    say: Callable[[Following], None] | None = None,
) -> Run:
    """``wf.run(..., workers=True)``: submit, show the run live, wait for it.

    ``resume``: follow a run of the same params, models and code still pending or running
    on the workers instead (``runtime.follow_submitted``: a kernel restarted while it
    waited, the cell run again), told to ``say`` (which shows the line naming it);
    ``wf.run`` passes its ``resume=``."""
    if budget is not None or run_id is not None:
        raise ConfigurationError(
            f"workflow {wf.name!r}: run(workers=True) takes neither budget= nor run_id= yet: "
            "set Workflow(budget=...) for a cap, and re-attach to a submitted run with "
            "bn.SubmittedRun.attach (docs/workers.md)"
        )
    from .runtime import WorkersNotice, follow_submitted, keep_workers_notice

    following = None
    if resume:
        following = await follow_submitted(wf, params=params, db=db, models=models or {})
    if following is not None:
        run = following.run
        wf.last_run = run  # live from here, as wf.submit sets it
        if say is not None:
            say(following)
    else:
        run = await wf.submit(params, db=db, concurrency=concurrency, models=models)
    try:
        async with watch(run.id, run.db or None) as live:
            # its views follow ``live.run``, which the watcher keeps current (status as
            # stored, the map's children as the workers store them); their Cancel is the
            # submitted run's (to every worker holding its steps)
            live.run._canceller = run.cancel
            handle = show_progress(live.run, display)
            # what the workers do for the run, told in the widget: no live worker, a lost
            # coordinator (a task of its own: nothing of it reaches the cell but the line)
            said = WorkersNotice(live.run.workflow)
            notice = asyncio.get_running_loop().create_task(
                keep_workers_notice(live.run, run.db or None, said)
            )
            try:
                async for _update in live:
                    pass
            finally:
                notice.cancel()
                if live.run.done:  # what stays said of it: by whom it was taken over
                    live.run.set_notice(said.ended(live.run))
                if handle is not None:
                    handle.close()
        await asyncio.wait([notice])
    except BaseException as exc:
        detached(run.id, run.db, exc)
        raise
    finished: Run = await run.wait()
    return finished  # the run ended: raises bn.RunRefused if a worker refused it
