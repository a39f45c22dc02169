"""``wf.run()`` after a crash: the run a dead process left unfinished, to resume (DESIGN §4).

A process killed mid-run (kill -9, a kernel that died, a machine that rebooted) leaves its
run ``running`` with a lease nobody renews. Running the workflow again with the same
params and model map resumes that run instead of starting a new one that pays every call
again. A kernel restart interrupts the kernel first: the run may end ``cancelled`` before
the process dies, stored with who stopped it (``stopped_by``, the execution's lease
owner); once that process is gone it is resumed the same way, if it is still the newest
run of its kind (a run the same process started after the interrupt came after it).
Never picked: one the user stopped in a process still alive (an interrupt; the cell
prints the line that resumes it), one ``run.cancel()`` or a budget stopped (stored
``cancelled`` without ``stopped_by``), a finished one, one whose owner is alive (another
notebook running the same workflow: two runs are legitimate), one of other params, models
(the whole map) or step code, one stored before schema 14 (which knows neither), and one
submitted to workers (theirs to run). ``wf.run(resume=False)`` asks for a new run. One
that would have been resumed but for its steps' code (a step fixed after the crash) is
named in one line as the new run starts, with the ``run_id=`` that resumes it (``Edited``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .. import _jsonutil
from .._graph import GraphSpec
from .._owners import held_by_this_process, holder_is_dead, owner_gone
from .._states import NodeKind, RunStatus, State
from ..store import NodeRow, RunRow, RunStopped, RunStore, utcnow
from ._code import code_hash

__all__ = ["Edited", "Unfinished", "find_unfinished", "resume_key", "same_step_models"]

_LOOKED_AT = 20  # the newest running runs of the workflow looked at


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A run to resume: its row, and how far it got (steps completed of all known)."""

    row: RunRow
    done: int
    total: int
    resumed_by: str | None = None  # a live process that resumed it already (find_unfinished)

    def message(self, call: str, models: Mapping[str, str] | None = None) -> str:
        """The one line the cell shows when it resumes the run (``call``: the workflow's
        name in the notebook; ``models``: this call's ``models=``, kept by the resume)."""
        row = self.row
        return (
            f"resuming run {row.id} of {row.workflow!r}, left unfinished by "
            f"{_owner(row)} ({self.done} of {self.total} steps done); for a new run instead: "
            f"await {call}.run(..., resume=False)"
        )


@dataclass(frozen=True, slots=True)
class Edited:
    """A run ``wf.run()`` would have resumed (left unfinished by a process that is gone,
    the newest of these params, the same steps and models) but for its steps' code,
    changed since it started: not resumed, named in one line with the call that does."""

    row: RunRow
    done: int
    total: int
    fanout: tuple[str, ...]  # steps whose model-map entry the stored nodes do not tell

    def message(self, call: str, models: Mapping[str, str] | None = None) -> str:
        """The one line the cell shows as it starts a new run instead (``call``: the
        workflow's name in the notebook; ``models``: this call's ``models=``, which the
        line that resumes the run must pass too: the run was named for having them)."""
        row = self.row
        what = "the steps' code changed since it started"
        if self.fanout:
            names = ", ".join(repr(n) for n in self.fanout)
            what = (
                "the steps' code (or the models= map's entry for fan-out step "
                f"{names}) changed since it started"
            )
        return (
            f"not resuming run {row.id} of {row.workflow!r}, left unfinished by "
            f"{_owner(row)} ({self.done} of {self.total} steps done): {what}, so this is a "
            f"new run, paying for its calls again; to resume that run with this code "
            f"instead: {_resume_call(call, row.id, models)}"
        )


_SHOWN_MODELS = 80  # a longer models= map is not written out in the line


def _resume_call(call: str, run_id: str, models: Mapping[str, str] | None) -> str:
    """``await wf.run(run_id="...")``, with this call's ``models=`` when it gave one: a
    map or fan-out step's children take their model from the call's map (``model_for``),
    so without it they would resume with another model than the run was named for."""
    if not models:
        return f'await {call}.run(run_id="{run_id}")'
    shown = f"models={dict(models)!r}"
    if len(shown) > _SHOWN_MODELS:
        return f'await {call}.run(run_id="{run_id}", models=...) with the same models= as this call'
    return f'await {call}.run(run_id="{run_id}", {shown})'


def _owner(row: RunRow) -> str:
    stopper = row.stopped_by if row.status is not RunStatus.RUNNING else None
    return stopper or row.lease_owner or row.stopped_by or "a process that is gone"


def resume_key(graph: GraphSpec, models: Mapping[str, str]) -> str:
    """A hash of the whole model map (a map step's children take theirs from it) and of
    the steps' code (``code_hash``): stored on a new run, compared before resuming it."""
    text = _jsonutil.dumps({"models": dict(sorted(models.items())), "code": code_hash(graph)})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def find_unfinished(
    store: RunStore,
    workflow: str,
    params_json: str,
    models: Mapping[str, str],
    steps: set[str],
    key: str,
) -> Unfinished | Edited | None:
    """The newest run of ``workflow`` left unfinished by a process that is gone, with
    these params (as stored), this model map, these steps and this code (``key``, from
    ``resume_key``: a run stored without one is never picked). When there is none: the
    newest run of these params if it is such a run but for its code (``Edited``: the
    caller says so, and starts a new run); else None.

    A run of the same kind that another live process executes after a resume (its
    ``executions`` > 1) and that is newer than any to resume is returned with
    ``resumed_by`` set: most often a second re-run at the same moment as the first (two
    notebooks after a crash), which must not start a second paid run of the same work
    unasked; the caller says so and how to start one (``resume=False``).

    Queries when no run is resumed: the workflow's ``running`` runs (20 newest) and
    ``newest_of_kind`` (one statement); more only for a run found that way.
    """
    rows = await store.list_runs(workflow=workflow, status=RunStatus.RUNNING, limit=_LOOKED_AT)
    now = utcnow()
    rows = [r for r in rows if r.params == params_json and r.resume_key == key]
    newest = await store.newest_of_kind(workflow, params_json, key)
    stopped = await _stopped_here_before(store, newest.of_kind)
    if stopped is not None:  # newest first, as listed
        rows = sorted([*rows, stopped], key=lambda r: r.created_at, reverse=True)
    submitted = await store.submitted_run_ids([r.id for r in rows]) if rows else set()
    for row in rows:
        if row.id in submitted:
            continue
        if held_by_this_process(row.lease_owner):
            # a run this process executes or executed (a second wf.run() in this kernel:
            # two runs). Never "gone": read as running just before it ended, its lease
            # already let go, it would look abandoned (three runs at once became two).
            continue
        # Its lease's holder is gone (dead here, or its lease expired on another host), or
        # none holds it. A stopped run (an interrupt in a process that is gone) is judged
        # by the same rule: its lease held since is a resume under way, one left behind
        # by a holder gone (or given back: ``execute_run``) does not keep it.
        gone = _gone(row, now)
        if row.status is RunStatus.RUNNING and not gone and row.executions <= 1:
            continue  # another notebook's own run of the same workflow: two runs
        progress = await _progress(store, row, models, steps)
        if progress is None:
            continue
        done, total, _ = progress
        return Unfinished(row, done, total, None if gone else row.lease_owner)
    return await _edited(store, newest.of_params, key, models, steps)


def _gone(row: RunRow, now: datetime) -> bool:
    """No live process holds the run's lease: none does, or its holder is gone."""
    return not row.lease_owner or owner_gone(
        RunStatus.RUNNING, row.lease_owner, row.lease_expires_at, now
    )


def same_step_models(nodes: Iterable[NodeRow], models: Mapping[str, str]) -> bool:
    """A run's steps store ``models``' entries: its top-level step nodes' models are this
    model map's. A map or fan-out step's entry is not stored (its node has no model): not
    compared (the "not resuming" line says so)."""
    return all(
        n.model == models.get(n.step) for n in nodes if n.parent is None and n.kind is NodeKind.STEP
    )


async def _progress(
    store: RunStore, row: RunRow, models: Mapping[str, str], steps: set[str]
) -> tuple[int, int, tuple[str, ...]] | None:
    """Steps completed and all known of a run with these steps and models (as its nodes
    store them), and its fan-out steps (no model stored); None for other steps or models."""
    nodes = await store.get_nodes(row.id)
    top = {n.step: n for n in nodes if n.parent is None}
    if set(top) != steps:
        return None  # the workflow's steps changed since: a new run
    if not same_step_models(top.values(), models):
        return None  # another model map: another run
    counted = [n for n in nodes if n.kind is not NodeKind.GROUP]
    done = sum(n.state is State.COMPLETED for n in counted)
    fanout = tuple(sorted(name for name, n in top.items() if n.kind is NodeKind.GROUP))
    return done, len(counted), fanout


async def _stopped_here_before(store: RunStore, newest: RunStopped | None) -> RunRow | None:
    """The newest run of this kind (params and resume key: ``newest``) if an interrupt
    stopped it in a process of this host that is gone (a kernel restart interrupts before
    it shuts the kernel down): resumable as if that process had died mid-run. Not when a
    newer run of the kind exists (the same kernel ran the cell again after the
    interrupt), nor when the stopper is this process (an interrupt and a re-run in the
    same kernel: a new run, as the printed resume line says) or alive (another notebook
    interrupted it)."""
    if not _stopped_by_the_gone(newest):
        return None
    assert newest is not None
    return await store.get_run(newest.id)


def _stopped_by_the_gone(run: RunStopped | None) -> bool:
    if run is None or run.status is not RunStatus.CANCELLED or not run.stopped_by:
        return False
    return not held_by_this_process(run.stopped_by) and holder_is_dead(run.stopped_by)


async def _edited(
    store: RunStore,
    newest: RunStopped | None,
    key: str,
    models: Mapping[str, str],
    steps: set[str],
) -> Edited | None:
    """The newest run of these params (``newest``: whatever its key) if ``find_unfinished``
    would have resumed it but for its steps' code: stored with another resume key, left
    ``running`` or stopped by an interrupt by a process that is gone, not submitted, the
    same steps and models (what the nodes store: the key holds the code and the whole
    map). No query unless the newest run of these params is such a run, unfinished."""
    if newest is None or newest.resume_key in (None, key):
        return None  # this code's (resumed or not, for its own reasons), or stored unkeyed
    if newest.status is not RunStatus.RUNNING and not _stopped_by_the_gone(newest):
        return None  # finished, or stopped for good (run.cancel(), a budget, alive)
    row = await store.get_run(newest.id)
    if row is None or held_by_this_process(row.lease_owner) or not _gone(row, utcnow()):
        return None  # this process's, or a live process executes it
    if await store.submitted_run_ids([row.id]):
        return None  # the workers'
    progress = await _progress(store, row, models, steps)
    if progress is None:
        return None
    return Edited(row, *progress)
