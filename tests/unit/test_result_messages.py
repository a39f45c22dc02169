"""What a step's result that cannot be stored is told: found in linear time whatever the
value's shape, named where it is, with what to return instead."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from baton_nb._errors import ResultNotSerializable
from baton_nb._jsonutil import dumps_result


def _message(value: Any) -> str:
    with pytest.raises(ResultNotSerializable) as caught:
        dumps_result("s", value)
    return str(caught.value)


def test_a_value_that_contains_itself_is_refused_at_once() -> None:
    """Two references back to itself made the search for the culprit walk 2**100 paths
    (the run's event loop froze); every container is walked once now."""
    looped: dict[str, Any] = {}
    looped["x"] = looped
    looped["y"] = looped
    shared = [looped] * 50
    for value in (looped, shared, {"a": shared, "b": [shared, shared]}):
        message = _message(value)
        assert "Circular reference detected" in message
        assert "it contains itself: return one without the reference back" in message


def test_a_shared_part_with_an_unstorable_object_is_named_once() -> None:
    part = {"when": uuid.UUID(int=1)}
    message = _message({"a": [part, part], "b": part})
    assert "result['a'][0]['when'] is a UUID" in message


def test_messages_name_a_key_an_object_and_a_coroutine_plainly() -> None:
    assert "result's key ('a', 1) is of type tuple; JSON keys are str" in _message({("a", 1): 1})
    assert "is a UUID;" in _message({"u": uuid.UUID(int=2)})
    coroutine = asyncio.sleep(0)
    try:
        message = _message([coroutine])
    finally:
        coroutine.close()
    # the step's own hint (what to write instead) is added by the runtime, once
    assert message.endswith("result[0] is a coroutine (a call not awaited)")
