"""``bn.DagWidget``: the live DAG of a run (anywidget; the view itself is ``dag.js``).

Python only projects the run to JSON (``_state``) and ships changes, coalesced: the runtime
marks nodes dirty (``Run.follow``: O(1), inline, no event built; a watched run's events do
the same) and a throttle sends at most ~10 updates a second (``changed``: the state of each
node changed since the last send, as columns, replacing the view's; ``grown``: the graph's
new entries, appended by the view; ``nodes`` and ``graph`` are kept current in
place, unsent, for a view opened later and the saved state). When the run ends, the last
changes go out the same way and the saved snapshot replaces the displayed widget.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from collections.abc import Callable
from itertools import repeat
from typing import Any

import anyio
import anywidget
import traitlets

from .._run import Run, live_run
from .._runview import take_state
from .._states import TERMINAL_STATES, NodeKind
from .._watch import watch
from ..events import (
    BatchUpdated,
    CallFinished,
    StepUpdated,
    WorkflowFinished,
)
from . import _state
from ._snapshot import CSS, ESM, snapshot_bundle
from ._state import PENDING_ROW
from ._static import static_html
from ._tally import Tallies
from ._throttle import Throttle

__all__ = ["DagWidget", "in_kernel"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# The redraws take at most this share of the time: past ~10 a second of a few nodes each,
# they come less often (at least once a second), each carrying more (a child's start and
# end in one patch, computed once). The run's own work keeps the rest of the core. (At
# 1,000 calls in flight each redraw sends the ~1,000 children executing again: at 2 % it
# redrew every ~0.4 s, and those rows were a third of the widget's cost. A map of 2,000
# items or more sends its tally instead, a few numbers, read at each redraw: ``_tally``;
# at 20,000 children a redraw sums the spend of the ~4,000 ended since: ~1 a second.)
REDRAW_SHARE = 0.01
_NODE_EVENTS = (StepUpdated, CallFinished)
_KEEP = frozenset({"notice"})  # what a SubmittedRun shown keeps of its own (``take_state``)
_GROUP = NodeKind.GROUP  # (an enum class's attribute costs ~70 ns a look-up: once a mark)


def _nodes_json(rows: dict[str, tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """``nodes`` as sent: each node's dict, the nodes still pending left out."""
    row_dict = _state.row_dict
    return {name: row_dict(row) for name, row in rows.items() if row != PENDING_ROW}


def _mirror(shown: Run | None, run: Run) -> None:
    """A ``bn.SubmittedRun`` shown (``shown``) as ``run``, the run as stored: it takes its
    state (``run.status`` current), and the widget's Cancel cancels it on the workers."""
    if shown is not None:
        take_state(shown, run, _KEEP)
        run._canceller = shown.cancel


def _elsewhere(run: Run | str, db: str | None) -> tuple[Run | None, Run | str, str | None]:
    """A Run executing elsewhere (``bn.SubmittedRun``) not ended yet is shown as its run id
    (followed as stored: ``_mirror``): (it, its id, its database); else (None, run, db)."""
    if isinstance(run, Run) and run.executes_elsewhere and not run.done:
        return run, run.id, run.db_url
    return None, run, db


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached)."""
    import sys

    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _kernel_id() -> str:
    """This kernel's id (from its connection file name), for the Cancel button's fallback."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return ""
    match = re.fullmatch(r"kernel-(.+)\.json", name)
    return match.group(1) if match else ""


class _JsonWidget(anywidget.AnyWidget):
    """An anywidget whose synced traits are all plain JSON, sent without ipywidgets' search
    for binary buffers; while ``_unsent``, trait changes are kept, not sent."""

    _unsent = False

    def send_state(self, key: Any = None) -> None:
        """Send state to the view: ipywidgets' own, minus its search for binary buffers
        (every synced trait here is plain JSON; that walk cost about as much as encoding)."""
        if self._unsent:
            return
        state = self.get_state(key=key)
        if not state:
            return
        if self._property_lock:  # keep the echo guard current, as ipywidgets does
            for name, value in state.items():
                if name in self._property_lock:
                    self._property_lock[name] = value
        self._send({"method": "update", "state": state, "buffer_paths": []}, buffers=[])


class DagWidget(_JsonWidget):
    """The live DAG of a run: ``bn.DagWidget(run)`` or ``bn.DagWidget(run_id, db=...)``.

    Given a ``Run`` of this process, it follows its in-process events; given a run id (or a
    ``bn.SubmittedRun``), the run through ``bn.watch`` (snapshot, then events and polling),
    whichever process executes it (outside an event loop: the stored snapshot). Once the
    run ended, displayed copies become a saved snapshot.
    """

    _esm = ESM
    _css = CSS
    # The graph as one list per key (``_state.graph_columns``), kept current in place; sent as
    # columns (``_state.encode_columns``; the view reads entries with ``fromColumns``).
    graph = traitlets.Dict().tag(sync=True, to_json=lambda cols, _: _state.encode_columns(cols))
    # Every node's row (``_state.node_row``) as last sent, kept current in place; sent as
    # dicts, the pending ones left out (drawn as pending).
    nodes = traitlets.Dict().tag(sync=True, to_json=lambda rows, _: _nodes_json(rows))
    changed = traitlets.Dict().tag(sync=True)  # the nodes changed since the last send, as columns
    grown = traitlets.Dict().tag(sync=True)  # {at, add}: the graph's entries added since at
    groups = traitlets.Dict().tag(sync=True)  # the tallied maps' counts and sums (``_tally``)
    header = traitlets.Dict().tag(sync=True)
    kernel_id = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        run: Run | str,
        db: str | None = None,
        *,
        interval: float = 0.1,
        poll_interval: float = 0.5,
    ) -> None:
        self._rows: dict[str, tuple[Any, ...]] = {}  # node_row of every step, as last sent
        self._run: Run | None = None
        self._tallies = Tallies()  # the large maps, counted at each redraw
        super().__init__()
        self.redraws = 0
        self._source = "live"
        self._dirty: set[str] = set()
        self._final: dict[str, tuple[Any, ...]] = {}  # rows computed at the mark (``_mark``)
        self._throttle = Throttle(self._redraw, interval, share=REDRAW_SHARE)
        self._remove: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._handles: list[Any] = []
        self._finished = self._cancelling = False
        self.closes_at_end = False  # ``attach``'s: closed once its snapshot replaced it
        self.on_msg(self._on_msg)
        if in_kernel():
            self.kernel_id = _kernel_id()
        self._elsewhere, run, db = _elsewhere(run, db)  # a bn.SubmittedRun: by its id
        if isinstance(run, Run):
            self._bind(run, "live")
            self._finished = run.done
            if not run.done:
                self._remove = run.follow(self._mark, self.finish, self._tallies.quiet)
        elif isinstance(run, str) and (live := live_run(run)) is not None:
            self._bind(live, "live")  # a run of this process: its live Run, Cancel included
            self._remove = live.follow(self._mark, self.finish, self._tallies.quiet)
        elif isinstance(run, str):
            self.header = {"id": run, "status": "loading", "source": "watch"}
            self._follow_elsewhere(run, db, poll_interval)
        else:
            raise TypeError(f"DagWidget needs a bn.Run or a run id, got {type(run).__name__}")

    # ── what users and tests read ─────────────────────────────────────────────

    @property
    def run(self) -> Run | None:
        """The run shown (None until a watched run's snapshot is loaded)."""
        return self._run

    def state(self) -> dict[str, dict[str, Any]]:
        """Every node's state as the view has it, a dict each (``nodes`` holds rows, tuples,
        sent as these dicts but the pending ones); a tallied map's children with no row of
        their own (``_tally``: the view has their map's tally) as they are now."""
        rows = self._tallies.rows_as_viewed(self._rows, self.graph.get("id", []))
        return {name: _state.row_dict(row) for name, row in rows.items()}

    async def wait(self) -> Run:
        """Wait until a watched run finished (and the view got its final state)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._error is not None:
            raise self._error
        assert self._run is not None
        return self._run

    def cancel(self) -> None:
        """Cancel the run (what the Cancel button does); only for runs of this process."""
        run = self._run
        if run is None or run.done or (self._source != "live" and self._elsewhere is None):
            return
        self._cancelling = True
        run.cancel()
        self.header = self._header()  # acknowledge at once: the button shows "Cancelling…"

    def finish(self) -> None:
        """Send the final state and turn displayed copies into saved snapshots. Idempotent."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        self._throttle.close()
        if self._run is None or self._finished:
            return  # nothing to send again: the final state went out with the first call
        # Every node checked once more (the tallies too): the saved snapshot must not miss a
        # change nobody announced. Only the changes are sent; not at all for ``attach``'s
        # widget, replaced by its snapshot below (they go into the traits it is made from).
        self._final.clear()
        self._tallies.settle()
        skip = self._tallies.skipper()
        self._dirty.update(_state.moved(self._run, self._rows, self._dirty, skip))
        self._unsent = self.closes_at_end and bool(self._handles)
        try:
            self._redraw()
        finally:
            self._unsent = False
        # The page's ``graph`` and ``nodes`` are the first send plus the changes since: sent
        # whole once, for a saved widget state or a view opened late; not for a widget closed
        # at once (``attach``'s: 5 MB at 20,000 nodes, encoded for a model being dropped).
        if not self.closes_at_end:
            self.send_state(["graph", "nodes"])  # both kept current in place, sent by name
        self._finished = True
        if self._handles:
            bundle = snapshot_bundle(self._run, self._snapshot_state())
            for handle in self._handles:
                handle.update(bundle, raw=True)
            self._handles.clear()

    def __repr__(self) -> str:
        run = self._run
        if run is None:
            return f"<DagWidget run {self.header.get('id')}: loading>"
        return f"<DagWidget {run.workflow!r} run {run.id}: {run.status}>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self._finished and self._run is not None:
            display(snapshot_bundle(self._run, self._snapshot_state()), raw=True)  # type: ignore[no-untyped-call]
            return
        # The static view rides along: front ends without widget support show it instead.
        static = static_html(self._run) if self._run else f"<p>{html.escape(repr(self))}</p>"
        bundle = {
            "text/plain": repr(self),
            "text/html": static,
            WIDGET_MIME: {"version_major": 2, "version_minor": 1, "model_id": self.model_id},
        }
        self._handles.append(display(bundle, raw=True, display_id=True))  # type: ignore[no-untyped-call]

    # ── following the run ─────────────────────────────────────────────────────

    def _bind(self, run: Run, source: str) -> None:
        _mirror(self._elsewhere, run)
        self._run, self._source = run, source
        self._full_sync()

    def _mark(self, name: str) -> None:
        """A run of this process changed step ``name`` (``Run.follow``: called inline by the
        runtime, no event built): marks, and pokes the throttle at the first mark since the
        last send only (its call is due for the next ones).

        A step marked in a final state gets its row here, its objects just written (read at
        the next send, out of the caches: ~3 times the cost); a later mark computes it again,
        or drops it. A large map's children with no row: counted at redraws (``_tally``)."""
        assert self._run is not None
        step = self._run.steps.get(name)
        dirty, tallies = self._dirty, self._tallies
        first = not dirty and not tallies.moved
        if not tallies.only(step, self._rows):
            if step is not None and step.state in TERMINAL_STATES and step.kind != _GROUP:
                self._final[name] = _state.node_row(step)  # (a group's count moves unmarked)
            elif self._final:
                self._final.pop(name, None)
            dirty.add(name)  # before the poke: with no loop running, it may redraw at once
        elif not tallies.moved:  # (set only with an ask: ``Tallies.moved``)
            tallies.moved = first = True
        if first:
            self._throttle.poke()

    def _on_event(self, event: Any) -> None:
        """A watched run's update (``bn.watch``): marks, as ``_mark`` does."""
        kind = type(event)
        if kind is StepUpdated or kind is CallFinished or isinstance(event, _NODE_EVENTS):
            name = event.step_name
            step = self._run.steps.get(name) if self._run is not None else None
            if not self._tallies.only(step, self._rows):  # (as ``_mark``)
                self._dirty.add(name)
            self._throttle.poke()
        elif isinstance(event, BatchUpdated):  # the header's batch lines
            self._throttle.poke()
        elif isinstance(event, WorkflowFinished):
            self.finish()

    def _follow_elsewhere(self, run_id: str, db: str | None, poll_interval: float) -> None:
        loop = _running_loop()
        if loop is not None:
            self._task = loop.create_task(self._follow(run_id, db, poll_interval))
            return
        run = anyio.run(Run.load, run_id, db)  # no event loop here: a blocking load is fine
        self._bind(run, "stored")
        self._finished = run.done

    async def _follow(self, run_id: str, db: str | None, poll_interval: float) -> None:
        try:
            async with watch(run_id, db, poll_interval=poll_interval) as live:
                self._bind(live.run, "watch")
                async for update in live:
                    self._on_event(update)
                    _mirror(self._elsewhere, live.run)
        except Exception as exc:
            self._error = exc
            self._throttle.close()  # (a redraw asked for would replace this header)
            self.header = {"id": run_id, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return
        self.finish()

    # ── sending state ─────────────────────────────────────────────────────────

    def _header(self) -> dict[str, Any]:
        assert self._run is not None
        cancelling, source = self._cancelling, self._source
        live = source == "live" or self._elsewhere is not None
        return _state.header(self._run, cancellable=live, cancelling=cancelling, source=source)

    def _full_sync(self) -> None:
        """Send the graph and every node in full (the first send), each state computed."""
        run = self._run
        assert run is not None
        self._dirty.clear()
        self._tallies.bind(run)  # (its tallies sent whole below)
        self._rows = _state.node_rows(run, self._tallies.skipper())
        with self.hold_sync():
            self.groups = self._tallies.as_json()
            self.graph = _state.graph_columns(run)
            # Untouched pending steps are not sent: a new run's first send is its graph only.
            self.nodes = self._rows  # the same dict: kept current in place
            self.changed = {}
            self.grown = {}
            self.header = self._header()
        self.redraws += 1

    def _redraw(self) -> bool:
        """Send what changed since the last send: the graph when steps were added, the
        changed fields of the nodes whose state changed, the header. True: call again (a
        tallied map's children, quiet, did not all end; not once the run is over)."""
        run = self._run
        if run is None:
            return False
        graph = self.graph
        size = len(graph["id"])
        # A map's children (a chunk at a time), read before ``_changed`` looks at them again.
        add = _state.graph_columns(run, start=size) if size != len(run.steps) else None
        groups = self._tallies.redraw(size, self._rows, self._final, self._dirty)
        changed = self._changed()
        with self.hold_sync():
            if groups is not None:
                self.groups = groups
            if add is not None:
                # Only the new entries are sent (their shared fields once: ``encode_column``);
                # ``graph`` is kept current in place, unsent, for a view opened later.
                self.grown = {"at": size, "add": _state.encode_columns(add)}
                for key, column in add.items():
                    graph[key].extend(column)
            self.changed = changed
            self.header = self._header()
        self.redraws += 1
        return self._tallies.busy and not run.done and self.comm is not None  # (closed)

    def _changed(self) -> dict[str, Any]:
        """The nodes whose state changed since the last send, as columns (``_state.changed``),
        taken into ``nodes`` in place, unsent (for a later view and the saved state)."""
        assert self._run is not None
        names, self._dirty = self._dirty, set()
        final, self._final = self._final, {}
        known = len(self.graph["id"])  # the steps the graph had at the last send
        marked = self._source == "live"  # each change marked by the runtime (``_mark``)
        skip = self._tallies.skipper()
        return _state.changed(self._run, self._rows, names, known, final, marked=marked, skip=skip)

    def _snapshot_state(self) -> dict[str, Any]:
        """The saved snapshot's graph (its columns), header, tallies and every node's row,
        in the graph's order (but a tallied map's children with no row of their own)."""
        ids, get = self.graph["id"], self._rows.get
        if self._tallies.groups:  # only the rows sent (a tallied child has none; pending: none)
            rows = {name: row for name in ids if (row := get(name)) is not None}
        else:
            rows = dict(zip(ids, map(get, ids, repeat(PENDING_ROW)), strict=True))
        return {"graph": self.graph, "rows": rows, "header": self.header, "groups": self.groups}

    # ── messages from the view ────────────────────────────────────────────────

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "cancel":
            self.cancel()
        elif kind == "detail" and self._run is not None:
            name = str(content.get("id"))
            self.send({"type": "detail", "id": name, "detail": _state.detail(self._run, name)})
