"""Provider batches (DESIGN §12) at the fake provider server: what is submitted, what is
paid, what a resumed run does. Every test counts the batches created and the requests
answered (paid) at the server."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb._states import BatchRequestState, BatchState
from baton_nb.llm._batch import BatchPolling, batch_polling, set_batch_polling
from baton_nb.store import Store
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
}


@pytest.fixture(autouse=True)
def fast_polling() -> Iterator[None]:
    before = batch_polling()
    set_batch_polling(BatchPolling(initial=0.01, maximum=0.05))
    yield
    set_batch_polling(before)


def classify(name: str, db: str, model: str, *, calls: int = 1, **step: Any) -> bn.Workflow:
    """A map over ``items`` whose children each make ``calls`` calls, batched."""
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"document {i}" for i in range(int(ctx.params.get("n", 6)))]

    @wf.step(map_over="items", batch=True, **step)
    async def label(ctx: bn.Context) -> str:
        text = ctx.item
        for _ in range(calls):
            answer = await ctx.complete(model=model, prompt=f"Label {text}", max_tokens=50)
            text = answer.text
        return text

    return wf


async def batches_of(db: str, run_id: str) -> list[Any]:
    async with await Store.open(db) as store:
        return await store.get_provider_batches(run_id)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_batched_map_is_one_batch_at_batch_prices(
    fake_providers: FakeProviderServer, sqlite_url: str, provider: str
) -> None:
    model = MODELS[provider]
    wf = classify(f"batched-{provider}", sqlite_url, model)
    run = await wf.run(params={"n": 6}, display=False)
    assert run.status == "completed", run.steps
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {provider: 1}
    assert [len(ids) for _, ids in stats["submitted"]] == [6]
    assert stats["answered"] == {provider: 6}
    assert all(r.startswith("batch answer: Label document") for r in run.results["label"])
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == 6 and all(c.pricing is not None and c.pricing.batch for c in paid)
    expected = sum(bn.price(model, c.usage, batch=True) for c in paid)
    assert run.cost == expected
    standard = sum(bn.price(model, c.usage) for c in paid)
    assert expected < standard
    [batch] = await batches_of(sqlite_url, run.id)
    assert (batch.state, batch.request_count, batch.succeeded) == (BatchState.DONE, 6, 6)
    assert batch.cost == expected and batch.saved == standard - expected
