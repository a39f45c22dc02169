"""Postgres round trips counted in every process of a benchmark (benchmarks/workers.py).

``install(directory)`` wraps asyncpg's protocol (``asyncpg.protocol.Protocol``, the Python
class over its Cython one) so that each request that waits for the server's answer counts
one round trip: a statement prepared (Parse/Describe/Sync), a prepared statement bound and
run (Bind/Execute/Sync, ``fetch``/``execute`` with arguments: SQLAlchemy's path too), a
simple query (``execute`` without arguments: BEGIN, COMMIT, LISTEN), a batch of
``executemany``, a cursor's bind or fetch, a statement closed, a COPY. A claim of the task
queue (the ``UPDATE workflow_tasks SET state = 'claimed'`` raising fencing tokens) is counted
too when it returned tasks, with their number.

The counts live in a small file per process (``<directory>/<pid>``, memory-mapped), so the
benchmark reads every process's counts while they run: ``read(directory)``.

Worker processes get it by being started through this file:
``python benchmarks/_roundtrips.py DIRECTORY MODULE ARGS...`` installs it, then runs
``MODULE`` as ``python -m MODULE ARGS...`` would (the current directory first on
``sys.path``). Nothing in the product changes.
"""

from __future__ import annotations

import mmap
import os
import runpy
import struct
import sys
from pathlib import Path
from typing import Any

__all__ = ["Counts", "install", "read"]

_FORMAT = "<3q"  # round trips, claims, tasks claimed
_SIZE = struct.calcsize(_FORMAT)
# The claim of the task queue (the UPDATE that raises fencing tokens), in this branch's one
# statement and in the older SELECT ... FOR UPDATE SKIP LOCKED then UPDATE alike.
_CLAIM = "SET state = 'claimed', claimed_by"
_ROUND_TRIPS = (
    "prepare",
    "bind_execute",
    "bind_execute_many",
    "bind",
    "execute",
    "query",
    "close_statement",
    "copy_in",
    "copy_out",
)


class Counts:
    """One process's counters, in its file."""

    def __init__(self, path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(b"\0" * _SIZE)
        self._fh = open(path, "r+b")  # noqa: SIM115 - open for the process's life
        self._map = mmap.mmap(self._fh.fileno(), _SIZE)
        self.round_trips = 0
        self.claims = 0
        self.claimed = 0

    def flush(self) -> None:
        struct.pack_into(_FORMAT, self._map, 0, self.round_trips, self.claims, self.claimed)


def install(directory: str | os.PathLike[str]) -> Counts:
    """Count this process's round trips into ``directory`` (see the module's text)."""
    from asyncpg.protocol import Protocol

    counts = Counts(Path(directory) / str(os.getpid()))

    def counting(name: str) -> Any:
        original = getattr(Protocol, name)

        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts.round_trips += 1
            counts.flush()
            result = await original(self, *args, **kwargs)
            if name == "bind_execute":
                query = args[0].query if args else kwargs["state"].query
                rows = result[0] if isinstance(result, tuple) else result
                if _CLAIM in query and isinstance(rows, list) and rows:
                    counts.claims += 1
                    counts.claimed += len(rows)
                    counts.flush()
            return result

        method.__name__ = name
        return method

    for name in _ROUND_TRIPS:
        setattr(Protocol, name, counting(name))
    return counts


def read(directory: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Round trips, claims and tasks claimed of every process counting into ``directory``
    (a process that exited keeps its last counts)."""
    total = [0, 0, 0]
    for path in Path(directory).iterdir():
        data = path.read_bytes()
        if len(data) == _SIZE:
            for i, value in enumerate(struct.unpack(_FORMAT, data)):
                total[i] += value
    return total[0], total[1], total[2]


if __name__ == "__main__":
    directory, module, *rest = sys.argv[1:]
    sys.path[0] = os.getcwd()  # as ``python -m``: the current directory, not benchmarks/
    install(directory)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
