"""Peers for benchmarks/runtime.py: the same no-op workloads on LangGraph and DBOS, on SQLite.

Installed with ``pip install 'baton-nb[bench]'``; without them the benchmark prints
"not installed". Each peer opens once (its own SQLite file in the benchmark's temp dir),
then ``run("fanout" | "chain")`` times one run and returns steps/s, and ``persisted()``
reads back what that run stored, so the table's ratios can be read against it.

What each one stores per run (honest comparison; the figures are measured, see ``persisted``):

- baton_nb: one ``workflow_runs`` row and one ``workflow_nodes`` row per step: its state
  (pending → running → completed), attempt, result (JSON, ``null`` for these no-ops),
  timestamps and dependents' readiness counters; group-committed (one writer, many steps
  per transaction), a dependent starts only after its dependencies' completion committed.
- LangGraph (``AsyncSqliteSaver``, ``durability="sync"``): one checkpoint per *superstep*
  (every channel value + versions) written before the next superstep starts, plus each
  task's channel writes (one transaction per task, ``writes`` table). A node that returns
  nothing stores no result, only the edge-trigger writes. No per-node state rows: a node's
  status is implied by which writes exist. The fan-out is three supersteps (root, the 1,000
  parallel nodes, join), so ~5 checkpoints; the chain is one superstep per node.
- DBOS (SQLite system database): the workflow's status, inputs and output rows, and one
  ``operation_outputs`` row per step (its output, function name, timestamps), each
  committed in its own transaction before the step returns (a read to check for a
  recorded output first), through a thread pool (its SQLite driver is synchronous).

By default the peers run on the same SQLite settings as baton_nb (WAL, synchronous=NORMAL),
so the disk-sync cost per commit is the same and what differs is the framework;
``shipped=True`` keeps each peer's own settings (LangGraph: WAL, synchronous=FULL; DBOS:
rollback journal, synchronous=FULL).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

NAMES = ("langgraph", "dbos")
_MODULES = {"langgraph": ("langgraph", "langgraph.checkpoint.sqlite"), "dbos": ("dbos",)}


def missing(name: str) -> bool:
    try:
        return any(importlib.util.find_spec(m) is None for m in _MODULES[name])
    except ModuleNotFoundError:  # a parent package is absent
        return True


class LangGraphPeer:
    """A StateGraph per workload, compiled once with an AsyncSqliteSaver checkpointer.

    Fan-out: ``root`` → 1,000 static no-op nodes (one superstep, run concurrently) → ``join``
    (``add_edge([...], "join")`` waits for all of them). Chain: 300 nodes, one edge each.
    The ``Send`` map-reduce form stores the same rows and times the same within noise.
    """

    name = "langgraph"

    def __init__(self, fanout: int, chain: int, shipped: bool = False) -> None:
        self.sizes = {"fanout": fanout, "chain": chain}
        self.shipped = shipped
        self.threads: dict[str, str] = {}

    async def open(self, tmp: Path) -> None:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self.path = tmp / "langgraph.db"
        self.conn = await aiosqlite.connect(self.path)
        if not self.shipped:
            await self.conn.execute("PRAGMA synchronous=NORMAL")  # setup() turns WAL on
        saver = AsyncSqliteSaver(self.conn)
        await saver.setup()
        self.graphs = {
            "fanout": (self._fanout().compile(checkpointer=saver), self.sizes["fanout"] + 2),
            "chain": (self._chain().compile(checkpointer=saver), self.sizes["chain"]),
        }

    def _fanout(self) -> Any:
        from langgraph.graph import END, START, StateGraph

        g = StateGraph(_State)
        g.add_node("root", _lg_noop)
        g.add_edge(START, "root")
        names = [f"s{i}" for i in range(self.sizes["fanout"])]
        for name in names:
            g.add_node(name, _lg_noop)
            g.add_edge("root", name)
        g.add_node("join", _lg_noop)
        g.add_edge(names, "join")
        g.add_edge("join", END)
        return g

    def _chain(self) -> Any:
        from langgraph.graph import END, START, StateGraph

        g = StateGraph(_State)
        prev = START
        for i in range(self.sizes["chain"]):
            g.add_node(f"c{i}", _lg_noop)
            g.add_edge(prev, f"c{i}")
            prev = f"c{i}"
        g.add_edge(prev, END)
        return g

    async def run(self, workload: str) -> float:
        graph, steps = self.graphs[workload]
        thread = self.threads[workload] = uuid.uuid4().hex
        config = {"configurable": {"thread_id": thread}, "recursion_limit": steps + 10}
        start = time.perf_counter()
        await graph.ainvoke({"n": 0}, config, durability="sync")
        return steps / (time.perf_counter() - start)

    async def persisted(self, workload: str) -> str:
        thread = (self.threads[workload],)
        q = "SELECT COUNT(*) FROM {} WHERE thread_id=?"
        checkpoints = await (await self.conn.execute(q.format("checkpoints"), thread)).fetchone()
        writes = await (await self.conn.execute(q.format("writes"), thread)).fetchone()
        return f"{checkpoints[0]} checkpoints + {writes[0]} task writes"

    async def close(self) -> None:
        await self.conn.close()


class DBOSPeer:
    """Async DBOS workflows of async steps on a SQLite system database.

    Fan-out: a ``root`` step, 1,000 steps started together with ``asyncio.gather``, a
    ``join`` step. Chain: 300 steps awaited one after another. DBOS is a process-wide
    singleton, so the peer can be opened once per process.
    """

    name = "dbos"

    def __init__(self, fanout: int, chain: int, shipped: bool = False) -> None:
        self.sizes = {"fanout": fanout, "chain": chain}
        self.shipped = shipped
        self.workflows: dict[str, str] = {}
        self.engine: Any = None

    async def open(self, tmp: Path) -> None:
        from dbos import DBOS

        self.path = tmp / "dbos.sqlite"
        url = f"sqlite:///{self.path}"
        config: Any = {"name": "baton-bench", "system_database_url": url, "log_level": "WARNING"}
        if not self.shipped:
            self.engine = config["system_database_engine"] = _dbos_engine(url)
        DBOS(config=config)

        @DBOS.step()
        async def noop() -> None:
            return None

        @DBOS.workflow()
        async def fanout(n: int) -> None:
            await noop()
            await asyncio.gather(*(noop() for _ in range(n)))
            await noop()

        @DBOS.workflow()
        async def chain(n: int) -> None:
            for _ in range(n):
                await noop()

        self.fns = {
            "fanout": (fanout, self.sizes["fanout"], self.sizes["fanout"] + 2),
            "chain": (chain, self.sizes["chain"], self.sizes["chain"]),
        }
        DBOS.launch()

    async def run(self, workload: str) -> float:
        from dbos import SetWorkflowID

        fn, n, steps = self.fns[workload]
        wid = self.workflows[workload] = uuid.uuid4().hex
        start = time.perf_counter()
        with SetWorkflowID(wid):
            await fn(n)
        return steps / (time.perf_counter() - start)

    async def persisted(self, workload: str) -> str:
        wid = (self.workflows[workload],)
        with sqlite3.connect(self.path) as db:
            ops = db.execute("SELECT COUNT(*) FROM operation_outputs WHERE workflow_uuid=?", wid)
            steps = ops.fetchone()[0]
        return f"1 workflow status row + {steps} step outputs"

    async def close(self) -> None:
        from dbos import DBOS

        DBOS.destroy()
        if self.engine is not None:
            self.engine.dispose()


def _dbos_engine(url: str) -> Any:
    """DBOS's own SQLite engine set-up, plus baton_nb's WAL + synchronous=NORMAL."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"  # as DBOS does: serialized writers
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


class _State(TypedDict, total=False):
    n: int


async def _lg_noop(state: _State) -> None:
    return None


PEERS = {"langgraph": LangGraphPeer, "dbos": DBOSPeer}
