"""Step specifications and graph validation (Kahn). Pure data, no I/O.

The builder produces these; the runtime consumes them. Neither imports the other's
internals through this module.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ._errors import ConfigurationError, CycleError

__all__ = ["DepCallback", "GraphSpec", "StepSpec", "default_backoff", "topological_order"]

DepCallback = Callable[[str, Any], "Awaitable[None] | None"]
Backoff = Callable[[int], float]


BACKOFF_BASE = 1.0  # seconds
BACKOFF_CAP = 60.0  # seconds


def default_backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform(0, min(60, 2 ** (attempt - 1))) seconds."""
    import random

    # The exponent is bounded: 2.0 ** 1024 overflows, and the cap is reached at 2 ** 6.
    exponent = min(max(0, attempt - 1), 32)
    return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2.0**exponent))


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: Callable[..., Any]
    deps: tuple[str, ...] = ()
    kwarg_deps: tuple[str, ...] = ()  # deps passed to fn as keyword arguments (Hamilton style)
    wants_ctx: bool = True
    is_async: bool = True
    max_attempts: int = 3
    timeout: float | None = None
    backoff: Backoff = default_backoff
    ignore_cancelled: bool = False
    ignore_discarded: bool = False
    models: tuple[str, ...] = ()
    quorum: int | None = None
    map_over: str | None = None
    map_key: Callable[[Any], Any] | None = None
    on_dep_cancelled: DepCallback | None = None
    on_dep_discarded: DepCallback | None = None
    concurrency_key: str | None = None
    debug: bool | None = None
    batch: bool = False  # the children's LLM calls go to provider batches (DESIGN §12)
    fail_fast: bool = False  # a fan-out fails (siblings cancelled) once its quorum is lost
    budget: Decimal | None = None  # USD cap on the step's calls (children included), §11
    # (param, annotation) of the kwarg deps annotated with a pydantic model (_dep_types)
    dep_types: tuple[tuple[str, Any], ...] = ()

    @property
    def worker(self) -> str:
        module = getattr(self.fn, "__module__", None) or ""
        qual = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"{module}.{qual}" if module and module != "__main__" else qual

    @property
    def is_fanout(self) -> bool:
        return bool(self.models) or self.map_over is not None


@dataclass(frozen=True)
class GraphSpec:
    """A validated workflow definition as the runtime sees it."""

    name: str
    steps: Mapping[str, StepSpec]
    order: Sequence[str]
    debug: bool = False
    models: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    # DESIGN §11: the run's budget (USD), unpriced models allowed under it, response cache
    budget: Decimal | None = None
    allow_unpriced: bool = False
    cache: bool | None = None  # None: bn.configure(cache=...)


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm; ties broken by insertion order.

    Raises CycleError, or ConfigurationError (a ValueError) for an unknown dep.
    """
    position = {name: i for i, name in enumerate(deps)}
    for name, ds in deps.items():
        for d in ds:
            if d not in position:
                known = ", ".join(deps) or "none"
                raise ConfigurationError(
                    f"step {name!r}: deps names unknown step {d!r} (steps: {known}); add it "
                    "first or fix the name"
                )
    remaining = {name: len(set(ds)) for name, ds in deps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    for name, ds in deps.items():
        for d in set(ds):
            dependents[d].append(name)
    ready = [(position[n], n) for n, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in dependents[name]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, (position[child], child))
    if len(order) != len(deps):
        raise CycleError(_find_cycle({n: deps[n] for n in deps if remaining[n] > 0}))
    return order


def _find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle among the steps Kahn could not order, as a path a -> b -> ... -> a."""
    # Every leftover node has a leftover dep, so walking deps must revisit a node.
    start = next(iter(deps))
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in deps)
    cycle = path[seen[node] :]
    # Present it in the direction of data flow (dep -> dependent), starting at the
    # step added first, so the message is stable and reads like the user's code.
    cycle.reverse()
    order = list(deps)
    first = min(range(len(cycle)), key=lambda i: order.index(cycle[i]))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]
