"""Step options that only make sense together are refused when the step is added."""

from __future__ import annotations

import pytest

import baton_nb as bn


async def noop(ctx: bn.Context) -> None:
    return None


def test_map_key_without_map_over_is_refused_at_add_time() -> None:
    wf = bn.Workflow("opts")
    with pytest.raises(ValueError, match=r"step 'a': map_key needs map_over="):
        wf.add("a", noop, map_key=str)
    with pytest.raises(bn.ConfigurationError, match="map_key needs map_over="):
        wf.add("b", noop, models=["mock/gpt-4o-mini"], map_key=str)
    assert wf.step_names() == []


def test_map_key_with_map_over_is_accepted() -> None:
    wf = bn.Workflow("opts")
    wf.add("items", noop)
    wf.add("each", noop, map_over="items", map_key=str)
    assert wf.validate() == ["items", "each"]


def test_quorum_without_fanout_is_refused_too() -> None:
    with pytest.raises(ValueError, match="quorum needs models= or map_over="):
        bn.Workflow("opts").add("a", noop, quorum=1)
