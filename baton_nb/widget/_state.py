"""What the DAG view draws, as plain JSON: graph structure, per-node state, header, details.

Pure functions of a ``Run``: the widget, the static snapshot and the tests share them.
Layout, aggregation and formatting happen in the browser (``dag.js``), in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timezone
from decimal import Decimal
from itertools import compress, islice, repeat
from operator import attrgetter, itemgetter, ne
from typing import Any

from .._money import fmt_money
from .._run import CallRecord, Run, StepInfo
from .._runview import cache_savings, spend_state
from .._states import State

__all__ = [
    "ERROR_PREVIEW",
    "GRAPH_KEYS",
    "NODE_KEYS",
    "OPTIONAL_NODE_KEYS",
    "PENDING",
    "PENDING_ROW",
    "ROW_KEYS",
    "batches",
    "changed",
    "columns",
    "compact_json",
    "detail",
    "encode_column",
    "encode_columns",
    "graph",
    "graph_columns",
    "graph_entries",
    "header",
    "is_pending",
    "moved",
    "node_row",
    "node_rows",
    "node_state",
    "node_states",
    "row_columns",
    "row_dict",
    "stored_state",
]

ERROR_PREVIEW = 300
RESULT_LIMIT = 20_000
CONTEXT_LIMIT = 8_000


def _ts(value: datetime | None) -> float | None:
    return None if value is None else round(value.timestamp(), 3)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ms(value: datetime | None) -> int | None:
    """Whole milliseconds since the epoch: an int is encoded several times faster than a
    float's shortest repr, and a node's times are encoded at every redraw that touches it.

    Exact integer arithmetic on the difference from the epoch (a third of the time of
    ``datetime.timestamp()``, whose float could also round a millisecond down); a naive
    time (none in this package: its times are aware UTC) as ``timestamp()`` reads it."""
    if value is None:
        return None
    try:
        since = value - _EPOCH
    except TypeError:  # naive: local time
        return int(value.timestamp() * 1000)
    return since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000


def _money(value: Decimal | None) -> str | None:
    # Normalised: Postgres NUMERIC(30, 12) loads 0.00037735 as 0.000377350000.
    return None if value is None else (_COST_TEXT.get(str(value)) or _cost_text(value))


def graph(run: Run) -> list[dict[str, Any]]:
    """One entry per step, group and child, in a stable order (the run's)."""
    return graph_entries(graph_columns(run))


def graph_columns(run: Run, start: int = 0) -> dict[str, list[Any]]:
    """``graph`` as one list per key of ``GRAPH_KEYS`` (what ``encode_columns`` sends), from
    the ``start``-th step on (steps are only ever added, at the end: a map's children): the
    widget's form, each column read off the steps in C (``map`` of an ``attrgetter``), no
    dict per entry (at 20,000 map children, ~3 times faster than the entries)."""
    steps: Iterable[StepInfo] = run.steps.values()
    if start:
        steps = islice(steps, start, None)
    listed = list(steps)
    return {
        "id": list(map(_NAME, listed)),
        "k": list(map(str, map(_KIND, listed))),
        "p": list(map(_PARENT, listed)),
        "d": list(map(tuple, map(_DEPS, listed))),  # a tuple, no list: see node_row
        "m": list(map(_MODEL, listed)),
        "i": list(map(_ITEM, listed)),
        "mx": list(map(_MAX_ATTEMPTS, listed)),
    }


_NAME, _KIND, _PARENT, _DEPS = (attrgetter(a) for a in ("name", "kind", "parent", "deps"))
_MODEL, _ITEM, _MAX_ATTEMPTS = (attrgetter(a) for a in ("model", "item_index", "max_attempts"))


def graph_entries(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The graph's entries, a dict each, of its columns (``graph_columns``)."""
    keys = tuple(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def node_row(step: StepInfo) -> tuple[Any, ...]:
    """The changing part of one node, compact (sent up to 10 times a second), as a tuple of
    ``ROW_KEYS``' values: what the widget keeps and compares per node; ``node_state`` is
    its dict. A tuple, not a dict: built in a fourth of the time, compared in half, and
    cut into columns by ``zip`` (at 20,000 map children, ~30,000 of them a run).

    Times (``t0``, ``t1``) in milliseconds since the epoch. A step's total call latency is
    not here: the view shows latency per call only (``detail``). ``x`` (a map's items with
    no child stored yet, counted pending) and ``ch`` (calls answered from the response
    cache, within ``n``, not paid) are 0 when there are none.
    """
    usage = step.usage
    error = step.error
    if error is not None and len(error) > ERROR_PREVIEW:
        error = error[: ERROR_PREVIEW - 1] + "…"
    # _ms and _money inlined: this runs for every node an event touched, at every redraw
    # (_ms but for a naive time: a map child's end computes both)
    start, end, calls = step.started_at, step.finished_at, step.calls
    t0 = t1 = None
    try:
        if start is not None:
            since = start - _EPOCH
            t0 = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
        if end is not None:
            since = end - _EPOCH
            t1 = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
    except TypeError:
        t0, t1 = _ms(start), _ms(end)
    cost = step.cost if calls or step.cost else None  # (attempts with no answer: cost only)
    # Only plain values (str, not the State enum): the garbage collector untracks the tuple
    # (and does not track ``node_state``'s dict). The widget keeps one per node all run
    # long (20,000 tracked objects at 20,000 children otherwise, walked by every full
    # collection and hastening them).
    return (
        str(step.state),
        step.attempt,
        t0,
        t1,
        usage.input_tokens,
        usage.output_tokens,
        None if cost is None else (_COST_TEXT.get(str(cost)) or _cost_text(cost)),
        step.unpriced_calls,
        calls,
        step.replayed_calls,
        error,
        step.has_result,
        step.unstored,
        step.cached_calls,
    )


def node_state(step: StepInfo) -> dict[str, Any]:
    """``node_row`` as a dict, its optional fields (``x``, ``ch``) only when not 0."""
    return row_dict(node_row(step))


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A node's row (``node_row``) as the view reads a node: a dict of ``NODE_KEYS``, with
    ``OPTIONAL_NODE_KEYS`` only when not 0."""
    state = dict(zip(NODE_KEYS, row[:_X], strict=True))
    x, ch = row[_X:]
    if x:  # a map's items with no child stored yet: counted pending
        state["x"] = x
    if ch:  # answered from the response cache: within ``n``, not paid
        state["ch"] = ch
    return state


# A cost's text by the amount's ``str``: a fan-out's calls cost a few distinct amounts, and
# formatting one (``fmt_money``, ~240 ns) costs more than looking it up. Keyed by ``str``
# (~80 ns), not by the ``Decimal``: hashing one the run just made costs ~450 ns (its hash is
# a modular power), more than formatting it; a row's cost is always a new one.
_COST_TEXT: dict[str, str] = {}


def _cost_text(cost: Decimal) -> str:
    if len(_COST_TEXT) >= 4096:  # bounded: amounts that all differ only cycle through it
        _COST_TEXT.clear()
    text = _COST_TEXT[str(cost)] = fmt_money(cost)
    return text


NODE_KEYS = ("s", "a", "t0", "t1", "ti", "to", "c", "u", "n", "rp", "e", "r")  # always sent
OPTIONAL_NODE_KEYS = ("x", "ch")  # in a row always; in a node's dict only when not 0
ROW_KEYS = NODE_KEYS + OPTIONAL_NODE_KEYS  # a row's fields, in order
_X = len(NODE_KEYS)  # where the optional fields start in a row

# A step not started yet (the view draws a node missing from ``nodes`` this way).
PENDING_ROW: tuple[Any, ...] = node_row(StepInfo(name="", job_id=0))
PENDING: dict[str, Any] = row_dict(PENDING_ROW)


_PENDING_STATE, _PENDING_ATTEMPT = PENDING["s"], PENDING["a"]


def is_pending(step: StepInfo) -> bool:
    """``node_row(step) == PENDING_ROW``, read off the step without building its row: a
    map's children are added a chunk at a time (thousands), almost all of them untouched."""
    usage = step.usage
    return (
        step.state == _PENDING_STATE
        and step.attempt == _PENDING_ATTEMPT
        and step.started_at is None
        and step.finished_at is None
        and not step.calls
        and step.error is None
        and not step.has_result
        and not step.unpriced_calls
        and not step.replayed_calls
        and not step.cached_calls
        and not usage.input_tokens
        and not usage.output_tokens
        and not step.unstored
    )


_COMPLETED = str(State.COMPLETED)


def moved(
    run: Run,
    sent: dict[str, tuple[Any, ...]],
    known: AbstractSet[str] = frozenset(),
    skip: Callable[[StepInfo], bool] | None = None,
) -> list[str]:
    """The steps whose row is not the one ``sent`` (or that have none): a run's end checks
    every node for a change nobody announced (a group's count of unstored items).

    Not computed again: the steps in ``known`` (to be computed anyway), and those sent as
    completed with no item left unstored: a completed step is final within an execution
    (its result stored; a resume is another execution, followed by another ``Run``), and
    what it still gets is announced (a charge for one of its attempts that had no answer
    is a call). A completed map group sent with items unstored is checked: its count
    drops with no event (a quorum met while chunks were stored). At 20,000 children that
    check cost ~30 ms at every run's end; skipped, ~2 ms. Nor the steps ``skip`` says have
    no row of their own (a tallied map's children: ``_tally``)."""
    get = sent.get
    out = []
    for name, step in run.steps.items():
        if name in known:
            continue
        row = get(name)
        if row is not None and row[0] == _COMPLETED and not row[_X]:
            continue  # final (above)
        if (row is None or row != node_row(step)) and (skip is None or not skip(step)):
            out.append(name)
    return out


def changed(
    run: Run,
    rows: dict[str, tuple[Any, ...]],
    names: set[str],
    known: int,
    computed: dict[str, tuple[Any, ...]] | None = None,
    *,
    marked: bool = False,
    skip: Callable[[StepInfo], bool] | None = None,
) -> dict[str, Any]:
    """The nodes whose row is not the one in ``rows`` (each node's as last sent; a node
    missing from it was sent as ``PENDING_ROW`` or not at all, which the view draws the
    same), as columns (``row_columns``), each in full (a diff per node cost as much again);
    ``rows`` takes each new row in place.

    Computed again only for ``names`` (the steps an event touched), the steps added since
    ``rows`` had seen ``known`` of them that are not untouched (a map's children are added a
    chunk at a time, thousands, pending), and their groups (whose count of unstored items
    moves without an event). ``names`` is consumed. ``computed``: rows of some of ``names``
    computed since they last changed (the widget's ``_mark``, for steps in a final state),
    taken and sent as they are. ``marked``: every change of a step was marked (in ``names``: a run
    of this process, whose runtime tells each one) but its addition, so a step added
    since is looked at only if its state moved (a settled map's later chunks are added
    cancelled, unmarked); a watched run's steps
    may come from the database started in any way: each checked (``is_pending``). ``skip``:
    the added steps that get no row of their own (a tallied map's children: ``_tally``)."""
    steps = run.steps
    if len(steps) > known:  # steps are only ever added, at the end
        added = list(islice(steps.values(), known, None))
        if marked:  # only those added already moved (a settled map's chunks: cancelled)
            touched = [step for step in added if step.state != _PENDING_STATE]
        else:
            touched = [step for step in added if not is_pending(step)]
        names.update(step.name for step in touched if skip is None or not skip(step))
        names.update(p for p in set(map(_PARENT, added)) if p is not None)
    get = rows.get
    ids: list[str] = []
    sent: list[tuple[Any, ...]] = []
    if computed:  # final rows (completed, discarded, cancelled): sent as they are
        # (a step's new state: compared with the row sent, a cold read each, they differed)
        names.difference_update(computed)
        rows.update(computed)
        ids.extend(computed)
        sent.extend(computed.values())
    for name in names:
        step = steps.get(name)
        if step is None:
            continue
        row = node_row(step)
        if row != get(name, PENDING_ROW):  # a change of nothing shown sends nothing
            rows[name] = row
            ids.append(name)
            sent.append(row)
    return row_columns(sent, ids) if ids else {}


GRAPH_KEYS = ("id", "k", "p", "d", "m", "i", "mx")  # a graph entry's fields


def row_columns(rows: list[tuple[Any, ...]], ids: list[str] | None = None) -> dict[str, Any]:
    """Node rows (``node_row``) as columns, as ``columns`` makes them of dicts: for each of
    ``ROW_KEYS``, the rows' values (``encode_column``); ``ids`` (when given) the ``id``
    column, a list. Cut by ``zip``, in C."""
    out: dict[str, Any] = {} if ids is None else {"id": ids}
    if not rows:
        return {**out, **{key: [] for key in ROW_KEYS}}
    for key, column in zip(ROW_KEYS, zip(*rows, strict=True), strict=True):
        out[key] = encode_column(column)
    return out


def encode_column(column: Sequence[Any]) -> Any:
    """A column of values as sent, what ``dag.js`` ``column`` reads back: ``{"all": v}`` when
    every entry has ``v``; ``{"all": v, "at": [positions], "v": [values]}`` when all but a
    quarter at most have the last entry's value ``v`` (a map's children, last in a run's
    order, share their kind, parent, attempt, tokens, cost...: the few named steps before
    them are the exceptions); otherwise the list.

    At 20,000 children a snapshot's columns were 1.4 MB of repeated values, each encoded
    again (a repeated int or string costs the encoder as much as a new one). The exceptions
    are found in C (``compress`` over ``map(ne)``). Values of one column are of one type
    (no ``True`` beside a ``1``, which ``==`` mixes)."""
    size = len(column)
    if not size:
        return []
    common = column[-1]
    same = column.count(common)
    if same == size:
        return {"all": common}
    if same * 4 < size * 3:
        return list(column)
    at = list(compress(range(size), map(ne, column, repeat(common))))
    return {"all": common, "at": at, "v": [column[i] for i in at]}


def columns(
    entries: Iterable[dict[str, Any]],
    keys: tuple[str, ...],
    *,
    optional: tuple[str, ...] = (),
    ids: list[str] | None = None,
) -> dict[str, Any]:
    """``entries`` as columns, what ``dag.js`` ``fromColumns`` reads back: for each key, the
    entries' values (``encode_column``: a list, one value for all, or one value for all but
    a few) (a map's children share their kind, parent, deps, model, attempt...).

    Every entry has each of ``keys``; an entry without one of ``optional`` reads as None.
    ``ids``: the ``id`` column, given apart (the entries then have none); ``id`` is always a
    list. At 20,000 nodes the JSON is under half of a dict per entry, encoded in ~70 % of
    the time. Each column is cut out in C (``map`` of an ``itemgetter``), not key by key in
    Python, and without a tuple per entry: 20,000 of them woke the garbage collector.
    """
    rows = entries if isinstance(entries, list) else list(entries)
    out: dict[str, list[Any]] = {} if ids is None else {"id": ids}
    for key in keys:
        out[key] = list(map(itemgetter(key), rows))
    for key in optional:
        out[key] = list(map(dict.get, rows, repeat(key)))
    return encode_columns(out)


def encode_columns(raw: dict[str, list[Any]]) -> dict[str, Any]:
    """Each of ``raw``'s columns as sent (``encode_column``); ``id`` stays a list."""
    return {key: column if key == "id" else encode_column(column) for key, column in raw.items()}


def node_states(run: Run) -> dict[str, dict[str, Any]]:
    """Every step's ``node_state``, in the run's order."""
    return {name: node_state(s) for name, s in run.steps.items()}


def node_rows(
    run: Run, skip: Callable[[StepInfo], bool] | None = None
) -> dict[str, tuple[Any, ...]]:
    """Every step's ``node_row``, in the run's order (but those ``skip`` says have no row
    of their own: a tallied map's children, ``_tally``)."""
    steps = run.steps.items()
    if skip is None:
        return {name: node_row(s) for name, s in steps}
    return {name: node_row(s) for name, s in steps if not skip(s)}


def header(run: Run, *, cancellable: bool, cancelling: bool, source: str) -> dict[str, Any]:
    """Run-level facts; step counts are derived from the nodes in the view."""
    tokens = run.tokens
    return {
        "wf": run.workflow,
        "id": run.id,
        "status": run.status,
        "by": run.taken_over_by,  # ``taken_over``: the lease's holder now, when known
        "notice": run.notice,  # a line about the run's workers (``wf.run(workers=True)``)
        "t0": _ts(run.started_at or run.created_at),
        "t1": _ts(run.finished_at) if run.done else None,
        "now": round(time.time(), 3),
        "cost": _money(run.known_cost),  # with "unpriced": calls missing from it
        "unpriced": run.unpriced_calls,
        "ti": tokens.input_tokens,
        "to": tokens.output_tokens,
        "failed": list(run.failed_steps),
        "cancellable": cancellable and not run.done,
        "cancelling": cancelling or run.cancel_requested,
        "source": source,
        "batches": batches(run),
        **spend(run),
    }


def spend(run: Run) -> dict[str, Any]:
    """The run's budget and the response cache (DESIGN §11), as the header's spend line
    shows them: spent, reserved and the budget, why the run stopped; calls cached, saved."""
    state = spend_state(run)
    cached, saved = cache_savings(run)
    return {
        "spend": None
        if state is None
        else {
            "b": _money(state.budget),
            "s": _money(state.spent),
            "r": _money(state.reserved),
            "why": state.reason,
            **({"bt": _money(state.batched)} if state.batched else {}),
        },
        "cached": cached,
        "saved": _money(saved),
    }


def batches(run: Run) -> list[dict[str, Any]]:
    """The run's provider batches (DESIGN §12), as the header's batch lines show them: the
    step, model, state, requests answered of all, the discount and what was saved."""
    return [
        {
            "k": b.key,
            "step": b.step,
            "m": b.model,
            "st": b.state.value,
            "n": b.request_count,
            "ok": b.succeeded,
            "f": b.failed,
            "c": _money(b.cost),
            "sv": _money(b.saved),
            "d": None if b.discount is None else float(b.discount),
            "rid": b.remote_id,
        }
        for b in run.batches.values()
    ]


def stored_state(run: Run) -> dict[str, Any]:
    """What a snapshot of ``run`` draws, without a widget: graph, every node, header."""
    return {
        "graph": graph(run),
        "nodes": node_states(run),
        "header": header(run, cancellable=False, cancelling=False, source="stored"),
    }


def detail(
    run: Run,
    name: str,
    *,
    calls: list[CallRecord] | None = None,
    context: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the side panel shows for one node: result, error, calls, captured context.

    ``calls`` and ``context``: the step's own calls and log entries when the caller already
    grouped them (the snapshot does, once for all nodes); by default they are looked up.
    """
    step = run.steps.get(name)
    if step is None:
        return {"id": name, "missing": True}
    if calls is None:
        calls = [c for c in run.calls if c.step == name]
    return {
        "id": name,
        "worker": step.worker,
        "ran_on": step.ran_on,
        "error": step.error,
        "result": _result_text(run, step),
        "calls": _calls(calls),
        "context": _context(run.context(name) if context is None else context),
        "attempts": [
            {"n": a.attempt, "s": a.state, "e": _preview(a.error), "d": round(a.duration, 3)}
            for a in step.attempts
        ],
    }


def _preview(error: str | None) -> str | None:
    if error is not None and len(error) > ERROR_PREVIEW:
        return error[: ERROR_PREVIEW - 1] + "…"
    return error


def _result_text(run: Run, step: StepInfo) -> str | None:
    if step.name not in run.results:
        return None
    value = run.results[step.name]
    if type(value) is int:  # a map child's usual result: its JSON is its repr (~1.5 µs less)
        return int.__repr__(value)  # (past the int's digit limit this raises, as json does)
    # indent changes nothing for a scalar, and it forces json's slow pure-Python encoder
    scalar = value is None or isinstance(value, (str, int, float))
    try:
        text = _scalar_json(value) if scalar else _indented_head(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > RESULT_LIMIT:
        return text[:RESULT_LIMIT] + "\n… (cut: the result is longer)"
    return text


def _indented_head(value: Any) -> str:
    """The indented JSON of ``value``, or its first ``RESULT_LIMIT`` characters and more:
    encoded piece by piece, stopping past the limit. A step's list of 20,000 prompts was
    encoded whole (~5 ms, with json's pure-Python encoder, which ``indent`` forces; ~0.1
    ms now) for the panel to show its first 20,000 characters, at every click and in
    every snapshot. A list of plain values (a map's items, its results) is encoded item
    by item by the C encoder, as ``indent`` lays them out (~10 times faster)."""
    if type(value) is list:
        head = _scalars_head(value)
        if head is not None:
            return head
    pieces: list[str] = []
    size = 0
    for piece in _INDENTED.iterencode(value):
        pieces.append(piece)
        size += len(piece)
        if size > RESULT_LIMIT:
            break
    return "".join(pieces)


def _scalars_head(values: list[Any]) -> str | None:
    """``_indented_head`` of a list of str, int, float, bool or None (None: another list)."""
    if not values:
        return "[]"
    pieces = ["["]
    size = 1
    for item in values:
        if item is not None and type(item) not in _SCALARS:
            return None
        text = _scalar_json(item)
        pieces.append(text)
        size += len(text) + 4
        if size > RESULT_LIMIT:
            break
    else:
        return "[\n  " + ",\n  ".join(pieces[1:]) + "\n]"
    return "[\n  " + ",\n  ".join(pieces[1:]) + ","


_SCALARS = frozenset((str, int, float, bool))


def _calls(calls: list[CallRecord]) -> list[dict[str, Any]]:
    return [
        {
            "m": c.model,
            "a": c.attempt,
            "ti": c.usage.input_tokens,
            "to": c.usage.output_tokens,
            "c": _money(c.cost),
            "l": round(c.latency_ms, 1),
            "rp": c.replayed,
            "ch": c.cached,
            "est": c.estimated,
            "na": c.is_unanswered,
        }
        for c in calls[:200]
    ]


def _context(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    budget = CONTEXT_LIMIT
    for entry in entries:
        text = _context_text(entry)
        if budget <= 0:
            out.append({"k": "note", "a": 0, "t": "… more entries omitted"})
            break
        if len(text) > budget:
            text = text[:budget] + "…"
        budget -= len(text)
        out.append({"k": entry.get("kind", "log"), "a": entry.get("attempt", 0), "t": text})
    return out


def _context_text(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    message = str(entry.get("message") or "")
    data = entry.get("data")
    if kind == "request" and isinstance(data, dict):
        messages = data.get("messages") or []
        return "\n\n".join(
            f"[{m.get('role', '?')}] {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in messages
        )
    if kind == "log" and data:
        return f"{message}  {json.dumps(data, ensure_ascii=False, default=str)}"
    return message


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else str(value)


def compact_json(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode``
    without its cost per call: ``encode`` makes json's C encoder anew each time, which for a
    node's detail or a scalar result costs more than encoding it. Made once here, without
    json's check for cycles (values here come from JSON or are built by this package)."""
    make = getattr(json.encoder, "c_make_encoder", None)  # private: the C accelerator
    if make is None:  # no C accelerator (another Python implementation)
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode
    encode = make(None, default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))


# json.dumps(value, indent=..., ensure_ascii=False, default=_plain), made once
_scalar_json = compact_json(_plain)
_INDENTED = json.JSONEncoder(indent=2, ensure_ascii=False, default=_plain)
