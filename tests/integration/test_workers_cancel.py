"""``run.cancel()`` of a run on REAL worker subprocesses (docs/workers.md "Cancel"), with
their calls in flight at a slow fake provider: ``wait()`` returns once the workers stopped
the run's steps, and an in-process resume right after pays no answer a worker got."""

from __future__ import annotations

import collections
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb._errors import AnswerStoredElsewhere
from baton_nb.store import CompletionRow, Store, WriteBatch, open_worker_store, utcnow
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


async def test_a_commit_meeting_another_writers_answer_says_what_to_do(
    pg: str, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    """A resume whose answer was stored meanwhile by another process (workers still
    finishing the run's steps): a clear error saying so and what to do, shown without a
    traceback in a notebook, not the database's duplicate-key error alone."""
    import baton_nb.llm

    wf = bn.Workflow(f"collide-{unique}")

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt=f"ask {unique}", model="mock/gpt-4o-mini")).text

    real = baton_nb.llm.complete

    async def complete(request: Any) -> Any:  # another writer stores the answer meanwhile
        completion = await real(request)
        assert wf.last_run is not None
        digest = baton_nb.llm.request_hash(request)
        row = CompletionRow(wf.last_run.id, "ask", 0, digest, completion.to_json(), utcnow())
        async with await Store.open(pg) as other:
            await other.write(WriteBatch(completions=[row]))
        return completion

    monkeypatch.setattr(baton_nb.llm, "complete", complete)
    with pytest.raises(AnswerStoredElsewhere) as caught:
        await wf.run(db=pg, display=False)
    assert isinstance(caught.value, bn.StorageError)
    shown = "\n".join(caught.value._render_traceback_())  # type: ignore[attr-defined]
    assert shown.startswith("StorageError: could not save run ")
    assert "stored meanwhile by another process running steps of the same run" in shown
    assert 'wf.run(run_id="' in shown and "duplicate key" not in shown


async def test_a_task_claimed_while_it_is_dropped_is_stopped_and_waited_for(
    pg: str, unique: str
) -> None:
    """A claim committing while the coordinator drops the task (its run cancelled) never
    leaves it running as ``claimed``: it is dropped, its worker's renewal stops it, and the
    coordinator waits for that worker (``unstopped``) until it says it stopped."""
    import asyncpg

    from baton_nb.store import NewTask

    wf, run_id = f"q-{unique}", f"r-{unique}"
    async with await open_worker_store(pg) as queue:
        ids = await queue.enqueue([NewTask(run_id, wf, "s[0]", "s", 1, "0", None, replay=False)])
        task_id = ids[run_id, "s[0]"]
        claimer = await asyncpg.connect(pg)
        try:
            tx = claimer.transaction()
            await tx.start()  # a worker's claim, not committed yet: holds the row
            await claimer.execute(
                "UPDATE workflow_tasks SET state = 'claimed', claimed_by = 'w', token = 1, "
                "lease_until = now() + interval '30 seconds' WHERE id = $1",
                task_id,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.drop_tasks, [task_id])
                await anyio.sleep(0.3)  # the drop waits for the claim's row lock
                await tx.commit()
        finally:
            await claimer.close()
        assert await queue.renew("w", [task_id], 30.0) == set()  # the worker stops it
        assert await queue.unstopped([task_id]) == {task_id}  # and is waited for
        await queue.forget("w", run_id, [task_id])
        assert await queue.unstopped([task_id]) == set()
