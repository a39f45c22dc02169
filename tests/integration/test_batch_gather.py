"""Calls a batched step gathers (``asyncio.gather``) go to provider batches in the same
round, with the response cache on or off (docs/batch.md, docs/spend_less.md), at the fake
provider server. With the cache on, each call asks the cache before it parks, so the
gathered calls park in different loop turns: the round must still wait for all of them
(it used to take only the first ones and leave the rest parked forever)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import anyio
import pytest

import baton_nb as bn
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio

OTHERS = [
    "openai/gpt-4o-mini",
    "anthropic/claude-haiku-4-5",
    "gemini/gemini-2.5-flash",
    "openai/gpt-4.1-mini",
]
ITEMS = 3
HANG = 60  # seconds: a run not over by then waits forever (a failure, not a timing)


def gathering(name: str, db: str, models: list[str], *, cache: bool, salt: str) -> bn.Workflow:
    """A batched map whose children each gather one call per entry of ``models`` (their
    prompts end with ``salt``: no other test's cached answer is theirs)."""
    wf = bn.Workflow(name, db=db, cache=cache)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"review {i}" for i in range(ITEMS)]

    @wf.step(map_over="items", batch=True)
    async def label(ctx: bn.Context) -> list[str]:
        answers = await asyncio.gather(
            *[
                ctx.complete(
                    model=m, prompt=f"Sentiment of {ctx.item}? ({i}) {salt}", max_tokens=50
                )
                for i, m in enumerate(models)
            ]
        )
        return [a.text for a in answers]

    return wf


async def run_within(wf: bn.Workflow) -> bn.Run:
    with anyio.fail_after(HANG):
        return await wf.run(display=False)


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("same", [True, False], ids=["same-model", "other-models"])
@pytest.mark.parametrize("calls", [1, 2, 3, 4])
async def test_gathered_calls_go_in_one_round_first_run_and_second(
    fake_providers: FakeProviderServer, db_url: str, calls: int, same: bool, cache: bool
) -> None:
    models = [OTHERS[0]] * calls if same else OTHERS[:calls]
    per_model = Counter(models)
    unique = uuid.uuid4().hex[:8]
    first = await run_within(
        gathering(f"gather-{unique}", db_url, models, cache=cache, salt=unique)
    )
    assert first.status == "completed", first.steps
    stats = fake_providers.batches.stats()
    # one round: one batch per model, holding every child's calls to it
    sent = Counter({m.partition("/")[0]: 0 for m in models})
    for provider, ids in stats["submitted"]:
        sent[provider] += len(ids)
    assert len(stats["submitted"]) == len(per_model)
    assert sum(stats["creates"].values()) == len(per_model)
    for provider in sent:
        expected = ITEMS * sum(n for m, n in per_model.items() if m.startswith(provider + "/"))
        assert sent[provider] == expected
    assert [first.steps[f"label[{i}]"].attempt for i in range(ITEMS)] == [1] * ITEMS
    paid = [c for c in first.calls if not c.replayed and not c.cached]
    assert len(paid) == ITEMS * calls and all(c.pricing and c.pricing.batch for c in paid)
    assert all(len(r) == calls for r in first.results["label"])

    # the same calls in a new run: all from the cache (no batch), or all batched again
    second = await run_within(
        gathering(f"gather2-{unique}", db_url, models, cache=cache, salt=unique)
    )
    assert second.status == "completed", second.steps
    assert second.results["label"] == first.results["label"]
    after = fake_providers.batches.stats()
    if cache:
        assert after["submitted"] == stats["submitted"]  # nothing sent
        assert second.cost == 0 and second.report().cached_calls == ITEMS * calls
    else:
        assert len(after["submitted"]) == 2 * len(per_model)
        assert len([c for c in second.calls if not c.replayed]) == ITEMS * calls


async def test_gathered_calls_of_a_resumed_run_go_in_one_round(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """A resumed run reads each child's stored answers before its calls park (a read per
    call gathered): cancelled while its batches run, resumed, it completes and asks the
    calls the cancelled batches did not answer in one round."""
    from baton_nb.runtime import active_run

    fake_providers.batches.hold = True  # batches that take hours
    unique = uuid.uuid4().hex[:8]
    wf = gathering(f"gather-resume-{unique}", sqlite_url, OTHERS[:3], cache=False, salt=unique)
    running: list[str] = []

    def listen(event: object) -> None:
        if isinstance(event, bn.BatchUpdated) and event.state == "running":
            running.append(event.workflow_id)

    remove = bn.events.add_listener(bn.topic_all(), listen)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: wf.run(display=False))
            with anyio.fail_after(HANG):
                while len(running) < 3:
                    await anyio.sleep(0.01)
            live = active_run(running[0])
            assert live is not None
            live.cancel()
    finally:
        remove()
    run = wf.last_run
    assert run is not None and run.status == "cancelled"
    fake_providers.batches.hold = False
    with anyio.fail_after(HANG):
        again = await wf.run(run_id=run.id, display=False)
    assert again.status == "completed", again.steps
    stats = fake_providers.batches.stats()
    assert len(stats["submitted"]) == 6  # 3 cancelled, then one round of 3 for the rest
    assert all(len(r) == 3 for r in again.results["label"])
