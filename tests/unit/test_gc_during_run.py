"""The garbage collector's thresholds while a run executes or LLM calls are in flight
(issue 16, baton_nb/_gc.py): the young one raised to RUN_THRESHOLD, the oldest one to at
least RUN_OLDEST (no full collection in a run of ordinary size), both restored after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
from baton_nb._gc import RUN_OLDEST, RUN_THRESHOLD, fewer_collections
from baton_nb.llm import LLMRequest, complete
from baton_nb.runtime import execute_run
from tests.fakes.provider_server import FakeProviderServer, Reply


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


RAISED = (RUN_THRESHOLD, 10, RUN_OLDEST)


def test_raised_in_the_block_and_restored() -> None:
    with fewer_collections():
        assert gc.get_threshold() == RAISED
        with fewer_collections():  # a second run at the same time
            assert gc.get_threshold() == RAISED
        assert gc.get_threshold() == RAISED  # the first still runs
    assert gc.get_threshold() == (700, 10, 10)


def test_the_thresholds_raised_are_rarer_than_before() -> None:
    """Above the ~60,000 objects of 1,000 calls in flight (50,000 before: a young collection
    every ~1,100 calls walked them all), and no full collection in a run."""
    assert RUN_THRESHOLD >= 200_000
    assert RUN_OLDEST >= 1_000


def test_an_oldest_threshold_set_higher_is_kept() -> None:
    """The middle generation's threshold is left as it is, the oldest one raised only."""
    gc.set_threshold(700, 20, 5_000)
    with fewer_collections():
        assert gc.get_threshold() == (RUN_THRESHOLD, 20, 5_000)
    assert gc.get_threshold() == (700, 20, 5_000)


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("step failed")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("threshold", [(0, 10, 10), (RUN_THRESHOLD + 1, 5, 5)])
def test_a_threshold_of_the_user_is_left_alone(threshold: tuple[int, int, int]) -> None:
    """Collection disabled by threshold 0, or a higher threshold: not touched."""
    gc.set_threshold(*threshold)
    with fewer_collections():
        assert gc.get_threshold() == threshold
    assert gc.get_threshold() == threshold


@pytest.mark.parametrize("changed", [(2000, 10, 10), (RUN_THRESHOLD, 10, 10)])
def test_a_change_made_during_the_block_is_kept(changed: tuple[int, int, int]) -> None:
    """Any change of the three, the oldest one's alone too."""
    with fewer_collections():
        gc.set_threshold(*changed)
    assert gc.get_threshold() == changed


@pytest.mark.anyio
async def test_a_run_executes_with_rarer_young_collections() -> None:
    wf = bn.Workflow("gc-threshold", db="memory://gc-threshold")
    seen: list[int] = []

    @wf.step()
    async def look(ctx: bn.Context) -> int:
        seen.append(gc.get_threshold()[0])
        return 1

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert seen == [RUN_THRESHOLD]
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.anyio
async def test_raised_from_the_store_opening_on(tmp_path: Path) -> None:
    """Before the run executes (its rows made, ``on_start`` called), not only while its
    steps run: a full collection due before ``wf.run()`` waits for the run's end."""
    wf = bn.Workflow("gc-from-open")

    @wf.step()
    async def one(ctx: bn.Context) -> int:
        return 1

    seen: list[tuple[int, int, int]] = []
    run = await execute_run(
        wf.graph(),
        params=None,
        run_id=None,
        db=f"sqlite:///{tmp_path / 'gc.db'}",
        concurrency=4,
        models=None,
        on_start=lambda run: seen.append(gc.get_threshold()),
    )
    assert run.status == "completed"
    assert seen == [RAISED]
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.anyio
async def test_complete_raises_it_while_calls_are_in_flight(
    fake_providers: FakeProviderServer,
) -> None:
    """``llm.complete`` alone (no run) raises it while a call is in flight, as a run does,
    and the last call to end restores it, a call that failed too."""
    fake_providers.script(Reply(delay=0.3), Reply(delay=0.3), Reply(status=400))
    request = LLMRequest("openai/gpt-4o-mini", ({"role": "user", "content": "hi"},))
    seen: list[tuple[int, int, int]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(complete, request)
        tg.start_soon(complete, request)
        while len(fake_providers.requests) < 2:  # both at the server: both in flight
            await anyio.sleep(0.01)
        seen.append(gc.get_threshold())
    assert seen == [RAISED]
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(bn.ProviderError):
        await complete(request)
    assert gc.get_threshold() == (700, 10, 10)
