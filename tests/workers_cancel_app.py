"""A workflow served by the worker subprocesses of tests/integration/test_workers_cancel.py
(``baton-nb worker tests.workers_cancel_app:paid_map``): one paid call per map item, under
a budget (each call reserved and settled), no response cache."""

from __future__ import annotations

import baton_nb as bn

paid_map = bn.Workflow("workers-cancel-paid-map", budget="5")


@paid_map.step()
async def docs(ctx: bn.Context) -> list[str]:
    return [f"doc {i} {ctx.params['tag']}" for i in range(int(ctx.params["n"]))]


@paid_map.step(map_over="docs", max_attempts=1)
async def summarise(ctx: bn.Context) -> str:
    answer = await ctx.complete(prompt=f"summarise {ctx.item}", model="openai/gpt-4o",
                                max_tokens=60)  # fmt: skip
    return answer.text
