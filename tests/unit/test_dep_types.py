"""Which dependency annotations are validated into pydantic models, and how."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
import warnings
from collections import abc
from typing import Annotated, Any, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field

from baton_nb._dep_types import DependencyTypeWarning, model_annotations, validate_deps


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
    validate_deps("s", step, kwargs, [("x", annotation)])
    assert kwargs == {"x": expected, "other": {"a": "untouched"}}
    none = {"x": None}
    validate_deps("s", step, none, [("x", annotation)])
    assert none == {"x": None}


def test_a_misfit_keeps_the_json_and_warns_naming_the_step_the_parameter_and_what_to_do() -> None:
    kwargs = {"judge": [{"a": "x"}]}
    with pytest.warns(DependencyTypeWarning) as caught:
        validate_deps("use", step, kwargs, [("judge", list[V])])
    assert kwargs == {"judge": [{"a": "x"}]}  # what a parameter without the annotation gets
    message = str(caught[0].message)
    assert message.startswith("step 'use': the result of 'judge' is passed as stored (JSON)")
    assert "not as list[V]: 0.a: Input should be a valid integer" in message
    assert "or with dict, and read it with Model.model_validate" in message


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    at: datetime.datetime
    id: uuid.UUID
    colour: Colour
    pair: tuple[int, int]
    answer: str = Field(alias="Answer")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def twice(self) -> str:
        return self.answer * 2


class Colour(enum.Enum):
    RED = "red"


Strict.model_rebuild()


def test_a_models_own_json_dump_reads_back_and_the_shared_value_is_not_changed() -> None:
    """Strict types, an alias without populate_by_name, extra="forbid" with a computed
    field: each rejects its own model_dump(mode="json") in python mode."""
    made = Strict(
        at=datetime.datetime(2024, 1, 1),
        id=uuid.uuid4(),
        colour=Colour.RED,
        pair=(1, 2),
        Answer="x",
    )
    stored = made.model_dump(mode="json")
    shared = {"one": stored, "many": [stored, None]}
    kwargs = dict(shared)
    validate_deps("s", step, kwargs, [("one", Strict), ("many", list[Strict])])
    assert kwargs["one"] == made
    assert kwargs["many"] == [made, None]
    assert shared["one"] == made.model_dump(mode="json")  # untouched for other dependents


@pytest.mark.parametrize(
    "shape",
    [
        list[Strict] | None,
        Optional[list[Strict]],  # noqa: UP045
        dict[str, list[Strict]],
        list[dict[str, Strict]] | None,
        tuple[Strict, ...],
        Annotated[list[Strict] | None, Field(description="d")],
        Strict | str,
        list[Strict] | int | None,
        abc.Sequence[Strict],
    ],
)
def test_computed_fields_are_dropped_at_any_depth(shape: Any) -> None:
    """A computed field's key (extra="forbid") is dropped inside every wrapper."""
    made = Strict(
        at=datetime.datetime(2024, 1, 1),
        id=uuid.uuid4(),
        colour=Colour.RED,
        pair=(1, 2),
        Answer="x",
    )
    stored = made.model_dump(mode="json")
    values = {
        list[Strict] | None: [stored],
        Optional[list[Strict]]: [stored],  # noqa: UP045
        dict[str, list[Strict]]: {"k": [stored]},
        list[dict[str, Strict]] | None: [{"k": stored}],
        tuple[Strict, ...]: [stored],
        Strict | str: stored,
    }
    value = values.get(shape, [stored])
    expected = {
        dict[str, list[Strict]]: {"k": [made]},
        list[dict[str, Strict]] | None: [{"k": made}],
        tuple[Strict, ...]: (made,),
        Strict | str: made,
    }.get(shape, [made])
    kwargs: dict[str, Any] = {"x": value}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DependencyTypeWarning: validated
        validate_deps("s", step, kwargs, [("x", shape)])
    assert kwargs["x"] == expected
    assert "twice" in json.dumps(value)  # the stored value is untouched


def test_an_annotation_naming_a_later_model_is_resolved_when_the_step_runs() -> None:
    namespace: dict[str, Any] = {}
    exec("def later(ctx, one: 'Later'): pass", namespace)
    found = model_annotations(namespace["later"], ["one"])
    assert [name for name, _ in found] == ["one"]  # kept as text: resolved when it runs

    class Later(BaseModel):
        a: int

    namespace["Later"] = Later
    kwargs = {"one": {"a": 1}}
    validate_deps("s", namespace["later"], kwargs, found)
    assert kwargs == {"one": Later(a=1)}
