"""Kahn ordering and cycle messages."""

from __future__ import annotations

import pytest

from baton_nb import CycleError
from baton_nb._graph import topological_order


def test_order_follows_insertion_among_ready_steps() -> None:
    deps = {"d": ["b", "c"], "a": [], "b": ["a"], "c": ["a"]}
    assert topological_order(deps) == ["a", "b", "c", "d"]


def test_cycle_is_named_from_first_added_step() -> None:
    with pytest.raises(CycleError) as info:
        topological_order({"x": [], "a": ["c"], "b": ["a"], "c": ["b"]})
    assert info.value.path == ["a", "b", "c", "a"]


def test_self_loop_and_unknown_dep() -> None:
    with pytest.raises(CycleError, match="cycle: a -> a"):
        topological_order({"a": ["a"]})
    with pytest.raises(ValueError, match="unknown step 'z'"):
        topological_order({"a": ["z"]})


def test_large_chain_is_fast() -> None:
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(20_000)}
    assert topological_order(deps)[-1] == "s19999"
