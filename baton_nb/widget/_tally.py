"""A large map's children counted and summed as they change, not drawn one by one.

At 20,000 map children a row per child (computed at its marks, sent, read again for the
saved snapshot) was ~3/4 of the widget's cost, for a view that shows the group's counts
and sums, and lists its first 500 children (docs/performance.md, thirteenth round). A map of
``TALLY_AT`` items or more is *tallied*: its children per state and their sums (tokens,
cost, calls) are kept at each child's mark, where its objects were just written, and sent
as the group's entry of the widget's ``groups``. Its first ``LISTED`` children (the ones its
table and side panel list) and its discarded ones (the failure line names them, with their
errors) keep their own rows; the others are only counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from .._run import StepInfo
from .._states import State
from ._state import PENDING_ROW, cost_text, node_row

__all__ = ["LISTED", "TALLY_AT", "GroupTally", "Tallies"]

TALLY_AT = 2_000  # a map with this many items or more is tallied (1,000-node views: not)
LISTED = 500  # children of a tallied map that keep their rows: its table lists them

# A child's part of its group: (state, input tokens, output tokens, cost or None, calls of
# unknown price, calls, replayed calls, cached calls): what ``node_row`` shows of it that
# the view sums (``dag.js`` ``aggregate``).
Part = tuple[str, int, int, Decimal | None, int, int, int, int]
_NOTHING = (0, 0, None, 0, 0, 0, 0)  # a part's sums when it has spent nothing
_PENDING = str(State.PENDING)
_DISCARDED = State.DISCARDED


def _listed(step: StepInfo) -> bool:
    """A tallied map's child that keeps its row: one of its first ``LISTED`` items."""
    index = step.item_index
    return index is not None and index < LISTED


def part(step: StepInfo) -> Part:
    """``step``'s part of its group's tally (its fields as ``node_row`` reads them)."""
    calls, cost, usage = step.calls, step.cost, step.usage
    return (
        str(step.state),
        usage.input_tokens,
        usage.output_tokens,
        cost if calls or cost else None,
        step.unpriced_calls,
        calls,
        step.replayed_calls,
        step.cached_calls,
    )


class GroupTally:
    """One tallied map: its children per state and their sums, kept by ``mark``."""

    __slots__ = ("cost", "costed", "counts", "name", "parts", "sums")

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: dict[str, Part] = {}  # each child marked, its part as last counted
        self.counts: dict[str, int] = {}  # the children marked, per state
        self.sums = [0, 0, 0, 0, 0, 0]  # tokens in, out, unpriced, calls, replayed, cached
        self.cost = Decimal(0)
        self.costed = 0  # children with a cost (none: the group's cost is None, not 0)

    def mark(self, step: StepInfo) -> bool:
        """Count ``step`` (one of the children) as it is now; True when its part moved."""
        new = part(step)
        name = step.name
        old = self.parts.get(name)
        if old == new:
            return False
        self.parts[name] = new
        counts = self.counts
        if old is not None:
            counts[old[0]] -= 1
            if old[1:] != _NOTHING:
                self._add(old, -1)
        counts[new[0]] = counts.get(new[0], 0) + 1
        if new[1:] != _NOTHING:
            self._add(new, 1)
        return True

    def _add(self, counted: Part, sign: int) -> None:
        sums = self.sums
        _, ti, to, cost, unpriced, calls, replayed, cached = counted
        sums[0] += sign * ti
        sums[1] += sign * to
        sums[2] += sign * unpriced
        sums[3] += sign * calls
        sums[4] += sign * replayed
        sums[5] += sign * cached
        if cost is not None:
            self.cost = self.cost + cost if sign > 0 else self.cost - cost
            self.costed += sign

    def as_json(self, stored: int) -> dict[str, Any]:
        """What the view reads (``dag.js`` ``aggregate``): ``k`` children stored, ``l`` the
        items listed (the children of an index below it: their rows are sent), ``s`` per
        state (the stored children never marked are pending), the sums (``ti``, ``to``,
        ``u``, ``n``, ``rp``, ``ch``) and ``c`` the cost (None when no child has one)."""
        counts = {state: n for state, n in self.counts.items() if n}
        unmarked = stored - len(self.parts)
        if unmarked > 0:
            counts[_PENDING] = counts.get(_PENDING, 0) + unmarked
        ti, to, unpriced, calls, replayed, cached = self.sums
        return {
            "k": stored,
            "l": LISTED,
            "s": counts,
            "ti": ti,
            "to": to,
            "u": unpriced,
            "n": calls,
            "rp": replayed,
            "ch": cached,
            "c": cost_text(self.cost) if self.costed else None,
        }


class Tallies:
    """The tallied maps of one widget's run: which they are, their tallies, which moved.

    A map is looked at once, at its first child's mark (or when children are added): it is
    tallied when it has ``TALLY_AT`` items or more (its children so far counted then), else
    noted as small (looked at again when children are added: its item count may be known
    only then)."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupTally] = {}
        self.small: set[str] = set()  # maps looked at, not tallied
        self.moved: set[str] = set()  # groups whose tally moved since the last ``take``
        self._steps: Mapping[str, StepInfo] = {}

    def bind(self, steps: Mapping[str, StepInfo]) -> None:
        """Follow the run whose steps are ``steps`` (its large maps tallied now)."""
        self._steps = steps
        self.groups.clear()
        self.small.clear()
        self.grow(steps.values())

    def note(self, step: StepInfo) -> bool:
        """``step`` changed: counted when its map is tallied. True when that is all the view
        gets of it (no row of its own: neither listed nor discarded)."""
        parent = step.parent
        tally = self.groups.get(parent)  # type: ignore[arg-type]  # (None: not a child)
        if tally is None:
            if parent is None or parent in self.small:
                return False
            tally = self._tally(parent)
            if tally is None:
                return False
        if tally.mark(step):
            self.moved.add(tally.name)
        return not _listed(step) and step.state is not _DISCARDED

    def skip(self, step: StepInfo) -> bool:
        """``step`` gets no row of its own (a tallied map's child neither listed nor
        discarded): the view has its map's tally instead."""
        return step.parent in self.groups and not _listed(step) and step.state is not _DISCARDED

    def _tally(self, name: str) -> GroupTally | None:
        """Map ``name``'s new tally, its children so far counted, when it is a large one;
        None (noted small) when it is not."""
        steps = self._steps
        group = steps.get(name)
        if group is None:
            return None
        if len(group.children) + group.unstored < TALLY_AT:
            self.small.add(name)
            return None
        tally = self.groups[name] = GroupTally(name)
        for child in map(steps.get, group.children):
            if child is not None and (child.state != _PENDING or child.calls):
                tally.mark(child)
        self.moved.add(name)
        return tally

    def grow(self, added: Iterable[StepInfo]) -> None:
        """Steps were added to the run (a map's children, a chunk at a time): a map that
        reaches ``TALLY_AT`` items is tallied from now on; the added children of a tallied
        one that already moved are counted (a settled map's later chunks are added
        cancelled, with no mark)."""
        parents: dict[str, list[StepInfo]] = {}
        for step in added:
            if step.parent is not None:
                parents.setdefault(step.parent, []).append(step)
        for name, children in parents.items():
            tally = self.groups.get(name)
            if tally is None:
                self.small.discard(name)  # looked at again: its item count may be known now
                self._tally(name)
                continue
            for child in children:
                if child.state != _PENDING or child.calls:
                    tally.mark(child)
            self.moved.add(name)  # its count of children stored moved

    def skipper(self) -> Callable[[StepInfo], bool] | None:
        """``skip``, or None when no map is tallied (every step has its row)."""
        return self.skip if self.groups else None

    def rows_kept(self, rows: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        """``rows`` but those of the steps with no row of their own (``skip``)."""
        steps, skip = self._steps, self.skip
        return {name: row for name, row in rows.items() if not skip(steps[name])}

    def rows_as_viewed(
        self, rows: dict[str, tuple[Any, ...]], ids: list[str]
    ) -> dict[str, tuple[Any, ...]]:
        """Each of ``ids``' row as last sent (``PENDING_ROW`` if never), but a step with no
        row of its own (the view has its group's tally): its row as it is now."""
        steps, skip = self._steps, self.skip
        return {
            name: node_row(steps[name])
            if name in steps and skip(steps[name])
            else rows.get(name, PENDING_ROW)
            for name in ids
        }

    def settle(self) -> None:
        """The run's end: every child counted once more but those counted completed (a
        completed step is final within an execution; what it still gets is marked), as
        ``_state.moved`` checks the rows."""
        completed, steps = str(State.COMPLETED), self._steps
        for name, tally in self.groups.items():
            group = steps.get(name)
            if group is None:
                continue
            parts = tally.parts
            for child in group.children:
                counted = parts.get(child)
                if counted is not None and counted[0] == completed:
                    continue
                step = steps.get(child)
                if step is None or (counted is None and step.state == _PENDING):
                    continue  # never marked and pending: counted pending as it is
                if tally.mark(step):
                    self.moved.add(name)

    def take(self) -> dict[str, Any] | None:
        """Every tally as the view reads it, when one moved since the last ``take`` (None
        otherwise)."""
        if not self.moved:
            return None
        self.moved.clear()
        return self.as_json()

    def as_json(self) -> dict[str, Any]:
        """Every tally (``GroupTally.as_json``) by its group's name."""
        steps = self._steps
        return {
            name: tally.as_json(len(steps[name].children)) for name, tally in self.groups.items()
        }
