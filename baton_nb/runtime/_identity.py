"""Which run ``wf.run(run_id=...)`` names (DESIGN §4): an existing run of this workflow by
its full id or a unique prefix of at least ``MIN_PREFIX`` characters, or a new id that
shadows no stored run and is not a stored run's id mistyped (a new run would pay again)."""

from __future__ import annotations

import itertools

from .._errors import ConfigurationError
from ..store import ReadStore, RunRow

__all__ = ["MIN_PREFIX", "resolve_run"]

MIN_PREFIX = 6
_SHOWN = 5


async def resolve_run(store: ReadStore, workflow: str, run_id: str) -> RunRow | None:
    """The stored run ``run_id`` names (to resume), or None when it names none (a new run
    gets that id). Raises ``ConfigurationError`` for an ambiguous prefix, a run of another
    workflow, or an id that would shadow a stored run."""
    found = await store.run_ids_starting_with(run_id, limit=_SHOWN + 1)
    if not found:
        typo = await _spaced(store, workflow, run_id) or await _near_miss(store, workflow, run_id)
        if typo is not None:
            near = "is a character or two away from it (changed, left out or added)"
            if run_id.strip() == typo:
                near = "is that id without the whitespace around it (a copy-paste's)"
            elif run_id.strip() != run_id:
                near += ", the whitespace around it (a copy-paste's) left out"
            raise ConfigurationError(
                f"run_id {run_id!r} names no stored run, but run {typo} of workflow "
                f"{workflow!r} {near}: a typo would start a new run and pay for its calls "
                f"again. To resume it: run_id={typo!r}; for a new run, call wf.run() without "
                "run_id (or choose an id of your own, such as 'nightly-2026-12-07')"
            )
        return None
    if found[0] == run_id:
        row = await store.get_run(run_id)
        assert row is not None
        return _of_this_workflow(row, workflow, run_id)
    if len(run_id) < MIN_PREFIX:
        raise ConfigurationError(
            f"run_id {run_id!r} names no run, and as a prefix it is too short (at least "
            f"{MIN_PREFIX} characters) to pick one of {_listing(found)}: give the full id to "
            "resume one of them, or another id (or none) for a new run"
        )
    if len(found) > 1:
        rows = [r for r in [await store.get_run(i) for i in found[:_SHOWN]] if r is not None]
        shown = "; ".join(_describe(r) for r in rows)
        more = ", …" if len(found) > _SHOWN else ""
        raise ConfigurationError(
            f"run_id {run_id!r} is ambiguous: it begins {len(found)}{'+' if more else ''} run "
            f"ids ({shown}{more}); give more of the id (the full id is in the widget, "
            "`baton-nb runs` or bn.runs())"
        )
    row = await store.get_run(found[0])
    assert row is not None
    return _of_this_workflow(row, workflow, run_id)


_HEX = frozenset("0123456789abcdef")
_SEPARATORS = frozenset("-_.: ")  # in ids users name (``nightly-2`` ...), never in made ones
_NEAR_RUNS = 1_000  # the newest runs of the workflow compared
_MADE_LENGTH = 32  # the ids baton_nb makes: uuid4().hex


async def _near_miss(store: ReadStore, workflow: str, run_id: str) -> str | None:
    """A stored run of ``workflow`` with an id baton_nb made (``uuid4().hex``) that
    ``run_id`` (whitespace around it left out: a copy-paste's) misses by one edit (two for
    16+ characters): a character changed (to any character: ``z`` for ``4``, ``-`` for
    ``0``, a capital), left out or added, in the full id or in a prefix of it. A mistyped
    id to resume. Ids users choose for their runs are never compared with the one given:
    ``nightly-2026-12-08`` is no typo of ``...-12-07``; nor are names built on a made id
    (``_built_on``: ``f"{r.id}b"``, ``f"{r.id[:16]}-b"``).

    Without a query for an id that cannot be such a typo: shorter than a prefix
    (``MIN_PREFIX``), longer than a made id and the edits allowed, or with more characters
    that are not hex (a separator is one) than the edits allowed. Else only the ids of
    the newest runs are read."""
    typed = run_id.strip().lower()
    allowed = 1 if len(typed) < 16 else 2
    if not MIN_PREFIX <= len(typed) <= _MADE_LENGTH + 2:
        return None
    if sum(c not in _HEX for c in typed) > allowed:
        return None
    pieces = _pieces(typed, allowed + 1)
    for made in await store.recent_run_ids(workflow, _NEAR_RUNS):
        if len(made) != _MADE_LENGTH or not set(made) <= _HEX:
            continue  # an id chosen by a user ("20261205"): the next one is no typo of it
        if not any(piece in made for piece in pieces):
            continue  # no piece of it unchanged: more edits than allowed (``_pieces``)
        if _edits_to_prefix(typed, made, allowed) <= allowed:
            return None if _built_on(typed, made) else made
    return None


async def _spaced(store: ReadStore, workflow: str, run_id: str) -> str | None:
    """The run of ``workflow`` whose id (any id, a user's own too) ``run_id`` is with
    whitespace around it (a copy-paste's), or None."""
    stripped = run_id.strip()
    if stripped == run_id or not stripped:
        return None
    row = await store.get_run(stripped)
    return stripped if row is not None and row.workflow == workflow else None


def _built_on(typed: str, made: str) -> bool:
    """``typed`` is a name of the user's built on the made id ``made``, not a typo of it:
    ``made`` and more after it (``f"{r.id}b"``, ``f"{r.id}-2"``), or a prefix of it (at
    least ``MIN_PREFIX`` characters), a separator and more (``f"{r.id[:16]}-b"``), unless
    what follows the separator goes on with ``made`` (``-`` typed for a character, or
    added: a typo), at least two characters of it or up to a full id's length."""
    if len(typed) > len(made) and typed.startswith(made):
        return True
    at = next((i for i, c in enumerate(typed) if c in _SEPARATORS), -1)
    if at < MIN_PREFIX or at == len(typed) - 1 or typed[:at] != made[:at]:
        return False
    rest = typed[at + 1 :]
    goes_on = made[at + 1 :].startswith(rest) or made[at:].startswith(rest)
    return not (goes_on and (len(rest) >= 2 or len(typed) >= _MADE_LENGTH))


def _pieces(typed: str, count: int) -> tuple[str, ...]:
    """``typed`` cut into ``count`` pieces (one more than the edits allowed): each edit
    touches one piece at most, so an id within the edits of (a prefix of) ``made`` has a
    piece found unchanged in it. A substring test per piece (C speed) sets aside nearly
    every other id before the edit table (Python) is built: ~20 ms less at 1,000 ids."""
    size = len(typed) // count
    cuts = [i * size for i in range(count)] + [len(typed)]
    return tuple(typed[a:b] for a, b in itertools.pairwise(cuts))


def _edits_to_prefix(typed: str, made: str, allowed: int) -> int:
    """The fewest edits (a character changed, left out or added) that turn ``typed`` into
    a prefix of ``made`` (the whole of it included); ``allowed + 1`` for more than
    ``allowed``. Levenshtein's table, only its band of ``allowed`` around the diagonal
    (no cell outside it can be ``allowed`` or less), given up at the first row over."""
    over = allowed + 1
    width = len(made)
    row = [j if j <= allowed else over for j in range(width + 1)]  # typed[:0] vs made[:j]
    for i, char in enumerate(typed, 1):
        below = [i if i <= allowed else over] + [over] * width
        for j in range(max(1, i - allowed), min(width, i + allowed) + 1):
            changed = row[j - 1] + (made[j - 1] != char)
            below[j] = min(changed, row[j] + 1, below[j - 1] + 1, over)
        if min(below) > allowed:
            return over
        row = below
    return min(row[max(0, len(typed) - allowed) :], default=over)


def _of_this_workflow(row: RunRow, workflow: str, typed: str) -> RunRow:
    if row.workflow != workflow:
        raise ConfigurationError(
            f"run_id {typed!r}: run {row.id} belongs to workflow {row.workflow!r}, not "
            f"{workflow!r}; resume it with that workflow, or choose another id (or none) "
            "for a new run of this one"
        )
    return row


def _describe(row: RunRow) -> str:
    return f"{row.id} ({row.workflow!r}, {row.status}, created {row.created_at:%Y-%m-%d %H:%M})"


def _listing(ids: list[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (", …" if len(ids) > _SHOWN else "")
