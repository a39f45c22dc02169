"""The saved form of a finished run's view: self-contained HTML, stored in the notebook.

A live widget needs its kernel; a saved notebook does not have one. When a run ends, the
widget's output is replaced by this snapshot: the same renderer (``dag.js``, inlined) over
the final state, with each node's details embedded (its captured context included), so the
reopened notebook shows the same graph, and clicking a node still opens its side panel.
Where scripts do not run (GitHub, nbviewer, untrusted notebooks) the static view of
``_static`` stands in.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Container, Iterator
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any

from .._run import CallRecord, Run
from .._states import FAILED_STATES, NodeKind
from ._state import (
    GRAPH_KEYS,
    NODE_KEYS,
    OPTIONAL_NODE_KEYS,
    columns,
    compact_json,
    detail,
    encode_columns,
    row_columns,
)
from ._static import Census, census, static_html

__all__ = ["CSS", "DETAILS_BUDGET", "ESM", "in_detail_order", "snapshot_bundle"]

_HERE = Path(__file__).parent
ESM = (_HERE / "dag.js").read_text(encoding="utf-8")
CSS = (_HERE / "dag.css").read_text(encoding="utf-8")
DETAILS_BUDGET = 500_000  # characters of embedded details per snapshot (see ``_details``)
CHUNK = 256  # nodes whose details are encoded in one call


def details(run: Run, budget: int = DETAILS_BUDGET) -> dict[str, Any]:
    """Side-panel details of every node, while they fit in ``budget`` characters."""
    return _details(run, budget)[0]


def in_detail_order(run: Run) -> list[str]:
    """The nodes whose details a snapshot keeps first: the steps that are not fan-out
    children (a run's few named steps: its prompts, its synthesis...), then the children
    that failed (the ones a reader opens), then the other children, each in the run's order.
    """
    return list(_detail_order(run, census(run)))


def _detail_order(run: Run, counted: Census, shown: Container[str] | None = None) -> Iterator[str]:
    """``in_detail_order``, the other children found as they are asked for: a snapshot
    keeps the details of ~2,000 of 20,000 children, and stops asking there. ``shown``: the
    nodes the snapshot has a state of; the other children are left out (a large map's
    children that the view only counts, ``_tally``: nothing opens their side panel)."""
    yield from (step.name for step in counted.top)
    if shown is None:
        yield from counted.failed_children
    else:  # (a large map's cancelled children: counted only, no row: nothing opens them)
        yield from (name for name in counted.failed_children if name in shown)
    child = NodeKind.CHILD
    for name, step in run.steps.items():
        listed = shown is None or name in shown
        if listed and step.kind == child and step.state not in FAILED_STATES:
            yield name


def _details(
    run: Run,
    budget: int,
    counted: Census | None = None,
    shown: Container[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """The side-panel details of the nodes, in ``in_detail_order``, while their JSON fits in
    ``budget`` characters, and that JSON. (Half a megabyte: a saved notebook carries it; at
    20,000 children, the details of the run's steps, its failures and ~2,000 children.)

    Calls and log entries are grouped by step once, not scanned once per node. The JSON is
    made a chunk of nodes at a time (one call of the encoder for ``CHUNK`` nodes: two per
    node cost more than encoding them), node by node only in the chunk where the budget
    runs out. ``counted``: the run's ``census``, when the caller made it; ``shown``: as
    ``_detail_order``'s.
    """
    first, calls = _calls_by_step(run.calls)
    logs = run.contexts()  # decoded: a request's messages are data, not a JSON string
    names = _detail_order(run, census(run) if counted is None else counted, shown)
    kept: dict[str, Any] = {}
    parts: list[str] = []
    used = 2  # the braces
    while chunk_names := list(islice(names, CHUNK)):
        chunk = {
            name: detail(
                run,
                name,
                calls=calls.get(name) or ([first[name]] if name in first else []),
                context=logs.get(name, []),
            )
            for name in chunk_names
        }
        text = _json(chunk)[1:-1]  # "id":{...},"id":{...}
        if used + (1 if parts else 0) + len(text) <= budget:
            used += (1 if parts else 0) + len(text)
            kept.update(chunk)
            parts.append(text)
            continue
        for name, item in chunk.items():  # the chunk that does not fit: what does, in order
            part = _json({name: item})[1:-1]
            if used + (1 if parts else 0) + len(part) > budget:
                break
            used += (1 if parts else 0) + len(part)
            kept[name] = item
            parts.append(part)
        break
    return kept, "{" + ",".join(parts) + "}"


_json = compact_json(str)


def _calls_by_step(
    calls: list[CallRecord],
) -> tuple[dict[str, CallRecord], dict[str, list[CallRecord]]]:
    """Each step's first call, and the list of its calls for the steps with more than one
    (a map child makes one call: no list made for each of 20,000 steps, most never kept).
    Made in C (``dict``, ``zip``, ``Counter``), the calls of steps with several walked in
    Python only: a loop over 20,000 calls cost ~8 ms of a snapshot."""
    steps = list(map(attrgetter("step"), calls))
    first = dict(zip(reversed(steps), reversed(calls), strict=True))  # the earliest wins
    several: dict[str, list[CallRecord]] = {}
    if len(first) < len(calls):
        several = {step: [] for step, count in Counter(steps).items() if count > 1}
        for step, call in zip(steps, calls, strict=True):
            more = several.get(step)
            if more is not None:
                more.append(call)
    return first, several


def _saved(state: dict[str, Any]) -> dict[str, Any]:
    """The state as the snapshot saves it: the graph's entries (a dict each, or as columns:
    ``_state.graph_columns``) as columns, the nodes (given as ``nodes``, a dict each, or
    ``rows``) as columns under ``states`` (``nodes``, a dict per node, is the form of older
    snapshots)."""
    out: dict[str, Any] = {}
    graph = state.get("graph", [])
    for key, value in state.items():
        if key == "graph":
            out[key] = (
                encode_columns(value) if isinstance(value, dict) else columns(value, GRAPH_KEYS)
            )
        elif key == "nodes":  # each node's dict (``stored_state``)
            out["states"] = columns(
                value.values(), NODE_KEYS, optional=OPTIONAL_NODE_KEYS, ids=list(value)
            )
        elif key == "rows":  # each node's row (``DagWidget``'s)
            # In the graph's order, no ``id`` column: the view reads the graph's (320 KB
            # less at 20,000 nodes).
            ids = list(value)
            graph_ids = graph["id"] if isinstance(graph, dict) else [e["id"] for e in graph]
            in_order = ids == graph_ids
            out["states"] = row_columns(list(value.values()), None if in_order else ids)
        elif key != "details":
            out[key] = value
    return out


def _escape_script(text: str) -> str:
    """JSON made safe inside a <script> element: no "</" ends it, no "<!--" changes it."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _snapshot_html(fallback: str, state_json: str) -> str:
    uid = f"bn-snap-{uuid.uuid4().hex[:12]}"
    return (
        f'<div class="bn-snapshot" id="{uid}"><style>{CSS}</style>{fallback}</div>\n'
        f'<script type="module">\n{ESM}\n'
        f'const bnHost = document.getElementById("{uid}");\n'
        f"if (bnHost) renderStatic(bnHost, {state_json});\n"
        "</script>"
    )


def snapshot_bundle(run: Run, state: dict[str, Any]) -> dict[str, str]:
    """The MIME bundle that replaces the live widget once its run is over."""
    # The JSON of {**state, "details": {...}}, the details encoded only once; the graph and
    # the nodes as columns (``columns``: at 20,000 map children 2.1 MB instead of 4.5, and
    # ~30 % less to encode; ``renderStatic`` reads a saved snapshot's entries of either form).
    head = _json(_saved(state))
    counted = census(run)  # one pass over the steps for the static view and the details
    rows = state.get("rows")  # the nodes it has a state of (the widget's snapshot)
    details_json = _details(run, DETAILS_BUDGET, counted, rows)[1]
    comma = "," if len(head) > 2 else ""
    state_json = _escape_script(f'{head[:-1]}{comma}"details":{details_json}}}')
    fallback = static_html(run, counted)
    return {
        "text/html": _snapshot_html(fallback, state_json),
        "text/plain": run.repr_with(counted.counts),
    }
