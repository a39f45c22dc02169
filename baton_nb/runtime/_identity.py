"""Which run ``wf.run(run_id=...)`` names (DESIGN §4): an existing run of this workflow by
its full id or a unique prefix of at least ``MIN_PREFIX`` characters, or a new id that
shadows no stored run."""

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
