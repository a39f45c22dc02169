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


def test_an_empty_models_list_is_refused_like_a_duplicate() -> None:
    """models=[] would run the step once with no model, failing at its first call."""
    wf = bn.Workflow("opts")
    with pytest.raises(bn.ConfigurationError, match=r"step 'a': models=\[\] names no model"):
        wf.add("a", noop, models=[])
    assert wf.step_names() == []


# ── every option error names the step (or workflow) and the option ────────────


async def two(ctx: bn.Context) -> None:
    return None


BAD_STEP_OPTIONS = [
    ("deps", "a"),
    ("deps", [1]),
    ("deps", ["a", "a"]),
    ("deps", ["x"]),  # the step itself
    ("max_attempts", 0),
    ("max_attempts", True),
    ("max_attempts", "3"),
    ("timeout", -1),
    ("timeout", float("nan")),
    ("timeout", "10"),
    ("backoff", 5),
    ("ignore_cancelled", 1),
    ("ignore_discarded", "yes"),
    ("models", "openai/gpt-4o"),
    ("models", ["gpt-4o"]),
    ("models", ["mock/a", "mock/a"]),
    ("quorum", 2),
    ("quorum", 0),
    ("map_over", 3),
    ("map_over", "x"),  # the step itself
    ("map_key", "str"),
    ("on_dep_cancelled", "cb"),
    ("on_dep_discarded", 1),
    ("concurrency_key", 3),
    ("concurrency_key", ""),
    ("debug", 1),
]


@pytest.mark.parametrize(("option", "value"), BAD_STEP_OPTIONS)
def test_every_bad_step_option_names_the_step_and_the_option(option: str, value: object) -> None:
    wf = bn.Workflow("opts")
    extra: dict[str, object] = {}
    if option == "quorum" and value == 0:
        extra = {"models": ["mock/a", "mock/b"]}
    with pytest.raises(ValueError) as info:
        wf.add("x", two, **{option: value}, **extra)
    message = str(info.value)
    assert message.startswith("step 'x': "), message
    assert option in message, message
    assert wf.step_names() == []


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"debug": 1}, "debug"),
        ({"ignore_cancelled": 0}, "ignore_cancelled"),
        ({"ignore_discarded": None}, "ignore_discarded"),
        ({"models": ["a"]}, "models"),
        ({"models": {"a": "gpt-4o"}}, "models"),
        ({"limits": {"k": 0}}, "limits"),
        ({"limits": [1]}, "limits"),
        ({"limits": {3: 1}}, "limits"),
    ],
)
def test_every_bad_workflow_option_names_the_workflow_and_the_option(
    options: dict[str, object], option: str
) -> None:
    with pytest.raises(bn.ConfigurationError) as info:
        bn.Workflow("w1", **options)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"Workflow 'w1': {option}"), message


def test_unknown_deps_and_model_steps_are_named_at_validate() -> None:
    wf = bn.Workflow("w2", models={"ghost": "mock/a"})
    wf.add("a", two, deps=["nope"])
    with pytest.raises(bn.ConfigurationError, match=r"^step 'a': deps names unknown step 'nope'"):
        wf.validate()
    wf = bn.Workflow("w3", models={"ghost": "mock/a"})
    wf.add("a", two)
    with pytest.raises(ValueError, match=r"^Workflow 'w3': models= names unknown step 'ghost'"):
        wf.validate()


def test_a_map_step_taking_the_item_as_a_parameter_is_told_about_ctx_item() -> None:
    wf = bn.Workflow("w4")

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [1, 2]

    @wf.step(map_over="items")
    async def work(ctx: bn.Context, item: int) -> int:
        return item

    with pytest.raises(bn.ConfigurationError) as info:
        wf.validate()
    message = str(info.value)
    assert message.startswith("step 'work': parameter 'item' names no step"), message
    assert "ctx.item" in message and "async def work(ctx)" in message
    assert isinstance(info.value, ValueError)  # old `except ValueError` clauses still catch it


def test_a_parameter_naming_no_step_is_named_as_the_parameter_not_as_deps() -> None:
    """The user wrote no deps=: the message names the parameter, its step, and the fixes."""
    wf = bn.Workflow("w6")

    @wf.step()
    async def a(ctx: bn.Context, nonexist: int) -> int:
        return nonexist

    with pytest.raises(bn.ConfigurationError) as info:
        wf.validate()
    message = str(info.value)
    assert message.startswith("step 'a': parameter 'nonexist' names no step (steps: a)"), message
    assert "deps names" not in message
    assert "add a step 'nonexist'" in message and "nonexist=None" in message

    wf = bn.Workflow("w7")
    wf.add("b", two, map_over="ghost")
    with pytest.raises(bn.ConfigurationError) as info:
        wf.validate()
    assert str(info.value).startswith("step 'b': map_over='ghost' names no step (steps: b)")


def test_a_workflow_without_steps_is_a_configuration_error() -> None:
    with pytest.raises(bn.ConfigurationError, match=r"^workflow 'w5' has no steps; add some"):
        bn.Workflow("w5").validate()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"models": {"zzz": "mock/a"}}, "models"),
        ({"models": {"a": "nomodel"}}, "models"),
        ({"run_id": ""}, "run_id"),
    ],
)
async def test_bad_run_arguments_name_the_workflow_and_the_argument(
    kwargs: dict[str, object], option: str
) -> None:
    wf = bn.Workflow("w4")
    wf.add("a", two)
    with pytest.raises(ValueError) as info:
        await wf.run(display=False, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("workflow 'w4': run(): "), message
    assert option in message, message


def test_step_decorator_without_parentheses_names_the_function() -> None:
    wf = bn.Workflow("w5")
    with pytest.raises(bn.ConfigurationError, match=r"use @wf.step\(\) with parentheses .*'two'"):
        wf.step(two)  # type: ignore[arg-type]
