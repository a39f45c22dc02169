"""A peer doing benchmarks/llm_runtime.py's fan-out: LangGraph's map-reduce (``Send``).

Installed with ``pip install 'baton-nb[bench]'``; without it the benchmark prints why there
is no row. The same run shape as baton_nb's: a ``prompts`` node makes the prompts, one
``answer`` task per prompt (``Send``) makes a chat completion against the same fake provider
with the same request, and ``total`` sums the output tokens. Durable as the SQLite row is:
checkpointed on SQLite (``AsyncSqliteSaver``, WAL and synchronous=NORMAL as baton_nb,
``durability="sync"``: each superstep's checkpoint and every task's writes stored before the
next superstep starts). At most ``in_flight`` tasks at once (``max_concurrency``).

The HTTP client is httpx-aiohttp (``HttpxAiohttpClient``, one for the peer, a connection
per slot kept 30 s), the client baton_nb's transport builds on and the ``aiohttp`` row
times alone: the row is then LangGraph's orchestration and checkpoints on top of the same
calls. (A LangGraph user would often call through langchain-openai; its openai SDK over
stock httpx does not finish 1,000 calls in flight in reasonable time, see the transport
section of docs/performance.md.)
"""

from __future__ import annotations

import importlib.util
import operator
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from _fake_server import KEY, _body  # benchmarks/_fake_server.py

MODULES = ("langgraph", "langgraph.checkpoint.sqlite", "aiosqlite", "httpx_aiohttp")


def missing() -> str | None:
    """Why the peer cannot run here (a module not installed), or None."""
    for module in MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} not installed (pip install -e '.[bench]')"
        except ModuleNotFoundError:  # a parent package is absent
            return f"{module} not installed (pip install -e '.[bench]')"
    return None


class _State(TypedDict, total=False):
    calls: int
    prompts: list[str]
    tokens: Annotated[list[int], operator.add]
    total: int


class LangGraphFanout:
    """prompts → ``Send("answer", prompt)`` per prompt → total, checkpointed on SQLite."""

    def __init__(self, base_url: str, in_flight: int, tmp: Path) -> None:
        import httpx
        import httpx_aiohttp

        self.url = f"{base_url}/v1/chat/completions"
        self.in_flight = in_flight
        self.tmp = tmp
        limits = httpx.Limits(
            max_connections=in_flight, max_keepalive_connections=in_flight, keepalive_expiry=30
        )
        self.client = httpx_aiohttp.HttpxAiohttpClient(limits=limits)
        self.graph = self._graph()

    def _graph(self) -> Any:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send

        client, url = self.client, self.url
        headers = {"authorization": f"Bearer {KEY}"}

        def prompts(state: _State) -> dict[str, Any]:
            count = state["calls"]
            return {"prompts": [f"Summarise document {i} in one sentence." for i in range(count)]}

        def fan_out(state: _State) -> list[Any]:  # of Send
            return [Send("answer", {"prompt": p, "i": i}) for i, p in enumerate(state["prompts"])]

        async def answer(task: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(url, json=_body(task["i"]), headers=headers)
            response.raise_for_status()
            return {"tokens": [response.json()["usage"]["completion_tokens"]]}

        def total(state: _State) -> dict[str, Any]:
            return {"total": sum(state["tokens"])}

        g = StateGraph(_State)
        g.add_node("prompts", prompts)
        g.add_node("answer", answer)
        g.add_node("total", total)
        g.add_edge(START, "prompts")
        g.add_conditional_edges("prompts", fan_out, ["answer"])
        g.add_edge("answer", "total")
        g.add_edge("total", END)
        return g

    async def run(self, calls: int) -> float:
        """One run on a fresh SQLite checkpoint file; wall seconds."""
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = self.tmp / f"langgraph-{uuid.uuid4().hex[:8]}.db"
        async with aiosqlite.connect(path) as conn:
            await conn.execute("PRAGMA synchronous=NORMAL")  # setup() turns WAL on
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            graph = self.graph.compile(checkpointer=saver)
            config = {
                "configurable": {"thread_id": uuid.uuid4().hex},
                "max_concurrency": self.in_flight,
            }
            start = time.perf_counter()
            out = await graph.ainvoke({"calls": calls, "tokens": []}, config, durability="sync")
            elapsed = time.perf_counter() - start
        path.unlink(missing_ok=True)
        assert len(out["tokens"]) == calls and out["total"] > 0, (len(out["tokens"]), calls)
        return elapsed

    async def aclose(self) -> None:
        await self.client.aclose()
