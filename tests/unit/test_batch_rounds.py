"""The rounds of a batched step (``runtime/_batching``): a parked child never waits
silently for calls no batch will answer. The runtime's own round logic, with stand-in
nodes (name, parent, size, tally) and no store: nothing is submitted here, ``spawn``
records what would start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from baton_nb._errors import BatonError
from baton_nb.runtime._batching import Batching
from baton_nb.runtime._decisions import CallParked

rounds: list[Any] = []  # the calls of each round submitted (args of ``submit_round``)


def setup(children: int = 1) -> tuple[Batching, list[Any], list[str], list[Any]]:
    readmitted: list[Any] = []
    launched: list[str] = []
    rounds.clear()
    batching = Batching(
        "run",
        store=None,  # type: ignore[arg-type]
        calls=None,  # type: ignore[arg-type]
        announce=None,  # type: ignore[arg-type]
        spawn=lambda fn, name, *args: (launched.append(name), rounds.append(args[1][1])),
        readmit=readmitted.append,
    )
    group = SimpleNamespace(name="label", parent=None, size=children, tally=(0, 0))
    nodes = [SimpleNamespace(name=f"label[{i}]", parent=group, attempt=1) for i in range(children)]
    return batching, nodes, launched, readmitted


def park(batching: Batching, node: Any, index: int) -> None:
    request = SimpleNamespace(model="openai/gpt-4o-mini")
    with pytest.raises(CallParked):
        batching.park(node, index, request, f"hash{index}")  # type: ignore[arg-type]


def test_a_complete_round_is_submitted_and_a_call_parked_after_it_goes_to_the_next() -> None:
    batching, [node], launched, readmitted = setup()
    park(batching, node, 0)
    batching.parked(node)
    assert launched == ["batch round label"] and not readmitted
    park(batching, node, 1)  # a call of the attempt that parked after the attempt ended
    assert launched == ["batch round label"] * 2 and not batching.failures


def test_children_parked_with_no_batch_for_their_calls_fail_rather_than_wait() -> None:
    batching, [node], launched, readmitted = setup()
    # the state a lost round leaves: a call waited for that no round holds
    key = ("label[0]", 0, "hash0")
    batching._waits["label[0]"] = {key}
    batching.parked(node)
    assert launched == [] and readmitted == [node]  # runs again, not parked forever
    error = batching.failures[key]
    assert isinstance(error, BatonError)
    assert "no batch is pending or running for them" in str(error)
    with pytest.raises(BatonError, match="waiting for a provider batch"):
        batching.park(node, 0, SimpleNamespace(model="m"), "hash0")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_child_counts_as_parked_only_once_its_gathered_calls_have_parked() -> None:
    """Gathered calls that ask the cache first park in different loop turns, and the first
    ``CallParked`` ends the attempt: the round waits for the others, then takes all."""
    batching, [node], launched, _ = setup()
    go = [anyio.Event() for _ in range(3)]

    async def call(index: int) -> None:
        await go[index].wait()  # (the cache lookup)
        park_request = SimpleNamespace(model="openai/gpt-4o-mini")
        batching.park(node, index, park_request, f"hash{index}")  # type: ignore[arg-type]

    async def counted(index: int) -> None:
        with pytest.raises(CallParked):
            await batching.calling(node, call(index))  # type: ignore[arg-type]

    async with anyio.create_task_group() as tasks:
        for index in range(3):
            tasks.start_soon(counted, index)
        await anyio.wait_all_tasks_blocked()
        go[0].set()
        await anyio.wait_all_tasks_blocked()
        batching.parked(node)  # the attempt ended at the first park
        go[1].set()
        await anyio.wait_all_tasks_blocked()
        assert launched == []
        go[2].set()
    assert launched == ["batch round label"]
    assert sorted(c.index for c in rounds[0]) == [0, 1, 2]
