"""``Totals`` and ``CostRow`` print readably: counts, cost as text, prices as lists."""

from __future__ import annotations

from pathlib import Path

import anyio

import baton_nb as bn
from baton_nb._money import fmt_money


def test_totals_repr_is_readable_and_keeps_the_fields(tmp_path: Path) -> None:
    wf = bn.Workflow("totals", db=f"sqlite:///{tmp_path / 't.db'}")

    @wf.step(max_attempts=2, backoff=lambda attempt: 0.0)
    async def ask(ctx: bn.Context) -> str:
        answer = await ctx.complete(prompt="hi", model="mock/gpt-4o-mini", max_tokens=20)
        if ctx.attempt == 1:
            raise ConnectionError("once")  # the retry replays the call
        return str(answer.text)

    run = anyio.run(lambda: wf.run(display=False))
    totals = run.report().totals()
    usage = totals.usage
    text = repr(totals)
    assert text == (
        f"Totals(calls=1, cost={fmt_money(totals.known_cost)}, "
        f"usage=Usage(input_tokens={usage.input_tokens}, output_tokens={usage.output_tokens}), "
        f"latency_ms={totals.latency_ms:,.1f}, replayed_calls=1, "
        f"price_sources={list(totals.price_sources)!r}, price_models=['openai/gpt-4o-mini'])"
    )
    assert "None" not in text and "Decimal" not in text
    # the fields themselves are unchanged
    assert (totals.calls, totals.replayed_calls, totals.cost) == (1, 1, totals.known_cost)
    assert list(totals.price_models) == ["openai/gpt-4o-mini"]

    (row,) = run.report().rows
    assert repr(row).startswith(
        f"CostRow(run_id={run.id!r}, workflow='totals', step='ask', model='mock/gpt-4o-mini', "
        "calls=1, cost="
    )
