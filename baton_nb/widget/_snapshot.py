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

from .._run import Run
from ._state import detail

__all__ = ["CSS", "DETAILS_BUDGET", "ESM", "fallback_html", "snapshot_bundle", "snapshot_html"]

_HERE = Path(__file__).parent
ESM = (_HERE / "dag.js").read_text(encoding="utf-8")
CSS = (_HERE / "dag.css").read_text(encoding="utf-8")
DETAILS_BUDGET = 1_000_000  # characters of embedded details per snapshot


def details(run: Run, budget: int = DETAILS_BUDGET) -> dict[str, Any]:
    """Side-panel details of every node, while they fit in ``budget`` characters."""
    out: dict[str, Any] = {}
    for name in run.steps:
        item = detail(run, name)
        size = len(json.dumps(item, default=str))
        if size > budget:
            break
        budget -= size
        out[name] = item
    return out


def _script_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


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
    uid = f"bn-snap-{uuid.uuid4().hex[:12]}"
    return (
        f'<div class="bn-snapshot" id="{uid}"><style>{CSS}</style>{fallback_html(state)}</div>\n'
        f'<script type="module">\n{ESM}\n'
        f'const bnHost = document.getElementById("{uid}");\n'
        f"if (bnHost) renderStatic(bnHost, {_script_json(state)});\n"
        "</script>"
    )


def snapshot_bundle(run: Run, state: dict[str, Any]) -> dict[str, str]:
    """The MIME bundle that replaces the live widget once its run is over."""
    full = {**state, "details": details(run)}
    text = f"<Run {run.id} {run.workflow!r} {run.status}, cost ${run.cost}>"
    return {"text/html": snapshot_html(full), "text/plain": text}
