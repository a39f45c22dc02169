"""The saved form of a finished run's view: self-contained HTML, stored in the notebook.

A live widget needs its kernel; a saved notebook does not have one. When a run ends, the
widget's output is replaced by this snapshot: the same renderer (``dag.js``, inlined) over
the final state, with each node's details embedded, so the reopened notebook shows the
same graph, and clicking a node still opens its side panel. Where scripts do not run
(GitHub, nbviewer, untrusted notebooks) a plain table stands in.
"""

from __future__ import annotations

import html
import json
import uuid
from pathlib import Path
from typing import Any

from .._money import fmt_money
from .._run import CallRecord, Run
from ._state import detail

__all__ = ["CSS", "DETAILS_BUDGET", "ESM", "fallback_html", "snapshot_bundle", "snapshot_html"]

_HERE = Path(__file__).parent
ESM = (_HERE / "dag.js").read_text(encoding="utf-8")
CSS = (_HERE / "dag.css").read_text(encoding="utf-8")
DETAILS_BUDGET = 1_000_000  # characters of embedded details per snapshot


def details(run: Run, budget: int = DETAILS_BUDGET) -> dict[str, Any]:
    """Side-panel details of every node, while they fit in ``budget`` characters."""
    return _details(run, budget)[0]


def _details(run: Run, budget: int) -> tuple[dict[str, Any], str]:
    """The side-panel details of every node while they fit in ``budget``, and their JSON.

    Calls and log entries are grouped by step once, not scanned once per node. When all the
    details fit (the usual case) their JSON is made in one pass; otherwise node by node,
    until the budget is spent.
    """
    calls: dict[str, list[CallRecord]] = {}
    for call in run.calls:
        calls.setdefault(call.step, []).append(call)
    logs: dict[str, list[dict[str, Any]]] = {}
    for entry in run.logs:
        logs.setdefault(entry.step, []).append(entry.entry())

    def one(name: str) -> dict[str, Any]:
        return detail(run, name, calls=calls.get(name, []), context=logs.get(name, []))

    out: dict[str, Any] = {}
    estimate = 0
    for name in run.steps:
        out[name] = item = one(name)
        estimate += _size_hint(item)
        if estimate > budget:
            break
    else:
        text = _json(out)
        if len(text) <= budget:
            return out, text
    kept: dict[str, Any] = {}
    parts: list[str] = []
    for name in run.steps:
        item = out[name] if name in out else one(name)
        part = f"{_json(name)}:{_json(item)}"
        if len(part) > budget:
            break
        budget -= len(part)
        kept[name] = item
        parts.append(part)
    return kept, "{" + ",".join(parts) + "}"


def _size_hint(item: dict[str, Any]) -> int:
    """About the length of ``item``'s JSON (a lower bound, but for escapes)."""
    size = 100 + len(item.get("result") or "") + len(item.get("error") or "")
    size += sum(40 + len(entry["t"]) for entry in item.get("context", ()))
    return size + 120 * len(item.get("calls", ()))


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _escape_script(text: str) -> str:
    """JSON made safe inside a <script> element: no "</" ends it, no "<!--" changes it."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _script_json(value: Any) -> str:
    return _escape_script(_json(value))


def fallback_html(state: dict[str, Any]) -> str:
    """A script-free summary: header line and one row per step."""
    head = state.get("header", {})
    nodes = state.get("nodes", {})
    rows = []
    for entry in state.get("graph", []):
        node = nodes.get(entry["id"], {})
        rows.append(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(entry["id"]),
                html.escape(str(node.get("s", ""))),
                node.get("a", ""),
                (node.get("ti", 0) or 0) + (node.get("to", 0) or 0),
                html.escape("" if node.get("c") is None else f"${node['c']}"),
            )
        )
    title = (
        f"<b>{html.escape(str(head.get('wf', '')))}</b> run {html.escape(str(head.get('id', '')))}"
        f": <b>{html.escape(str(head.get('status', '')))}</b>, cost ${head.get('cost', '0')}"
    )
    return (
        f'<div class="bn-fallback"><p>{title}</p><table><tr><th>step</th><th>state</th>'
        f"<th>attempts</th><th>tokens</th><th>cost</th></tr>{''.join(rows)}</table></div>"
    )


def snapshot_html(state: dict[str, Any]) -> str:
    """The HTML of a snapshot: styles, the fallback, and the script that renders the view."""
    return _snapshot_html(state, _script_json(state))


def _snapshot_html(state: dict[str, Any], state_json: str) -> str:
    uid = f"bn-snap-{uuid.uuid4().hex[:12]}"
    return (
        f'<div class="bn-snapshot" id="{uid}"><style>{CSS}</style>{fallback_html(state)}</div>\n'
        f'<script type="module">\n{ESM}\n'
        f'const bnHost = document.getElementById("{uid}");\n'
        f"if (bnHost) renderStatic(bnHost, {state_json});\n"
        "</script>"
    )


def snapshot_bundle(run: Run, state: dict[str, Any]) -> dict[str, str]:
    """The MIME bundle that replaces the live widget once its run is over."""
    # The JSON of {**state, "details": {...}}, the details encoded only once.
    head = _json({k: v for k, v in state.items() if k != "details"})
    details_json = _details(run, DETAILS_BUDGET)[1]
    comma = "," if len(head) > 2 else ""
    state_json = _escape_script(f'{head[:-1]}{comma}"details":{details_json}}}')
    text = f"<Run {run.id} {run.workflow!r} {run.status}, cost ${fmt_money(run.cost)}>"
    return {"text/html": _snapshot_html(state, state_json), "text/plain": text}
