"""The scheduler alone: no database, no event loop, no clock but a fake one.

A small simulated driver (``Sim``) plays the in-process driver's part: it starts what the
scheduler admits, finishes running attempts in an order it picks, delays commits, wakes
retries; property tests (hypothesis) run it over random DAGs and outcomes and check the
rules of DESIGN §3-§4 after every move.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton_nb._graph import GraphSpec, StepSpec
from baton_nb._states import TERMINAL_STATES, NodeKind, RunStatus, State
from baton_nb.runtime._decisions import (
    Completed,
    DepCallback,
    Discarded,
    Failed,
    Outcome,
    RetryAfter,
    Settled,
    Snoozed,
)
from baton_nb.runtime._groups import MapPlan, plan_map
from baton_nb.runtime._node import Node, build_nodes, new_child_rows, new_node_row
from baton_nb.runtime._scheduler import Scheduler
from baton_nb.store import NodeRow

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
P, E, S, R = State.PENDING, State.EXECUTING, State.SNOOZED, State.RETRYABLE
C, D, X = State.COMPLETED, State.DISCARDED, State.CANCELLED


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def _noop(ctx: Any) -> None:
    return None


def spec(name: str, deps: Sequence[str] = (), **options: Any) -> StepSpec:
    options.setdefault("backoff", lambda attempt: 0.5)
    return StepSpec(name=name, fn=_noop, deps=tuple(deps), **options)


def make_nodes(specs: Sequence[StepSpec], limits: dict[str, int] | None = None) -> dict[str, Node]:
    """Nodes as a new run has them (rows with ids, linked)."""
    graph = GraphSpec("g", {s.name: s for s in specs}, [s.name for s in specs], limits=limits or {})
    rows: list[NodeRow] = []
    for s in specs:
        kind = NodeKind.GROUP if s.is_fanout else NodeKind.STEP
        rows.append(new_node_row("r", s, s.name, kind=kind, deps=list(s.deps), now=T0))
        rows.extend(
            new_node_row(
                "r", s, f"{s.name}[{m}]", kind=NodeKind.CHILD, parent=s.name, model=m, now=T0
            )
            for m in s.models
        )
    for index, row in enumerate(rows, 1):
        row.id = index
    return build_nodes(graph, rows)


class Sim:
    """Drives a Scheduler as the in-process driver does, in an order chosen by ``rng``."""

    def __init__(
        self,
        specs: Sequence[StepSpec],
        outcome: Callable[[Node], Outcome],
        *,
        concurrency: int = 4,
        limits: dict[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.nodes = make_nodes(specs, limits)
        self.limits = limits or {}
        self.scheduler = Scheduler(
            self.nodes, concurrency=concurrency, key_limits=self.limits, clock=Clock()
        )
        self.concurrency = concurrency
        self.outcome = outcome
        self.rng = rng or random.Random(0)
        self.startable: list[Node] = []  # admitted, task not begun yet
        self.running: list[Node] = []  # begun, slots held
        self.waiting: list[Node] = []  # retry or snooze timers
        self.uncommitted: list[Settled] = []
        self.settled = Counter[str]()
        self.callbacks: list[DepCallback] = []
        self.began: list[tuple[str, dict[str, State]]] = []  # who began, deps' states then
        self.done = False
        self.history: dict[str, list[tuple[State, int]]] = {
            n.name: [(n.state, n.attempt)] for n in self.nodes.values()
        }

    # what the driver does
    def start(self, node: Node) -> None:
        if node.kind is NodeKind.GROUP:
            self.scheduler.begin_group(node)
            opened = self.scheduler.open_group(node)
            self.on_settled(opened.settled)
            for child in opened.start:
                self.start(child)
        else:
            self.startable.append(node)

    def on_settled(self, settled: Settled | None) -> None:
        if settled is not None:
            self.uncommitted.append(settled)

    def commit(self, settled: Settled) -> None:
        for node in settled.nodes:
            self.settled[node.name] += 1
        for node in self.scheduler.committed(settled):
            self.start(node)
        self.callbacks.extend(settled.callbacks)
        if self.scheduler.count_settled(len(settled.nodes)):
            self.done = True

    def move(self) -> bool:
        """One move, picked at random among those possible; False when none is left."""
        moves: list[Callable[[], None]] = []
        if self.startable:
            moves.append(self.begin)
        if self.running:
            moves.append(self.finish)
        if self.uncommitted:
            moves.append(self.commit_one)
        if self.waiting:
            moves.append(self.wake)
        if not moves:
            return False
        self.rng.choice(moves)()
        self.check()
        return True

    def begin(self) -> None:
        node = self.startable.pop(self.rng.randrange(len(self.startable)))
        if self.scheduler.begin(node):
            self.began.append((node.name, self.dep_states(node)))
            self.running.append(node)
        else:
            self.release(node)

    def finish(self) -> None:
        node = self.running.pop(self.rng.randrange(len(self.running)))
        self.release(node)
        decision = self.scheduler.conclude(node, self.outcome(node))
        if isinstance(decision, RetryAfter):
            assert decision.node is node and decision.delay >= 0
            self.waiting.append(node)
        else:
            self.on_settled(decision)

    def release(self, node: Node) -> None:
        for nxt in self.scheduler.release(node):
            self.start(nxt)

    def commit_one(self) -> None:
        self.commit(self.uncommitted.pop(0))  # commits are in order (one writer)

    def wake(self) -> None:
        node = self.waiting.pop(self.rng.randrange(len(self.waiting)))
        admitted = self.scheduler.admit(node)
        if admitted is not None:
            self.start(admitted)

    def run(self) -> Sim:
        for node in self.scheduler.initial():
            self.start(node)
        if self.scheduler.unsettled == 0:
            self.done = True
        while self.move():
            pass
        return self

    # checks after every move
    def dep_states(self, node: Node) -> dict[str, State]:
        owner = node.parent or node
        return {d: self.nodes[d].state for d in owner.deps}

    def check(self) -> None:
        assert len(self.running) <= self.concurrency
        for key, limit in self.limits.items():
            holding = [n for n in self.running if n.spec.concurrency_key == key]
            assert len(holding) <= limit, key
        for node in self.nodes.values():
            seen = self.history.setdefault(node.name, [(P, 0)])
            now = (node.state, node.attempt)
            if now != seen[-1]:
                assert_forward(node, seen[-1], now)
                seen.append(now)
            assert node.attempt <= node.max_attempts


def assert_forward(node: Node, old: tuple[State, int], new: tuple[State, int]) -> None:
    """DESIGN §3: state moves forward within an attempt; terminal states are final."""
    (a, n), (b, m) = old, new
    name = node.name
    assert a not in TERMINAL_STATES, f"{name}: {a} -> {b}"
    allowed = {
        P: {E, X},
        E: {R, S, C, D, X},
        R: {E, X},
        S: {E, X},
    }
    assert b in allowed[a] or (a == P and b == P), f"{name}: {a} -> {b}"
    if b is E and node.kind is NodeKind.GROUP:
        assert m == n == 0, f"{name}: a group has no attempts"
    elif b is E:
        assert m == n + 1, f"{name}: attempt {n} -> {m} on a new attempt"
    elif b is S:
        assert m == n - 1, f"{name}: a snooze gives its attempt back"
    else:
        assert m == n or (a == P and m == 0), f"{name}: attempt {n} -> {m} within an attempt"


# ── directed cases ───────────────────────────────────────────────────────────


def always(outcome: Outcome) -> Callable[[Node], Outcome]:
    return lambda node: outcome


DONE = Completed(1, "1")


def per_step(table: dict[str, Outcome], default: Outcome = DONE) -> Any:
    return lambda node: table.get(node.name, default)


def test_a_chain_runs_in_order_and_settles() -> None:
    sim = Sim([spec("a"), spec("b", ["a"]), spec("c", ["b"])], always(Completed(1, "1"))).run()
    assert [name for name, _ in sim.began] == ["a", "b", "c"]
    assert all(n.state is C for n in sim.nodes.values())
    assert sim.done and sim.scheduler.unsettled == 0
    assert sim.settled == Counter({"a": 1, "b": 1, "c": 1})


def test_a_dependent_starts_only_after_the_commit() -> None:
    nodes = make_nodes([spec("a"), spec("b", ["a"])])
    scheduler = Scheduler(nodes, concurrency=2, key_limits={}, clock=Clock())
    [a] = scheduler.initial()
    assert scheduler.begin(a) and not scheduler.release(a)
    settled = scheduler.conclude(a, Completed({"x": 1}, '{"x": 1}'))
    assert isinstance(settled, Settled)
    assert settled.ready == [nodes["b"]] and nodes["b"].state is P  # not started yet
    assert [n.name for n in settled.changed] == ["a", "b"]  # b's counter is written too
    assert scheduler.committed(settled) == [nodes["b"]]
    assert a.result == {"x": 1} and a.result_json == '{"x": 1}'


def test_a_failed_dep_cancels_dependents_with_their_callbacks() -> None:
    specs = [
        spec("a", max_attempts=1),
        spec("b", ["a"], on_dep_discarded=lambda r, c: None),
        spec("c", ["b"]),
        spec("d", ["a"], ignore_discarded=True),
    ]
    sim = Sim(specs, per_step({"a": Failed("ValueError: no")})).run()
    states = {n: sim.nodes[n].state for n in "abcd"}
    assert states == {"a": D, "b": X, "c": X, "d": C}
    assert sim.nodes["b"].error == "dependency 'a' was discarded: ValueError: no"
    assert (
        sim.nodes["c"].error
        == "dependency 'b' was cancelled: dependency 'a' was discarded: ValueError: no"
    )
    assert [(cb.node.name, cb.dep_state) for cb in sim.callbacks] == [("b", D), ("c", X)]
    assert sim.scheduler.wind_down(cancelled=False).status is RunStatus.FAILED


def test_retries_until_attempts_run_out_and_a_snooze_uses_none() -> None:
    outcomes = iter([Snoozed(1), Failed("E: 1"), Snoozed(1), Failed("E: 2"), Failed("E: 3")])
    sim = Sim([spec("a", max_attempts=3)], lambda node: next(outcomes)).run()
    a = sim.nodes["a"]
    assert (a.state, a.attempt, a.error) == (D, 3, "E: 3")
    assert [s for s, _ in sim.history["a"]] == [P, E, S, E, R, E, S, E, R, E, D]


def test_a_broken_backoff_discards_instead_of_retrying() -> None:
    sim = Sim([spec("a", backoff=lambda n: "soon")], always(Failed("E: x"))).run()
    a = sim.nodes["a"]
    assert a.state is D and a.attempt == 1
    assert a.error == (
        "step 'a': backoff(1) returned str 'soon', not a number of seconds; no retry "
        "possible after attempt 1 failed with E: x"
    )


def test_the_next_attempt_waits_at_least_what_the_provider_asked() -> None:
    nodes = make_nodes([spec("a", max_attempts=3, backoff=lambda n: 2.0)])
    scheduler = Scheduler(nodes, concurrency=1, key_limits={}, clock=Clock())
    a = nodes["a"]
    delays = []
    for retry_after in (30.0, 0.5):  # a 429's Retry-After beyond the backoff, then within it
        scheduler.begin(a)
        decision = scheduler.conclude(a, Failed("ProviderError: 429", retry_after))
        assert isinstance(decision, RetryAfter) and a.state is R
        delays.append(decision.delay)
    assert delays == [30.0, 2.0]


def test_a_broken_backoff_is_not_saved_by_a_retry_after() -> None:
    nodes = make_nodes([spec("a", max_attempts=2, backoff=lambda n: -math.inf)])
    scheduler = Scheduler(nodes, concurrency=1, key_limits={}, clock=Clock())
    scheduler.begin(nodes["a"])
    settled = scheduler.conclude(nodes["a"], Failed("E: x", 5.0))
    assert isinstance(settled, Settled) and nodes["a"].state is D


def test_concurrency_slots_pass_on_fifo() -> None:
    specs = [spec(f"s{i}") for i in range(5)]
    nodes = make_nodes(specs)
    scheduler = Scheduler(nodes, concurrency=2, key_limits={}, clock=Clock())
    assert [n.name for n in scheduler.initial()] == ["s0", "s1"]
    assert [n.name for n in scheduler.release(nodes["s1"])] == ["s2"]
    nodes["s3"].state = X  # settled while it waited: skipped, its slot goes on
    assert [n.name for n in scheduler.release(nodes["s0"])] == ["s4"]
    assert not scheduler.release(nodes["s2"]) and scheduler.slots.free == 1


def test_a_concurrency_key_holds_its_limit() -> None:
    specs = [spec(f"k{i}", concurrency_key="api") for i in range(4)] + [spec("free")]
    sim = Sim(
        specs, always(Completed(1, "1")), concurrency=4, limits={"api": 2}, rng=random.Random(3)
    )
    sim.run()
    assert all(n.state is C for n in sim.nodes.values())


def test_a_quorum_met_cancels_children_still_waiting() -> None:
    models = ("m/a", "m/b", "m/c")
    specs = [spec("fan", models=models, quorum=1), spec("after", ["fan"])]
    nodes = make_nodes(specs)
    scheduler = Scheduler(nodes, concurrency=8, key_limits={}, clock=Clock())
    [fan] = scheduler.initial()
    scheduler.begin_group(fan)
    opened = scheduler.open_group(fan)
    assert [c.name for c in opened.start] == ["fan[m/a]", "fan[m/b]", "fan[m/c]"]
    a, b, c = opened.start
    scheduler.begin(a)
    scheduler.begin(b)
    settled = scheduler.conclude(b, Completed("B", '"B"'))  # c never began
    assert isinstance(settled, Settled)
    assert [n.name for n in settled.nodes] == ["fan[m/b]", "fan", "fan[m/c]"]
    assert fan.state is C and fan.result == {"m/b": "B"}
    assert c.state is X and c.error == "not needed: quorum of 'fan' met"
    assert a.state is E  # running: left to finish
    assert settled.ready == [nodes["after"]]
    assert not scheduler.begin(c)  # its task wakes to find it settled


def test_children_fail_alone_and_the_group_settles_when_all_have() -> None:
    """DESIGN §4: a failed child never cancels its siblings; the group settles once every
    child settled, and fails by its quorum with the final counts."""
    specs = [spec("fan", models=("m/a", "m/b", "m/c"), max_attempts=1)]
    sim = Sim(specs, per_step({"fan[m/a]": Failed("E: a")}), concurrency=1).run()
    fan = sim.nodes["fan"]
    assert fan.state is D
    assert fan.error == "1 of 3 failed: fan[m/a]"  # no quorum set: no word of one
    assert sim.nodes["fan[m/b]"].state is C and sim.nodes["fan[m/c]"].state is C


def test_fail_fast_cancels_the_rest_once_the_quorum_is_lost() -> None:
    specs = [spec("fan", models=("m/a", "m/b"), max_attempts=1, fail_fast=True)]
    sim = Sim(specs, per_step({"fan[m/a]": Failed("E: a")}), concurrency=1).run()
    fan = sim.nodes["fan"]
    assert fan.state is D
    assert fan.error == "1 of 2 failed: fan[m/a] (fail_fast: the 1 not finished are cancelled)"
    assert sim.nodes["fan[m/b]"].error == "group 'fan' discarded"


def test_the_run_end() -> None:
    nodes = make_nodes([spec("a"), spec("b", ["a"])])
    scheduler = Scheduler(nodes, concurrency=2, key_limits={}, clock=Clock())
    [a] = scheduler.initial()
    scheduler.begin(a)
    end = scheduler.wind_down(cancelled=True)
    assert end.status is RunStatus.CANCELLED and end.cancelled == [a]
    assert (a.state, a.error) == (X, "run cancelled") and nodes["b"].state is P
    assert end.failed_steps == ["a"]


def test_map_children_planned_and_adopted() -> None:
    specs = [spec("src"), spec("m", ["src"], map_over="src", map_key=lambda item: item["k"])]
    nodes = make_nodes(specs)
    scheduler = Scheduler(nodes, concurrency=8, key_limits={}, clock=Clock())
    src, group = nodes["src"], nodes["m"]
    src.state = C
    src.set_result([{"k": "x"}, {"k": "y"}], "")
    plan = plan_map(group, src)
    assert isinstance(plan, MapPlan) and plan.names == ["m[x]", "m[y]"]
    rows = new_child_rows("r", group.spec, "m", list(enumerate(plan.names)), T0)
    for i, row in enumerate(rows, 100):
        row.id = i
    new = [Node(row, group.spec) for row in rows]
    before = scheduler.unsettled
    scheduler.begin_group(group)
    assert scheduler.plan_children(group, plan) == []
    assert scheduler.unsettled == before + 1  # the expansion itself
    opened = scheduler.adopt(group, plan, new)
    assert opened.reset == [] and opened.start == new and opened.settled is None
    assert scheduler.unsettled == before + 3
    assert [(c.name, c.item, c.item_index) for c in group.children] == [
        ("m[x]", {"k": "x"}, 0),
        ("m[y]", {"k": "y"}, 1),
    ]
    src.set_result([{"k": "x"}, {"k": "x"}], "")
    assert plan_map(group, src) == "map_key gave the key 'x' twice; keys must be unique"
    src.set_result({"not": "a list"}, "")
    assert plan_map(group, src) == "map_over='src' needs a list result, got dict"


def _map(size: int, **options: Any) -> tuple[Scheduler, Node, MapPlan, list[Node]]:
    """A map over ``size`` items opened (planned), and its children as stored (not adopted)."""
    specs = [spec("src"), spec("m", ["src"], map_over="src", **options)]
    nodes = make_nodes(specs)
    scheduler = Scheduler(nodes, concurrency=1_000, key_limits={}, clock=Clock())
    src, group = nodes["src"], nodes["m"]
    src.state = C
    src.set_result(list(range(size)), "")
    plan = plan_map(group, src)
    assert isinstance(plan, MapPlan)
    rows = new_child_rows("r", group.spec, "m", list(enumerate(plan.names)), T0)
    for i, row in enumerate(rows, 100):
        row.id = i
    scheduler.begin_group(group)
    assert scheduler.plan_children(group, plan) == []
    return scheduler, group, plan, [Node(row, group.spec) for row in rows]


def _finish(scheduler: Scheduler, child: Node, outcome: Outcome) -> Settled | None:
    assert scheduler.begin(child)
    decided = scheduler.conclude(child, outcome)
    assert not isinstance(decided, RetryAfter)
    return decided


def test_map_adopted_in_chunks_completes_only_once_every_child_did() -> None:
    scheduler, group, plan, children = _map(5)
    opened = scheduler.adopt(group, plan, children[:2])
    assert opened.start == children[:2] and opened.settled is None
    for child in children[:2]:  # every child it has so far completes
        settled = _finish(scheduler, child, Completed(None, "1"))
        assert settled is not None and settled.nodes == [child]
    assert group.state is E  # not complete on its first chunk: 3 items to go
    opened = scheduler.adopt(group, plan, children[2:])
    assert opened.start == children[2:] and opened.settled is None
    for child in children[2:4]:
        _finish(scheduler, child, Completed(None, "1"))
    assert group.state is E
    settled = _finish(scheduler, children[4], Completed(None, "1"))
    assert settled is not None and group in settled.nodes and group.state is C
    assert [c.item_index for c in group.children] == [0, 1, 2, 3, 4]


def test_map_quorum_met_in_the_first_chunk_cancels_the_children_stored_later() -> None:
    scheduler, group, plan, children = _map(6, quorum=2)
    scheduler.adopt(group, plan, children[:3])
    _finish(scheduler, children[0], Completed(0, "0"))
    settled = _finish(scheduler, children[1], Completed(1, "1"))
    assert settled is not None and group.state is C and group.result == [0, 1]
    assert children[2].state is X  # waiting in the first chunk: not needed
    # the next chunk was being stored as the group settled: cancelled, written again
    opened = scheduler.adopt(group, plan, children[3:])
    assert opened.start == [] and opened.settled is None and opened.reset == children[3:]
    assert all(c.state is X and "quorum of 'm' met" in (c.error or "") for c in children[3:])
    assert len(group.children) == 6


def test_map_fail_fast_in_the_first_chunk_while_later_ones_are_stored() -> None:
    scheduler, group, plan, children = _map(6, fail_fast=True, max_attempts=1)
    scheduler.adopt(group, plan, children[:2])
    settled = _finish(scheduler, children[0], Failed("E: boom"))
    # quorum (all 6) can no longer be met: the group fails now, not after its last chunk
    assert settled is not None and group in settled.nodes and group.state is D
    assert children[1].state is X
    opened = scheduler.adopt(group, plan, children[2:])
    assert opened.start == [] and all(c.state is X for c in children[2:])
    # children stored after it settled were stored cancelled already: nothing to write
    scheduler2, group2, plan2, children2 = _map(4, fail_fast=True, max_attempts=1)
    scheduler2.adopt(group2, plan2, children2[:2])
    _finish(scheduler2, children2[0], Failed("E: boom"))
    for child in children2[2:]:
        child.state, child.error = X, "group 'm' discarded"
    before = scheduler2.unsettled
    opened = scheduler2.adopt(group2, plan2, children2[2:])
    assert opened.reset == [] and opened.start == [] and scheduler2.unsettled == before


def test_map_without_fail_fast_waits_for_every_chunk_after_a_failure() -> None:
    scheduler, group, plan, children = _map(3, max_attempts=1)
    scheduler.adopt(group, plan, children[:1])
    assert _finish(scheduler, children[0], Failed("E: boom")) is not None
    assert group.state is E  # children fail alone: the others still run
    opened = scheduler.adopt(group, plan, children[1:])
    assert opened.start == children[1:]
    _finish(scheduler, children[1], Completed(None, "1"))
    settled = _finish(scheduler, children[2], Completed(None, "2"))
    assert settled is not None and group.state is D


def test_map_resumed_mixes_stored_children_with_new_ones_in_item_order() -> None:
    scheduler, group, plan, children = _map(4)
    done, earlier = children[0], children[2]
    done.state = C
    done.set_result(0, "0")
    earlier.remaining = 1  # as a resumed run has a child of an earlier execution
    scheduler.nodes.update({done.name: done, earlier.name: earlier})  # stored before
    scheduler.unsettled += 1  # the earlier one, pending as the execution began
    before = scheduler.unsettled
    opened = scheduler.adopt(group, plan, children)
    assert scheduler.unsettled == before + 2  # the two new ones
    assert opened.reset == [earlier]  # only that one is written again
    assert opened.start == [children[1], earlier, children[3]]
    assert group.tally == [1, 0] and [c.item_index for c in group.children] == [0, 1, 2, 3]


def test_map_over_no_items_completes_on_its_empty_chunk() -> None:
    scheduler, group, plan, _ = _map(0)
    opened = scheduler.adopt(group, plan, [])
    assert opened.settled is not None and group.state is C and group.result == []


# ── properties over random DAGs and outcomes ─────────────────────────────────

OUTCOMES = st.sampled_from(["complete", "fail", "discard", "snooze"])


@st.composite
def workflows(draw: st.DrawFn) -> tuple[list[StepSpec], dict[str, list[str]], dict[str, int], int]:
    n = draw(st.integers(1, 12))
    specs: list[StepSpec] = []
    plans: dict[str, list[str]] = {}
    for i in range(n):
        name = f"s{i}"
        deps = (
            draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), unique=True, max_size=3))
            if i
            else []
        )
        options: dict[str, Any] = {
            "max_attempts": draw(st.integers(1, 3)),
            "ignore_cancelled": draw(st.booleans()),
            "ignore_discarded": draw(st.booleans()),
            "concurrency_key": draw(st.sampled_from([None, None, "k1", "k2"])),
        }
        if draw(st.integers(0, 4)) == 0:  # a multi-model fan-out now and then
            models = tuple(f"m/{k}" for k in range(draw(st.integers(1, 4))))
            options["models"] = models
            options["quorum"] = draw(st.one_of(st.none(), st.integers(1, len(models))))
            for m in models:
                plans[f"{name}[{m}]"] = draw(st.lists(OUTCOMES, min_size=1, max_size=6))
        else:
            plans[name] = draw(st.lists(OUTCOMES, min_size=1, max_size=6))
        specs.append(spec(name, deps, **options))
    limits = {"k1": draw(st.integers(1, 2)), "k2": draw(st.integers(1, 3))}
    return specs, plans, limits, draw(st.integers(1, 5))


def planned(plans: dict[str, list[str]]) -> Callable[[Node], Outcome]:
    turns = Counter[str]()

    def outcome(node: Node) -> Outcome:
        plan = plans[node.name]
        kind = plan[min(turns[node.name], len(plan) - 1)]
        turns[node.name] += 1
        if kind == "snooze" and turns[node.name] > 4:
            kind = "complete"  # a run that snoozes forever never ends
        return {
            "complete": Completed(node.name, f'"{node.name}"'),
            "fail": Failed("E: planned"),
            "discard": Discarded("planned"),
            "snooze": Snoozed(0.1),
        }[kind]

    return outcome


@settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(workflows(), st.integers(0, 2**32 - 1))
def test_random_runs_keep_the_rules(case: Any, seed: int) -> None:
    specs, plans, limits, concurrency = case
    sim = Sim(
        specs, planned(plans), concurrency=concurrency, limits=limits, rng=random.Random(seed)
    ).run()
    nodes = sim.nodes
    # every node settles, exactly once, and the run knows it is done
    assert all(n.state in TERMINAL_STATES for n in nodes.values()), nodes
    assert sim.done and sim.scheduler.unsettled == 0
    assert all(sim.settled[name] == 1 for name in nodes), sim.settled
    # a step began only when every dep had ended, completed or ignored
    for name, deps in sim.began:
        step = nodes[name].parent or nodes[name]
        for dep, state in deps.items():
            assert state in TERMINAL_STATES, (name, dep, state)
            assert state is C or (
                step.spec.ignore_cancelled if state is X else step.spec.ignore_discarded
            ), (name, dep, state)
    for node in nodes.values():
        if node.kind is NodeKind.CHILD:
            continue
        failed = [
            (d, nodes[d].state)
            for d in node.deps
            if nodes[d].state is not C and not _ignored(node, nodes[d].state)
        ]
        if failed:  # DESIGN §3: a failed, not ignored dep cancels the step
            assert node.state is X, (node.name, failed)
        if node.state is X and (node.error or "").startswith("dependency"):
            assert any(cb.node is node for cb in sim.callbacks)
    assert len({id(cb.node) for cb in sim.callbacks}) == len(sim.callbacks)  # once each
    # fan-out groups (DESIGN §4): completed iff the quorum of children completed
    for group in (n for n in nodes.values() if n.kind is NodeKind.GROUP and n.children):
        total = len(group.children)
        quorum = min(group.spec.quorum or total, total)
        done = [c for c in group.children if c.state is C]
        if group.state is C:
            assert len(done) >= quorum
            assert set(group.result) <= {c.model for c in done}
        elif any(c.state is E for c in group.children):
            raise AssertionError("a child left executing")
        else:
            assert len(done) < quorum or not group.tally
    end = sim.scheduler.wind_down(cancelled=False)
    assert end.cancelled == []
    expected = RunStatus.FAILED if end.failed_steps else RunStatus.COMPLETED
    assert end.status is expected


def _ignored(node: Node, dep_state: State) -> bool:
    return node.spec.ignore_cancelled if dep_state is X else node.spec.ignore_discarded


@pytest.mark.parametrize("concurrency", [1, 3])
def test_wide_fanout_and_join_keep_the_limit(concurrency: int) -> None:
    specs = [spec("root")] + [spec(f"s{i}", ["root"]) for i in range(50)]
    specs.append(spec("join", [f"s{i}" for i in range(50)]))
    sim = Sim(specs, always(Completed(None, "null")), concurrency=concurrency, rng=random.Random(1))
    sim.run()
    assert sim.nodes["join"].state is C and sim.began[-1][0] == "join"
