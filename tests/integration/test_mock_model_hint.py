"""An unknown mock model (``mock/gpt-9000``) runs, priced as nothing: its warning says a
priced model it is close to, as unknown providers get a "did you mean"; ``baton-nb price``
too."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb.cli import main
from baton_nb.pricing import UnknownPriceWarning, lookup


def test_an_unknown_mock_model_says_what_it_may_have_meant(tmp_path: Path) -> None:
    wf = bn.Workflow("mock-names", db=f"sqlite:///{tmp_path / 'm.db'}")

    @wf.step()
    async def far(ctx: bn.Context) -> str:
        return str((await ctx.complete(prompt="hi", model="mock/gpt-9000")).text)

    @wf.step()
    async def nonsense(ctx: bn.Context) -> str:
        return str((await ctx.complete(prompt="hi", model="mock/qqqqqqqqqqqqqqqqqq")).text)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "completed" and run.cost is None  # runs; its cost is unknown
    messages = {
        m.group(1): str(w.message)
        for w in caught
        if issubclass(w.category, UnknownPriceWarning)
        and (m := re.search(r"model '(mock/[^']+)'", str(w.message)))
    }
    far_message = messages["mock/gpt-9000"]
    near = re.search(r"Did you mean '(mock/[^']+)'\?", far_message)
    assert near is not None, far_message
    assert lookup(near.group(1)) is not None  # a model that has a price
    assert "the mock provider answers any model name, priced as the model it names" in (far_message)
    assert "Did you mean" not in messages["mock/qqqqqqqqqqqqqqqqqq"]
    assert "name a priced one, e.g. 'mock/gpt-4o-mini'" in messages["mock/qqqqqqqqqqqqqqqqqq"]


def test_baton_nb_price_of_an_unknown_model_says_did_you_mean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["price", "mock/gpt-4o-mnii"]) == 1
    err = capsys.readouterr().err
    assert "no price known for 'mock/gpt-4o-mnii'" in err
    assert "Did you mean 'mock/gpt-4o-mini'?" in err
    assert main(["price", "openai/zz-no-such-model-at-all"]) == 1
    assert "Did you mean" not in capsys.readouterr().err
