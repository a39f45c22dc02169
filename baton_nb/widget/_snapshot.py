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
from pathlib import Path
from typing import Any

from .._run import CallRecord, Run
from ._state import compact_json, detail
from ._static import static_html

__all__ = ["CSS", "DETAILS_BUDGET", "ESM", "snapshot_bundle"]

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
    logs = run.contexts()  # decoded: a request's messages are data, not a JSON string

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


_json = compact_json(str)


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
    # The JSON of {**state, "details": {...}}, the details encoded only once.
    head = _json({k: v for k, v in state.items() if k != "details"})
    details_json = _details(run, DETAILS_BUDGET)[1]
    comma = "," if len(head) > 2 else ""
    state_json = _escape_script(f'{head[:-1]}{comma}"details":{details_json}}}')
    return {"text/html": _snapshot_html(static_html(run), state_json), "text/plain": repr(run)}
