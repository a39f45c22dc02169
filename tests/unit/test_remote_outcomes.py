"""Outcomes through the task queue (runtime/_remote): what a worker stores is what the
coordinator decodes, a completed result's stored JSON kept as the worker encoded it."""

from __future__ import annotations

import pytest

from baton_nb.runtime._decisions import PARKED, Completed, Discarded, Failed, Snoozed
from baton_nb.runtime._remote import decode_outcome, encode_outcome


@pytest.mark.parametrize(
    "outcome",
    [
        Completed({"a": [1, 2.5, None], "é": "ü"}, '{"a": [1, 2.5, null], "é": "ü"}'),
        Completed("x}", '"x}"'),
        Completed(None, "null"),
        Failed("boom", 2.0),
        Failed("boom", 0.0),
        Discarded("not wanted"),
        Snoozed(3.0),
        PARKED,
    ],
)
def test_an_outcome_comes_back_as_it_went(outcome: object) -> None:
    assert decode_outcome(encode_outcome(outcome)) == outcome  # type: ignore[arg-type]


def test_a_completed_result_keeps_its_stored_json_text() -> None:
    encoded = '{"b":1,  "a" : "}"}'  # not how json.dumps would write it: kept as it is
    decoded = decode_outcome(encode_outcome(Completed({"b": 1, "a": "}"}, encoded)))
    assert decoded == Completed({"b": 1, "a": "}"}, encoded)
