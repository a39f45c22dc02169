"""Which dependency annotations are validated into pydantic models, and how."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import pytest
from pydantic import BaseModel, Field

from baton_nb._dep_types import model_annotations, validate_deps
from baton_nb._errors import ConfigurationError


class V(BaseModel):
    a: int


def step(ctx: Any, one: V, many: dict[str, V], maybe: Optional[V], n: int, raw: dict) -> None:  # noqa: UP045
    """One parameter of each kind (string annotations: this module's future import)."""


def test_only_annotations_naming_a_model_are_kept() -> None:
    found = dict(model_annotations(step, ["one", "many", "maybe", "n", "raw"]))
    assert set(found) == {"one", "many", "maybe"}
    assert found["many"] == dict[str, V]


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (V, {"a": "1"}, V(a=1)),
        (list[V], [{"a": 1}, None], [V(a=1), None]),  # a tolerant map's hole stays None
        (Optional[dict[str, V]], {"m": {"a": 2}}, {"m": V(a=2)}),  # noqa: UP045
        (Annotated[list[V], {"unhashable": []}], [None, {"a": 3}], [None, V(a=3)]),
        (Annotated[V, Field(description="d")], {"a": 4}, V(a=4)),
    ],
)
def test_shapes_are_validated_and_none_passes(annotation: Any, value: Any, expected: Any) -> None:
    kwargs = {"x": value, "other": {"a": "untouched"}}
    validate_deps("s", kwargs, [("x", annotation)])
    assert kwargs == {"x": expected, "other": {"a": "untouched"}}
    none = {"x": None}
    validate_deps("s", none, [("x", annotation)])
    assert none == {"x": None}


def test_a_misfit_names_the_step_the_parameter_and_what_to_do() -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_deps("use", {"judge": [{"a": "x"}]}, [("judge", list[V])])
    message = str(info.value)
    assert message.startswith("step 'use': the result of 'judge' does not fit the annotation")
    assert "parameter judge: list[V] (0.a: Input should be a valid integer" in message
    assert "or with dict (no validation)" in message
