"""The public contract of DESIGN.md: names users and acceptance tests rely on."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from decimal import Decimal
from pathlib import Path

import pytest

import baton_nb as bn

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "Workflow",
    "Context",
    "CycleError",
    "Snooze",
    "Discard",
    "Run",
    "Usage",
    "Completion",
    "Limit",
    "configure",
    "price",
    "events",
    "topic_all",
    "topic_workflow",
    "StepUpdated",
    "WorkflowFinished",
    "CallFinished",
    "WorkflowFailed",
    "CostReport",
    "DagWidget",
    "watch",
    "report",
    "prune",
    "runs",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_exported(name: str) -> None:
    assert name in bn.__all__
    assert getattr(bn, name) is not None


def test_all_names_resolve() -> None:
    for name in bn.__all__:
        getattr(bn, name)


def test_event_shapes_match_the_seed() -> None:
    step_fields = [f.name for f in dataclasses.fields(bn.StepUpdated)]
    assert step_fields[:10] == [
        "workflow_id",
        "workflow_label",
        "step_name",
        "worker",
        "state",
        "job_id",
        "attempt",
        "has_result",
        "error",
        "timestamp",
    ]
    # The seed's fields first, in its order (as StepUpdated's); then, with a default, who
    # took the run over when an execution ends ``taken_over`` (docs/workers.md "Failures").
    assert [f.name for f in dataclasses.fields(bn.WorkflowFinished)] == [
        "workflow_id",
        "workflow_label",
        "outcome",
        "failed_steps",
        "timestamp",
        "taken_over_by",
    ]
    assert bn.WorkflowFinished("r", "w", "completed", [], None).taken_over_by is None  # type: ignore[arg-type]
    assert bn.topic_all() == "workflow:all" and bn.topic_workflow("x") == "workflow:x"


def test_usage_fields() -> None:
    # DESIGN §6's five fields first, in order (positional Usage(...) keeps its meaning);
    # fields added later come after them.
    assert [f.name for f in dataclasses.fields(bn.Usage)] == [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cache_write_1h_tokens",
        "web_search_requests",
    ]


def test_completion_fields() -> None:
    names = {f.name for f in dataclasses.fields(bn.Completion)}
    assert {"text", "model", "usage", "cost", "latency_ms", "raw"} <= names


def test_workflow_signatures() -> None:
    init = inspect.signature(bn.Workflow)
    for option in ("db", "debug", "ignore_cancelled", "ignore_discarded"):
        assert option in init.parameters
    run = inspect.signature(bn.Workflow.run)
    for option in ("params", "run_id", "concurrency", "models", "display"):
        assert option in run.parameters
    assert run.parameters["concurrency"].default == 32
    assert issubclass(bn.CycleError, ValueError)


def test_csv_columns_in_contract_order() -> None:
    from baton_nb.reports import CSV_COLUMNS

    assert list(CSV_COLUMNS) == [
        "run_id",
        "workflow",
        "step",
        "model",
        "provider",
        "calls",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
        "latency_ms",
        "replayed_calls",
        # added after DESIGN §8's columns, which keep their order
        "cache_write_1h_tokens",
        "web_search_requests",
        "fees_usd",
        "price_source",
        "price_model",
        # the response cache (DESIGN §11)
        "cached_calls",
        "saved_usd",
        # attempts with no answer, at their worst case (a budget's)
        "unanswered_usd",
        # calls of unknown price, left out of cost_usd
        "unpriced_calls",
    ]


def test_price_is_decimal_and_unknown_is_none() -> None:
    cost = bn.price("openai/gpt-4o-mini", bn.Usage(input_tokens=1_000_000))
    assert isinstance(cost, Decimal) and cost > 0
    with pytest.warns(UserWarning):
        assert bn.price("nobody/never-heard-of-it", bn.Usage(input_tokens=10)) is None


@pytest.mark.anyio
async def test_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    code = compile(blocks[0], "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, object] = {}
    result = eval(code, namespace)
    if inspect.isawaitable(result):
        await result
    run = namespace["run"]
    assert isinstance(run, bn.Run) and run.status == "completed"
    assert (tmp_path / "costs.csv").read_text().startswith("run_id,workflow,step,model")
    assert run.cost > 0
