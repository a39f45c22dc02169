"""A large map's children counted and summed at each redraw, not drawn one by one.

At 20,000 map children a row per child (computed at its marks, sent, read again for the
saved snapshot) was ~3/4 of the widget's cost, for a view that shows the group's counts
and sums, and lists its first 500 children (docs/performance.md, thirteenth round). A map of
``TALLY_AT`` items or more is *tallied*: its first ``LISTED`` children (the ones its table
and side panel list) and its discarded ones (the failure line names them, with their
errors) keep their own rows; the others are only counted. Those are *quiet*: the run
does not tell the widget their marks (``Run.follow``'s ``quiet``: three a child, ~60,000
at 20,000 children, were half the widget's cost even when each only stored a byte). At
each redraw the tally reads every child's state again, in C, into a byte per item (its
state's code; ``bytearray.count`` per state), adds the spend (tokens, cost, calls) of the
children that ended since to the map's sums (a child's calls come before its end), and
gives the children discarded since their rows (no longer quiet). While a tallied map has
children that did not end, each redraw asks for the next (nothing else would: its
children are quiet). At the run's end every child is counted again, spend included, as
it is. The tally goes out as the group's entry of the widget's ``groups``.

Threads: a run of another thread writes its children's states while the widget redraws
on its own; a state read is whole (at worst a state a redraw behind: the next one, or the
run's end, reads it again), and a child's spend is written before the state that ends it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Iterable, Mapping
from decimal import Decimal
from itertools import compress, islice
from operator import attrgetter
from typing import Any

from .._money import fmt_money, sum_money
from .._run import Run, StepInfo
from .._states import TERMINAL_STATES, State
from ._state import PENDING_ROW, node_row

__all__ = ["LISTED", "TALLY_AT", "GroupTally", "Tallies"]

TALLY_AT = 2_000  # a map with this many items or more is tallied (1,000-node views: not)
LISTED = 500  # children of a tallied map that keep their rows: its table lists them

# A child's state as a byte: pending is 0 (an item's place before its child is marked), the
# states that end a child from ``_ENDED`` on.
_ENDING = tuple(s for s in State if s in TERMINAL_STATES)
_GOING = tuple(s for s in State if s not in TERMINAL_STATES and s is not State.PENDING)
_STATES = tuple(map(str, (State.PENDING, *_GOING, *_ENDING)))
_CODE: dict[str, int] = {state: code for code, state in enumerate(_STATES)}  # (State keys too)
_ENDED = len(_STATES) - len(_ENDING)
_PENDING = _STATES[0]
_DISCARDED = State.DISCARDED
_DISCARDED_CODE = _CODE[_DISCARDED]
_ENDED_BITS = bytes(int(code >= _ENDED) for code in range(256))  # a code: 1 if it ends
_DISCARDED_BITS = bytes(int(code == _DISCARDED_CODE) for code in range(256))


def _bits(flags: bytes | bytearray) -> int:
    """Bytes of 0 and 1 as one integer: ANDed and negated in C, a whole map at once."""
    return int.from_bytes(flags, "big")


def _ones(bits: int, size: int) -> list[int]:
    """The places of ``bits``' ones (``_bits`` of ``size`` bytes), found in C."""
    places: list[int] = []
    if bits:
        flags, at = bits.to_bytes(size, "big"), 0
        while (at := flags.find(1, at)) >= 0:
            places.append(at)
            at += 1
    return places


_UNSTORED = StepInfo(name="", job_id=0)  # an item whose child is not stored yet: pending
_STATE, _INDEX, _USAGE = (attrgetter(a) for a in ("state", "item_index", "usage"))
_SPENT = tuple(attrgetter(a) for a in ("unpriced_calls", "calls", "replayed_calls", "cached_calls"))
_TOKENS = (attrgetter("input_tokens"), attrgetter("output_tokens"))


def _touched(step: StepInfo) -> bool:
    """``step`` is not pending (an untouched child counts as pending as it is)."""
    return step.state != _PENDING


def _spend(children: list[StepInfo]) -> tuple[list[int], Decimal, int]:
    """The sums of ``children``'s spend, read in C (``GroupTally.add``'s, all at once):
    tokens in, out, unpriced calls, calls, replayed, cached; their cost, and how many
    have one."""
    usages = list(map(_USAGE, children))
    sums = [sum(map(get, usages)) for get in _TOKENS]
    sums += [sum(map(get, children)) for get in _SPENT]
    spent = [child.cost for child in children if child.calls or child.cost]
    return sums, sum_money(spent), len(spent)


class GroupTally:
    """One tallied map: its children (``place``), their states and the spend of those
    ended (``count``)."""

    __slots__ = ("codes", "cost", "costed", "kids", "name", "others", "summed", "sums")

    def __init__(self, name: str, items: int) -> None:
        self.name = name
        self.codes = bytearray(items)  # each item's child's state (``_CODE``), as last read
        self.summed = bytearray(items)  # 1: that child's spend is in the sums
        self.kids = [_UNSTORED] * items  # each item's child (``_UNSTORED``: none stored yet)
        self.others: dict[str, int] = {}  # children with no item index (a watched run's)
        self.sums = [0, 0, 0, 0, 0, 0]  # tokens in, out; unpriced calls, calls, replayed, cached
        self.cost = Decimal(0)
        self.costed = 0  # children with a cost (none: the map's cost is None, not 0)

    def mark(self, step: StepInfo) -> None:
        """``step`` (one of the children) changed: one with an item index is placed (read
        at each ``count``: its state and its spend, once it ended, are taken there); one
        with none (a watched run's child seen first in an event) keeps its state's code
        in ``others`` (its spend counted at the run's end)."""
        if step.item_index is None:
            self.others[step.name] = _CODE[step.state]
        else:
            self.place(step)

    def place(self, step: StepInfo) -> None:
        """``step`` (a child with an item index) is stored: read at each ``count``."""
        index = step.item_index
        if index is not None:
            if index >= len(self.kids):
                self._fit(index)
            self.kids[index] = step

    def _fit(self, index: int) -> None:
        """Room for item ``index`` (an item count read before the map grew)."""
        size = index + 1
        self.codes.extend(bytes(max(0, size - len(self.codes))))
        self.summed.extend(bytes(max(0, size - len(self.summed))))
        self.kids.extend([_UNSTORED] * (size - len(self.kids)))

    def count(self) -> tuple[list[StepInfo], bool]:
        """A redraw: every child's state read again (in C, a byte each), the spend of the
        children that ended since added to the sums (found in C: those ended and not
        summed; a Python step per child only for them); a child that ended and runs
        again (a resume's reset) is taken out of them, the sums made anew from the others
        (in C, rare). Returns the children discarded since the last count (they get rows:
        a child reset by a resume and discarded again included), and whether some child
        has not ended."""
        kids, before = self.kids, self.codes
        self.codes = codes = bytearray(map(_CODE.__getitem__, map(_STATE, kids)))
        size = len(codes)
        before = before[:size].ljust(size, b"\0")  # (a child placed since: pending before)
        summed = self.summed
        if len(summed) < size:  # (kids, codes and summed grow together: ``_fit``)
            summed.extend(bytes(size - len(summed)))
        ended_flags = codes.translate(_ENDED_BITS)
        ended, was_summed = _bits(ended_flags), _bits(summed[:size])
        reopened = _bits(before.translate(_ENDED_BITS)) & ~ended & was_summed
        if reopened:  # ended, summed, now running again (a resume's reset): sums made anew
            was_summed &= ~reopened
            summed[:size] = was_summed.to_bytes(size, "big")
            self.sums, self.cost, self.costed = _spend(list(compress(kids, summed[:size])))
        for at in _ones(ended & ~was_summed, size):
            summed[at] = 1
            self.add(kids[at])
        now = _bits(codes.translate(_DISCARDED_BITS))
        newly = now & ~_bits(before.translate(_DISCARDED_BITS)) if now else 0
        return [kids[at] for at in _ones(newly, size)], ended_flags.count(1) < size

    def begin(self, step: StepInfo) -> None:
        """``step`` (a child) as the map is found large (before the tally is seen by any
        redraw): marked, and what it spent so far in the sums already (a charge of an
        attempt with no answer kept by a pending child that a resume reset; what it spends
        from here on shows at the run's end)."""
        self.mark(step)
        index = step.item_index
        spent = step.calls or step.cost
        if spent and index is not None and index < len(self.summed) and not self.summed[index]:
            self.summed[index] = 1
            self.add(step)

    def add(self, step: StepInfo) -> None:
        """``step``'s spend, into the sums (as ``node_row`` shows it, ``dag.js`` sums it)."""
        calls, cost, usage, sums = step.calls, step.cost, step.usage, self.sums
        sums[0] += usage.input_tokens
        sums[1] += usage.output_tokens
        sums[2] += step.unpriced_calls
        sums[3] += calls
        sums[4] += step.replayed_calls
        sums[5] += step.cached_calls
        if calls or cost:
            self.cost += cost
            self.costed += 1

    def recount(self, children: list[StepInfo]) -> None:
        """Every child counted again as it is, spend included, whether it ended or not (the
        run's end): read in C."""
        # Made apart, then set (a redraw's ``as_json`` may read them meanwhile: whole)
        indexes = list(map(_INDEX, children))
        size = max(len(self.codes), 1 + max((i for i in indexes if i is not None), default=-1))
        codes, summed, others = bytearray(size), bytearray(size), {}
        kids = self.kids + [_UNSTORED] * (size - len(self.kids))
        states = list(map(_CODE.__getitem__, map(_STATE, children)))
        for child, index, code in zip(children, indexes, states, strict=True):
            if index is None:
                if code:
                    others[child.name] = code
            else:
                codes[index] = code
                summed[index] = 1  # (its spend is in the sums below: not added again)
                kids[index] = child
        self.kids, self.codes, self.summed, self.others = kids, codes, summed, others
        self.sums, self.cost, self.costed = _spend(children)

    def as_json(self, stored: int) -> dict[str, Any]:
        """What the view reads (``dag.js`` ``tallied``): ``k`` children stored, ``l`` the
        items listed (the children of an index below it: their rows are sent), ``s`` per
        state (pending: the stored children in no other state), the spend of the children
        that ended (all of them at the run's end: ``ti``, ``to``, ``u``, ``n``, ``rp``,
        ``ch``) and ``c`` their cost (None when none has one)."""
        counts: dict[str, int] = {}
        codes = self.codes
        for code in range(1, len(_STATES)):
            if found := codes.count(code):
                counts[_STATES[code]] = found
        for code in self.others.values():
            if code:
                counts[_STATES[code]] = counts.get(_STATES[code], 0) + 1
        pending = stored - sum(counts.values())
        if pending > 0:
            counts[_PENDING] = pending
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
            # (not ``_state``'s cost-text cache: a running sum is a new amount at each send)
            "c": fmt_money(self.cost) if self.costed else None,
        }


class Tallies:
    """The tallied maps of one widget's run: which they are, their tallies, whether one moved.

    A map is looked at once, at its first child's mark (or when children are added): it is
    tallied when it has ``TALLY_AT`` items or more (its children so far counted then), else
    noted as small (looked at again when children are added: its item count may be known
    only then)."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupTally] = {}
        self.small: set[str] = set()  # maps looked at, not tallied
        # A tallied map's child marked since the last ``redraw`` (one not quiet: no item
        # index; its first mark asks for a redraw). Set only by a mark that asks (``poke``),
        # reset by ``redraw`` before it counts: a reset one is set again with a new ask;
        # never left set with no redraw coming.
        self.moved = False
        # The children the run does not tell the widget of (``Run.follow``'s ``quiet``):
        # the tallied maps' children with no row of their own, read at each redraw
        self.quiet: set[str] = set()
        self.busy = False  # at the last redraw, a tallied map had a child not ended
        self._unpruned: list[str] = []  # maps tallied since the last ``prune``
        self._steps: Mapping[str, StepInfo] = {}
        # A tally made once, from either thread; grown and counted by one at a time
        self._lock = threading.RLock()

    def bind(self, run: Run) -> None:
        """Follow ``run`` (its large maps tallied now; none counted as moved: the caller
        sends them whole, ``as_json``)."""
        self._steps = run.steps
        self.groups.clear()
        self.small.clear()
        self.quiet.clear()
        self.grow(list(run.steps.values()))
        self.moved = False
        self._unpruned.clear()  # (the caller computes its rows with ``skip``)
        self._count(set())  # (a discarded child has its row already: not quiet)

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
        if step.item_index is None:
            tally.mark(step)  # (one with an index is placed by ``grow`` or ``_tally``)
        return self.skip(step)

    def only(self, step: StepInfo | None, sent: Container[str]) -> bool:
        """A step of the run changed (``step``; None: no step of that name): True when the
        view gets nothing of it but its map's tally (``note``), and it had no row ``sent``
        before (a discarded child reset keeps its row current). The caller then sets
        ``moved`` (asking for a redraw if it was not set)."""
        return (
            step is not None
            and step.parent is not None
            and self.note(step)
            and (step.name not in sent)
        )

    def skip(self, step: StepInfo) -> bool:
        """``step`` gets no row of its own (a tallied map's child neither listed nor
        discarded): the view has its map's tally instead."""
        if step.parent not in self.groups:
            return False
        index = step.item_index
        return (index is None or index >= LISTED) and step.state != _DISCARDED

    def skipper(self) -> Callable[[StepInfo], bool] | None:
        """``skip``, or None when no map is tallied (every step has its row)."""
        return self.skip if self.groups else None

    def _tally(self, name: str) -> GroupTally | None:
        """Map ``name``'s tally, made (its children so far counted) when it is a large one;
        None (noted small) when it is not."""
        with self._lock:
            tally = self.groups.get(name)
            if tally is not None:
                return tally
            steps = self._steps
            group = steps.get(name)
            if group is None:
                return None
            if len(group.children) + group.unstored < TALLY_AT:
                self.small.add(name)
                return None
            tally = GroupTally(name, len(group.children) + group.unstored)
            for child in map(steps.get, group.children):
                if child is not None:
                    self._take(tally, child)
                    tally.begin(child)
            self.groups[name] = tally
            self._unpruned.append(name)
            return tally

    def grow(self, added: Iterable[StepInfo]) -> None:
        """Steps were added to the run (a map's children, a chunk at a time): a map that
        reaches ``TALLY_AT`` items is tallied from now on; the added children of a tallied
        one are placed (read at each count: a settled map's later chunks are added
        cancelled, with no mark) and made quiet."""
        parents: dict[str, list[StepInfo]] = {}
        for step in added:
            if step.parent is not None:
                parents.setdefault(step.parent, []).append(step)
        with self._lock:  # (not while ``settle`` counts on the run's thread)
            self._grow(parents)

    def _grow(self, parents: dict[str, list[StepInfo]]) -> None:
        for name, children in parents.items():
            tally = self.groups.get(name)
            if tally is None:
                self.small.discard(name)  # looked at again: its item count may be known now
                tally = self._tally(name)
                if tally is None:
                    continue
                # (made from the map's children list, which a child joins just after the
                # run's steps: one added in between is taken here; taking twice is harmless)
            for child in children:
                self._take(tally, child)
                if child.item_index is None and _touched(child):
                    tally.mark(child)

    def _take(self, tally: GroupTally, child: StepInfo) -> None:
        """``child`` of ``tally``'s map is stored: read at each redraw, and quiet if it gets
        no row of its own (``skip``)."""
        tally.place(child)
        index = child.item_index  # (none: a watched run's child seen first in an event)
        if index is not None and index >= LISTED and child.state != _DISCARDED:
            self.quiet.add(child.name)

    def redraw(
        self,
        known: int,
        rows: dict[str, tuple[Any, ...]],
        final: dict[str, tuple[Any, ...]],
        dirty: set[str],
    ) -> dict[str, Any] | None:
        """The widget redraws, its graph having ``known`` steps: the steps added since
        looked at (``grow``), the rows of maps tallied since dropped (``prune``), every
        tally counted (``GroupTally.count``; its children discarded since added to
        ``dirty``: their rows) and returned as the view reads it (``as_json``). ``busy``
        tells whether a tallied map has children that did not end."""
        self.moved = False  # first: what is marked from here on asks for the next redraw
        steps = self._steps
        if len(steps) > known:
            self.grow(list(islice(steps.values(), known, None)))  # (copied in C, at once)
        self.prune(rows, final, dirty)
        self._count(dirty)
        # Every tally, at every redraw (reading 20,000 children's states costs ~1 ms; one
        # unchanged is not sent again: the trait is equal)
        return self.as_json() if self.groups else None

    def _count(self, dirty: set[str]) -> None:
        """Every tally counted (``GroupTally.count``), its children discarded since added
        to ``dirty`` (their rows, from now on: the failure line names them; no longer
        quiet); ``busy`` set."""
        busy = False
        with self._lock:  # (not while ``settle`` counts them again on the run's thread)
            for tally in list(self.groups.values()):
                discarded, going = tally.count()
                busy = busy or going
                for child in discarded:
                    self.quiet.discard(child.name)
                    dirty.add(child.name)
        self.busy = busy

    def prune(
        self,
        rows: dict[str, tuple[Any, ...]],
        final: dict[str, tuple[Any, ...]],
        dirty: set[str],
    ) -> None:
        """Take the children with no row of their own of the maps tallied since the last
        call out of the widget's ``rows`` (as sent), ``final`` (computed at their marks) and
        ``dirty``: those were kept before their map was known as a large one, and would
        stay stale (its view reads the tally)."""
        with self._lock:
            fresh, self._unpruned = self._unpruned, []
        steps, skip = self._steps, self.skip
        for name in fresh:
            for child in steps[name].children:
                step = steps.get(child)
                if step is not None and skip(step):
                    rows.pop(child, None)
                    final.pop(child, None)
                    dirty.discard(child)

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
        """The run's end: every child of a tallied map counted again as it is, spend
        included (a redraw read a state a moment old; a child that did not end, or spent
        after it ended, or has no item index). Not while a redraw counts (``redraw``)."""
        steps = self._steps
        with self._lock:
            for name, tally in list(self.groups.items()):
                kids = [c for c in map(steps.get, steps[name].children) if c is not None]
                tally.recount(kids)

    def as_json(self) -> dict[str, Any]:
        """Every tally (``GroupTally.as_json``) by its group's name (not while the run's
        end counts them again: ``settle``)."""
        steps = self._steps
        with self._lock:
            return {
                name: tally.as_json(len(steps[name].children))
                for name, tally in list(self.groups.items())
            }
