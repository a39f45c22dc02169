"""Workflows served by the worker subprocesses of tests/integration/test_workers.py
(``baton-nb worker tests.workers_app:llm_map ...``, run from the checkout's root).

Each step execution appends its name to ``$MARKS/<workflow>`` (one short line, O_APPEND:
atomic between processes), so a test counts how often a step ran across all workers.
``$STEP_DELAY`` (seconds) slows each map item down; ``$MARK_GC`` marks the collector's
young threshold while ``noop_map``'s items run; ``$CODE_VARIANT`` changes the code of
``noop_map`` (a worker "with other code"); ``$LIMIT_RPM`` and ``$LIMIT_CONCURRENCY`` set a
``bn.Limit`` on the openai provider (held across the workers).
"""

from __future__ import annotations

import gc
import os

import anyio

import baton_nb as bn

MODEL = "openai/gpt-4o-mini"

if os.environ.get("LIMIT_RPM"):
    bn.configure(
        limits={
            "openai": bn.Limit(
                concurrency=int(os.environ["LIMIT_CONCURRENCY"]), rpm=int(os.environ["LIMIT_RPM"])
            )
        }
    )


def _mark(workflow: str, step: str) -> None:
    folder = os.environ.get("MARKS")
    if folder:
        fd = os.open(os.path.join(folder, workflow), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{step}\n".encode())
        finally:
            os.close(fd)


llm_map = bn.Workflow("workers-llm-map")


@llm_map.step()
async def items(ctx: bn.Context) -> list[int]:
    _mark("llm", "items")
    return list(range(int(ctx.params["n"])))


@llm_map.step(map_over="items", max_attempts=3)
async def ask(ctx: bn.Context) -> str:
    _mark("llm", ctx.step)
    delay = float(os.environ.get("STEP_DELAY", "0"))
    if delay:
        await anyio.sleep(delay)
    answer = await ctx.complete(prompt=f"item {ctx.item}", model=MODEL)
    return f"{ctx.item}:{answer.text}"


@llm_map.step()
async def total(ctx: bn.Context, ask: list[str]) -> int:
    _mark("llm", "total")
    return len(ask)


noop_map = bn.Workflow("workers-noop-map")

if os.environ.get("CODE_VARIANT"):

    @noop_map.step()
    async def source(ctx: bn.Context) -> list[int]:
        return list(range(int(ctx.params["n"]) + 1))  # other code

else:

    @noop_map.step()
    async def source(ctx: bn.Context) -> list[int]:
        return list(range(int(ctx.params["n"])))


@noop_map.step(map_over="source")
async def double(ctx: bn.Context) -> int:
    _mark("noop", ctx.step)
    if os.environ.get("MARK_GC"):  # the collector's young threshold while a step runs
        _mark("gc", str(gc.get_threshold()[0]))
    delay = float(os.environ.get("STEP_DELAY", "0"))
    if delay:
        await anyio.sleep(delay)
    return int(ctx.item) * 2


@noop_map.step()
async def summed(ctx: bn.Context, double: list[int]) -> int:
    return sum(double)


flaky = bn.Workflow("workers-flaky")


@flaky.step()
async def numbers(ctx: bn.Context) -> list[int]:
    return list(range(6))


@flaky.step(map_over="numbers", max_attempts=3, backoff=lambda attempt: 0.01)
async def shaky(ctx: bn.Context) -> int | bn.Snooze:
    """Even items fail their first attempt (retried by the run's coordinator on any
    worker); item 5 snoozes once (no attempt used)."""
    if ctx.item % 2 == 0 and ctx.attempt == 1:
        raise RuntimeError(f"item {ctx.item}: first attempt fails")
    if ctx.item == 5 and not os.path.exists(os.path.join(os.environ["MARKS"], "snoozed")):
        _mark("snoozed", "5")
        return bn.Snooze(0.05)
    return int(ctx.item) * 10


@flaky.step()
async def shaky_total(ctx: bn.Context, shaky: list[int]) -> int:
    return sum(shaky)


# Budget and response cache on the workers (DESIGN §11 with §10): the workflow's own cap
# ($0.05: five calls of gpt-4o at 10 input + 1,000 output tokens) and cache.
spend_map = bn.Workflow("workers-spend-map", budget="0.05", cache=True)


@spend_map.step()
async def prompts(ctx: bn.Context) -> list[int]:
    return list(range(int(ctx.params["n"])))


@spend_map.step(map_over="prompts", max_attempts=1)
async def priced(ctx: bn.Context) -> str:
    answer = await ctx.complete(
        prompt=f"priced {ctx.params['tag']} {ctx.item}", model="openai/gpt-4o", max_tokens=1000
    )
    return answer.text


# A budget stop with calls in flight on the workers: no cache (a resume replays the stored
# calls or buys them again); $0.025 holds two calls' worst cases at once, not three.
landing_map = bn.Workflow("workers-landing-map", budget="0.025")


@landing_map.step()
async def landing_prompts(ctx: bn.Context) -> list[int]:
    return list(range(int(ctx.params["n"])))


@landing_map.step(map_over="landing_prompts", max_attempts=1)
async def landing(ctx: bn.Context) -> str:
    answer = await ctx.complete(
        prompt=f"landing {ctx.params['tag']} {ctx.item}", model="openai/gpt-4o", max_tokens=1000
    )
    return answer.text


# A coordinator's own attempts (run in its process, no task row) caught in flight: each
# item pays its call (stored at once), then items from $HOLD_FROM on wait until the file
# $MARKS/release exists before they end. Marks: "held" (started) and "held-done" (ended).
held_map = bn.Workflow("workers-held-map")


@held_map.step()
async def held_items(ctx: bn.Context) -> list[int]:
    return list(range(int(ctx.params["n"])))


@held_map.step(map_over="held_items")
async def held(ctx: bn.Context) -> str:
    _mark("held", ctx.step)
    answer = await ctx.complete(prompt=f"held {ctx.item}", model=MODEL)
    if ctx.item >= int(os.environ.get("HOLD_FROM", "0")):
        release = os.path.join(os.environ["MARKS"], "release")
        while not os.path.exists(release):
            await anyio.sleep(0.02)
    _mark("held-done", ctx.step)
    return f"{ctx.item}:{answer.text}"


@held_map.step()
async def held_total(ctx: bn.Context, held: list[str]) -> int:
    return len(held)
