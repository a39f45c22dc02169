"""Single-flight of the response cache: a leader is waited for in its own event loop only."""

from __future__ import annotations

import asyncio

import anyio

from baton_nb.llm._cache_flight import _FLIGHTS, single_flight


def test_a_leader_abandoned_in_another_loop_is_not_waited_for() -> None:
    entered = asyncio.Event()

    async def leader() -> None:
        async with single_flight("sqlite:///x.db", "key"):
            entered.set()
            await asyncio.sleep(3600)

    # The first loop's leader is left in flight (a KeyboardInterrupt out of
    # run_until_complete, the loop abandoned unclosed).
    old = asyncio.new_event_loop()
    task = old.create_task(leader())
    old.run_until_complete(entered.wait())

    async def identical() -> str:
        with anyio.fail_after(5):  # it would wait for ever before
            async with single_flight("sqlite:///x.db", "key"):
                return "led"

    tasks = [task]
    try:
        assert asyncio.run(identical()) == "led"
        # In the leader's own loop an identical call still waits for it.
        waiter = old.create_task(identical())
        tasks.append(waiter)
        old.run_until_complete(asyncio.sleep(0.05))
        assert not waiter.done()
    finally:
        task.cancel()
        old.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        old.close()
    assert waiter.result() == "led"
    assert not _FLIGHTS
