"""Which run ``wf.run(run_id=...)`` names (DESIGN §4): an existing run of this workflow by
its full id or a unique prefix of at least ``MIN_PREFIX`` characters, or a new id that
shadows no stored run and is not a stored run's id mistyped (a new run would pay again)."""

from __future__ import annotations

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
        typo = await _near_miss(store, workflow, run_id)
        if typo is not None:
            raise ConfigurationError(
                f"run_id {run_id!r} names no stored run, but run {typo} of workflow "
                f"{workflow!r} differs from it by a character or two: a typo would start a "
                f"new run and pay for its calls again. To resume it: run_id={typo!r}; for a "
                "new run, call wf.run() without run_id (or choose an id of your own)"
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
_NEAR_RUNS = 1_000  # the newest runs of the workflow compared
_MADE_LENGTH = 32  # the ids baton_nb makes: uuid4().hex


async def _near_miss(store: ReadStore, workflow: str, run_id: str) -> str | None:
    """A stored run of ``workflow`` with an id baton_nb made (``uuid4().hex``) whose
    prefix of ``run_id``'s length differs from it in one place (two for 16+ characters):
    a mistyped id to resume. Ids users choose for their runs are never compared."""
    if not MIN_PREFIX <= len(run_id) <= _MADE_LENGTH or not set(run_id) <= _HEX:
        return None
    allowed = 1 if len(run_id) < 16 else 2
    for row in await store.list_runs(workflow=workflow, limit=_NEAR_RUNS):
        if len(row.id) != _MADE_LENGTH or not set(row.id) <= _HEX:
            continue  # an id chosen by a user ("20261205"): the next one is no typo of it
        if _apart(row.id[: len(run_id)], run_id) <= allowed:
            return row.id
    return None


def _apart(one: str, other: str) -> int:
    return sum(a != b for a, b in zip(one, other, strict=True))


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
