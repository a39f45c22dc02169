"""``bn.Run``: what a run is and did. Live while it executes, loadable from the store after."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ._counts import StepCounts
from ._dburl import safe_url
from ._errors import RunNotFound, WorkflowFailed
from ._owners import owner_gone
from ._runview import RunView, SpendState, StepInfo, cache_savings, status_text
from ._states import FAILED_STATES, TERMINAL_STATES, RunStatus
from .store import RUN_SCOPE, CallRecord, NodeRow, ReadStore, RunRow, Store, utcnow

if TYPE_CHECKING:
    from .reports import CostReport

__all__ = [
    "FAILED_STATES",
    "LIVE_RUNS",
    "TERMINAL_STATES",
    "CallRecord",
    "NotebookView",
    "Run",
    "StepInfo",
    "live_run",
    "load_run",
]

logger = logging.getLogger("baton_nb.events")

# The Runs executing in this process, by id: the driver adds a run when it starts and
# removes it when it ends. Here, below the runtime, so that every view of a run of this
# process (``bn.DagWidget(run_id)``) gets the live Run, with its cancel.
LIVE_RUNS: dict[str, Run] = {}


def live_run(run_id: str) -> Run | None:
    """The live Run of a run executing in this process, if any."""
    return LIVE_RUNS.get(run_id)


# (changed, ended, quiet): ``follow``
_Follower = tuple[Callable[[str], None], Callable[[], None], Container[str]]
_NONE: frozenset[str] = frozenset()  # a follower's ``quiet`` when it gave none
_FOLLOWERS_LOCK = threading.Lock()  # ``Run.followers`` is replaced, not changed in place


class Run(RunView):
    """A workflow run: status, per-step state, results, LLM calls and cost.

    What ``wf.run()`` returns and ``bn.Run.load`` reads back. While its run executes in
    this process it is kept current (``wf.last_run``); its state is a ``RunView``, the
    read model every view of a run shares.
    """

    notebook_view: ClassVar[NotebookView | None] = None  # set by baton_nb.widget
    # A run executing in other processes (``bn.SubmittedRun``): its views follow it as
    # stored (``bn.watch``), from ``db_url``, not through this object
    executes_elsewhere: ClassVar[bool] = False

    def __init__(self, run_id: str, workflow: str, *, params: dict[str, Any] | None = None) -> None:
        super().__init__(run_id, workflow, params=params)
        self._canceller: Callable[[], None] | None = None
        self.cancel_requested = False
        # In-process views that follow this run as it executes (the DAG widget, the text
        # line): (told a step's name when it changed, told when the run ended). A tuple,
        # replaced when one comes or goes: told without a copy (three times a call).
        self.followers: tuple[_Follower, ...] = ()

    # ── what users ask ────────────────────────────────────────────────────────

    def report(self, *, reprice: bool = False) -> CostReport:
        """Cost of the run's LLM calls. ``reprice=True`` prices every call again with
        today's price tables at the time it was made (a model that was unknown then may
        be known now); the stored costs are not changed."""
        from .reports import CostReport

        return CostReport.from_runs([self], reprice=reprice)

    def raise_for_status(self) -> Run:
        """Raise ``bn.WorkflowFailed`` unless the run completed; returns the run otherwise."""
        if self.status is not RunStatus.COMPLETED:
            errors = {n: self.steps[n].error or "" for n in self.failed_steps if n in self.steps}
            raise WorkflowFailed(self.id, self.status, list(self.failed_steps), errors)
        return self

    def cancel(self) -> None:
        """Cancel the run: executing steps are cancelled, the run stays resumable."""
        self.cancel_requested = True
        if self._canceller is not None:
            self._canceller()

    def resume_message(self, workflow_var: str = "wf") -> str:
        """What a stopped run tells the user: its id, what finished, the line that resumes
        it (``await wf.run(run_id="...")``, with ``workflow_var`` for ``wf``). Stopped by
        a budget: why (the budget's reason) and the line with ``budget=``."""
        if self.budget_stop:  # its reason ends with the line that resumes it
            why = self.budget_stop.replace("await wf.run(", f"await {workflow_var}.run(")
            return (
                f"Run {self.id} of workflow {self.workflow!r} stopped by a budget, stored "
                f"and resumable: {self.counts().text()}.\n{why}"
            )
        how = "interrupted" if not self.cancel_requested else "cancelled"
        return (
            f"Run {self.id} of workflow {self.workflow!r} {how}, stored and resumable: "
            f"{self.counts().text()}.\n"
            "Resume it (completed steps are not run again): "
            f'await {workflow_var}.run(run_id="{self.id}")'
        )

    def context(self, step: str) -> list[dict[str, Any]]:
        """Captured context of a step (debug=True), oldest first.

        Each entry: ``kind`` (``request``, ``response``, ``error`` or ``log``), ``attempt``,
        ``message`` (response text, error, or the ``ctx.log`` message), ``data`` (a dict:
        the request's messages and params, the response's usage and cost, ``ctx.log``
        fields; or None) and ``created_at``. API keys are never in them.
        """
        if step not in self.steps:
            raise KeyError(f"run {self.id} has no step {step!r}; steps: {', '.join(self.steps)}")
        return [log.entry() for log in self.logs if log.step == step]

    def contexts(self) -> dict[str, list[dict[str, Any]]]:
        """Captured context of every step, by step (see ``context``), in one pass."""
        out: dict[str, list[dict[str, Any]]] = {}
        for log in self.logs:
            out.setdefault(log.step, []).append(log.entry())
        return out

    # ── followers: views of this process, told what changed without events ─────

    def follow(
        self,
        changed: Callable[[str], None],
        ended: Callable[[], None],
        quiet: Container[str] = _NONE,
    ) -> Callable[[], None]:
        """Call ``changed(step_name)`` inline whenever the runtime marks a step of this run
        changed (its state, a call of it, its provider batch; also a step that only counted
        a dependency done, its state unmoved), as the live run changes: a settled step
        before its commit; and ``ended()`` once the run's end is stored (when
        ``WorkflowFinished`` is published). Returns a function that stops it. Safe from
        any thread (a widget made on the kernel's thread may follow a run of another).

        What the DAG widget and the text line use instead of event listeners: no event is
        built for them (a ``StepUpdated`` costs a few µs, three events a call), and they
        only need to know which steps to look at again. Like listeners, both must be cheap
        and must not block; one that raises is removed and logged, and the run goes on.

        ``quiet``: steps ``changed`` is not called for, looked up at each mark (a set the
        follower keeps current, from any thread): the ones it reads by itself. The widget
        counts a large map's children at its redraws (``widget/_tally``): ~60,000 marks
        of 20,000 children were half its cost.
        """
        pair = (changed, ended, quiet)
        with _FOLLOWERS_LOCK:  # read, extended, replaced: not two at once
            self.followers = (*self.followers, pair)
        return lambda: self._unfollow(pair)

    def step_changed(self, name: str) -> None:
        """Tell the followers that step ``name`` changed (called by the runtime)."""
        for pair in self.followers:  # one that raises is dropped: the next still told
            try:
                if name not in pair[2]:
                    pair[0](name)
            except Exception:
                self._drop(pair)

    def set_notice(self, text: str | None) -> None:
        """Show ``text`` (None: nothing) in the views following the run: a line of the
        widget's header and of the text line. The followers are told as of a step whose
        name is no step's (``""``): they look at the header again."""
        if text != self.notice:
            self.notice = text
            self.step_changed("")

    def run_ended(self) -> None:
        """Tell the followers that the run ended, its end stored (called by the runtime)."""
        for pair in self.followers:
            try:
                pair[1]()
            except Exception:
                self._drop(pair)

    def _drop(self, pair: _Follower) -> None:
        logger.exception("run follower %r raised; it was removed", pair[0])
        self._unfollow(pair)

    def _unfollow(self, pair: _Follower) -> None:
        with _FOLLOWERS_LOCK:
            self.followers = tuple(p for p in self.followers if p is not pair)

    # ── loading ───────────────────────────────────────────────────────────────

    @classmethod
    async def load(cls, run_id: str, db: str | None = None) -> Run:
        """Read any run from the database (``await bn.Run.load(run_id, db=...)``)."""
        store = await Store.open(db)
        try:
            return await cls.from_store(store, run_id)
        finally:
            await store.close()

    @classmethod
    async def from_store(cls, store: ReadStore, run_id: str) -> Run:
        run, _nodes = await load_run(store, run_id, viewed=True)
        return run

    # ── display ───────────────────────────────────────────────────────────────

    def __repr__(self) -> str:
        return self.repr_with(self.counts())

    def repr_with(self, counts: StepCounts) -> str:
        """``repr(run)`` with its steps counted already (``run.counts()``: a view that
        counted them for itself, e.g. the saved snapshot at 20,000 children, passes them)."""
        status = status_text(self)
        cached, _ = cache_savings(self)
        hits = f", {cached} call{'' if cached == 1 else 's'} from the cache" if cached else ""
        steps = counts.text()
        return f"<Run {self.id} {self.workflow!r} {status}: {steps}, cost {self.cost_text()}{hits}>"

    def _repr_html_(self) -> str:
        """A static summary (counts, failures, costs); notebooks show the widget instead."""
        if Run.notebook_view is not None:
            return Run.notebook_view.static_html(self)
        return f"<pre>{html.escape(repr(self))}</pre>"

    def _ipython_display_(self) -> None:
        """In a notebook: the DAG widget (live while the run goes, a saved snapshot after);
        front ends without widget support show the static summary that comes with it."""
        if Run.notebook_view is not None:
            Run.notebook_view.display(self)
            return
        from IPython.display import display

        display({"text/plain": repr(self)}, raw=True)  # type: ignore[no-untyped-call]


class NotebookView(Protocol):
    """How a ``Run`` shows in a notebook. The widget package (a layer above this one)
    provides it when imported: ``Run.notebook_view = ...``."""

    def display(self, run: Run) -> None: ...

    def static_html(self, run: Run) -> str: ...


def run_abandoned(row: RunRow) -> bool:
    """Whether a stored run is ``abandoned``, as ``bn.runs()`` says it: stored running, its
    process gone (its lease's owner dead on this host, or its lease expired)."""
    return owner_gone(row.status, row.lease_owner, row.lease_expires_at, utcnow())


async def load_run(
    store: ReadStore, run_id: str, *, viewed: bool = False
) -> tuple[Run, list[NodeRow]]:
    """A stored run, and the node rows it was built from (the runtime's nodes use them too).

    ``viewed``: read to be shown (``Run.load``, ``bn.watch``), so ``abandoned`` is set from
    the row read; not for a run about to be resumed (it would say so while it executes)."""
    row = await store.get_run(run_id)
    if row is None:
        raise RunNotFound(f"no run {run_id!r} in {safe_url(store.url)}")
    nodes = await store.get_nodes(run_id)
    calls = await store.get_stats([run_id])
    logs = await store.get_debug_logs(run_id)
    run = Run.from_rows(store.url, row, nodes, calls, logs)
    run.abandoned = viewed and row.status == RunStatus.RUNNING and run_abandoned(row)
    for attempt in await store.get_attempts(run_id):
        if attempt.step in run.steps:
            run.steps[attempt.step].add_attempt(attempt)
    for step, worker in (await store.get_ran_on(run_id)).items():  # DESIGN §10
        if step in run.steps:
            run.steps[step].ran_on = worker
    for batch in await store.get_provider_batches(run_id):
        run.sync_batch(batch)
    for budget in await store.get_budgets(run_id):  # DESIGN §11
        if budget.scope == RUN_SCOPE:
            run.spend = SpendState(budget.cap, budget.spent, budget.reserved, budget.reason)
        if budget.reason and run.status == RunStatus.CANCELLED:
            run.budget_stop = run.budget_stop or budget.reason
    return run, nodes
