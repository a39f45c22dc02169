"""Runs the browser test shows (and docs/widget.md pictures): 10, 200, 1,000 and 5,000 nodes.

Each is notebook cell source: the browser test runs them in JupyterLab, and
``python -m tests.acceptance.widget_scenarios OUT_DIR`` writes their saved snapshots as
HTML pages (to look at them in a browser without JupyterLab).
"""

from __future__ import annotations

SETUP = """\
import anyio
import random
import baton_nb as bn

MODELS = ["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.0-flash"]
"""

# A notebook-sized run: a 20-item map, a 3-model fan-out, a flaky step that succeeds on
# its third attempt, a step that fails and the one it cancels, a synthesis, and an edge
# (topics -> report) that crosses two columns.
TEN = """\
wf10 = bn.Workflow("briefing_10", debug=True)

@wf10.step()
async def topics(ctx):
    await anyio.sleep(0.3)
    return [f"topic {i}" for i in range(20)]

@wf10.step(map_over="topics")
async def fetch(ctx):
    await anyio.sleep(0.05 + 0.02 * int(ctx.item.split()[-1]))
    return (await ctx.complete(model="mock/gpt-4o-mini", prompt=f"Facts about {ctx.item}")).text

@wf10.step(models=MODELS)
async def answer(ctx, topics):
    await anyio.sleep(0.4)
    return (await ctx.complete(prompt="Explain " + ", ".join(topics[:3]))).text

FLAKY = {"calls": 0}

@wf10.step(max_attempts=3, backoff=lambda attempt: 0.2)
async def flaky_fetch(ctx, topics):
    FLAKY["calls"] += 1
    await anyio.sleep(0.2)
    if FLAKY["calls"] < 3:
        raise ConnectionError(f"upstream timed out (call {FLAKY['calls']})")
    return "fetched"

@wf10.step(max_attempts=1)
async def fact_check(ctx, fetch):
    await anyio.sleep(0.2)
    raise ValueError("claims could not be verified: 3 of 20 sources disagree")

@wf10.step()
async def panel(ctx, fact_check):
    return "never runs"

@wf10.step()
async def synthesis(ctx, answer, flaky_fetch):
    await anyio.sleep(0.3)
    return (await ctx.synthesize(answer, model="mock/gpt-4o-mini")).text

@wf10.step()
async def report(ctx, synthesis, topics):
    await anyio.sleep(0.2)
    return {"words": len(synthesis.split()), "topics": len(topics)}

run10 = await wf10.run()
print("RUN10", run10.status)
"""

# 200 steps in 8 layers of 25, each with one to three deps in the layers before (some
# skip a layer); one step fails and cancels what depends on it.
TWO_HUNDRED = """\
wf200 = bn.Workflow("grid_200")
rng200 = random.Random(7)

def make_step(name, pause, fails):
    async def step(ctx):
        await anyio.sleep(pause)
        if fails:
            raise RuntimeError(f"{name}: bad input row 17 (expected 3 columns, got 2)")
        return name
    return step

layers200 = []
for layer in range(8):
    names = [f"l{layer}_{j:02d}" for j in range(25)]
    for j, name in enumerate(names):
        deps = []
        if layer:
            deps = rng200.sample(layers200[-1], k=rng200.choice([1, 1, 2, 3]))
            if layer > 1 and rng200.random() < 0.15:
                deps.append(rng200.choice(layers200[-2]))
            if layer == 4 and j < 3:
                deps.append("l3_11")  # the failing step: these three are cancelled
        wf200.add(name, make_step(name, 0.05 + 0.1 * rng200.random(), name == "l3_11"),
                  deps=sorted(set(deps)), max_attempts=1)
    layers200.append(names)

run200 = await wf200.run(concurrency=40)
print("RUN200", run200.status)
"""

# 1,000 steps side by side (a grid), three of them failing, and a 1,000-item map.
THOUSAND = """\
wf1000 = bn.Workflow("wide_1000")
BAD = {17, 512, 901}

async def root1000(ctx):
    return list(range(1000))

def make_leaf(i):
    async def leaf(ctx):
        await anyio.sleep(0.01 * (i % 7))
        if i in BAD:
            raise RuntimeError(f"item {i}: schema mismatch")
        return i
    return leaf

async def join1000(ctx):
    return len(ctx.results)

wf1000.add("root", root1000)
for i in range(1000):
    wf1000.add(f"s{i:03d}", make_leaf(i), deps=["root"], max_attempts=1)
wf1000.add("join", join1000, deps=[f"s{i:03d}" for i in range(1000)], ignore_discarded=True,
           ignore_cancelled=True)

run1000 = await wf1000.run(concurrency=100)
print("RUN1000", run1000.status)
"""

MAP_1000 = """\
wfmap = bn.Workflow("map_1000")

@wfmap.step()
async def items(ctx):
    return list(range(1000))

@wfmap.step(map_over="items", max_attempts=1)
async def work(ctx):
    await anyio.sleep(0.005 * (ctx.item % 5))
    if ctx.item in (17, 512, 901):
        raise RuntimeError(f"item {ctx.item}: schema mismatch")
    return (await ctx.complete(model="mock/gpt-4o-mini", prompt=f"Tag item {ctx.item}")).text

@wfmap.step()
async def tally(ctx, work):
    return len(work)

runmap = await wfmap.run(concurrency=100)
print("RUNMAP", runmap.status)
"""

# A map of 5,000 items: tallied (counted and summed, its first 500 children listed: _tally);
# two children fail, one listed (17) and one not (4321).
MAP_5000 = """\
wfbig = bn.Workflow("map_5000")

@wfbig.step()
async def rows(ctx):
    return list(range(5000))

@wfbig.step(map_over="rows", max_attempts=1)
async def label(ctx):
    await anyio.sleep(0.02 * (ctx.item % 5))
    if ctx.item in (17, 4321):
        raise RuntimeError(f"row {ctx.item}: empty text")
    return (await ctx.complete(model="mock/gpt-4o-mini", prompt=f"Label row {ctx.item}")).text

runbig = await wfbig.run(concurrency=500)
print("RUNBIG", runbig.status, runbig.counts().text(), "COST", runbig.cost)
"""

SCENARIOS = {
    "10": TEN,
    "200": TWO_HUNDRED,
    "1000": THOUSAND,
    "map1000": MAP_1000,
    "map5000": MAP_5000,
}


def _main() -> None:  # pragma: no cover - a tool for looking at the view
    import asyncio
    import os
    import sys
    from pathlib import Path

    from baton_nb._run import Run
    from baton_nb.widget import DagWidget
    from baton_nb.widget._snapshot import snapshot_bundle

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BATON_NB_DB", f"sqlite:///{out / 'scenarios.db'}")
    which = sys.argv[2:] or list(SCENARIOS)

    async def main() -> None:
        for key in which:
            scope: dict[str, object] = {}
            code = SETUP + SCENARIOS[key]
            body = "async def __scenario():\n" + "\n".join(
                "    " + line for line in code.splitlines()
            )
            body += "\n    return {k: v for k, v in locals().items()}"
            exec(compile(body, f"<scenario {key}>", "exec"), scope)
            values = await scope["__scenario"]()  # type: ignore[operator]
            run = next(v for v in values.values() if isinstance(v, Run))
            widget = DagWidget(run)
            bundle = snapshot_bundle(run, widget._snapshot_state())
            page = f"<!doctype html><meta charset=utf-8><body>{bundle['text/html']}</body>"
            (out / f"snapshot_{key}.html").write_text(page, encoding="utf-8")
            print(key, run.status, out / f"snapshot_{key}.html")

    asyncio.run(main())


if __name__ == "__main__":
    _main()
