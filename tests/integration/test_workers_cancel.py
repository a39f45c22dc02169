"""``run.cancel()`` of a run on REAL worker subprocesses (docs/workers.md "Cancel"), with
their calls in flight at a slow fake provider: ``wait()`` returns once the workers stopped
the run's steps, and an in-process resume right after pays no answer a worker got."""

from __future__ import annotations

import collections

import anyio
import pytest

from baton_nb.store import open_worker_store
from tests import workers_cancel_app as app
from tests.fakes.provider_server import FakeProviderServer
from tests.integration.test_workers import WorkerProcs, _llm_env, _wait, pg, workers

pytestmark = pytest.mark.anyio
__all__ = ["pg", "workers"]  # the fixtures, imported


def _prompts(server: FakeProviderServer) -> collections.Counter[str]:
    return collections.Counter(r.json["messages"][-1]["content"] for r in server.requests)


async def test_cancel_waits_for_the_workers_and_a_resume_pays_nothing_twice(
    workers: WorkerProcs, fake_providers: FakeProviderServer, unique: str
) -> None:
    server = fake_providers
    server.latency = 2.0
    for _ in range(3):  # a long task lease: a dropped task is not stopped by a renewal
        workers.start("tests.workers_cancel_app:paid_map", args=("--concurrency", "10",
                      "--lease-ttl", "30"), **_llm_env(server))  # fmt: skip
    run = await app.paid_map.submit({"n": 60, "tag": unique}, db=workers.db)
    with anyio.fail_after(60):
        while server.request_count < 31:  # the first answers in, the next calls in flight
            await anyio.sleep(0.05)
    run.cancel()
    done = await _wait(run, workers, 60)
    assert done.status == "cancelled", workers.logs()
    sent = server.request_count
    # Nothing of the run runs on the workers any more: no task left, no request after.
    async with await open_worker_store(workers.db) as queue:
        assert await queue.run_tasks(run.id) == {}
    await anyio.sleep(1.0)
    assert server.request_count == sent, workers.logs()
    totals = done.report().totals()
    answered = totals.calls
    again = await app.paid_map.run(run_id=run.id, db=workers.db, display=False)
    assert again.status == "completed", workers.logs()
    twice = {p for p, n in _prompts(server).items() if n > 1}
    # Only calls the cancel cut in flight are sent again (as an in-process cancel's): every
    # answer a worker got was stored and replayed, and the report counts every request.
    assert len(twice) == sent - answered, workers.logs()
    assert server.request_count == sent + (60 - answered)
    final = again.report().totals()
    assert final.calls == 60
