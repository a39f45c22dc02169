"""baton_nb: durable, asyncio-native DAG runs for LLM fan-out, built for notebooks.

>>> import baton_nb as bn
>>> wf = bn.Workflow("demo")
>>> @wf.step()
... async def hello(ctx: bn.Context) -> str:
...     return "hi"
>>> run = await wf.run()          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import events
from ._builder import Workflow
from ._dep_types import DependencyTypeWarning
from ._errors import (
    BatonError,
    BudgetReached,
    ConfigurationError,
    CycleError,
    OutputValidationError,
    ProviderError,
    ResultNotSerializable,
    RunLocked,
    RunNotFound,
    RunRefused,
    SchemaVersionError,
    StorageError,
    UnsupportedFeature,
    WorkflowFailed,
)
from ._outcomes import Discard, Snooze
from ._prune import PruneResult, prune
from ._query import report, runs
from ._run import CallRecord, NotebookView, Run, StepInfo
from ._usage import Usage
from ._watch import watch
from .events import (
    BatchUpdated,
    CallFinished,
    EventsDropped,
    StepUpdated,
    WorkflowFinished,
    topic_all,
    topic_workflow,
)
from .reports import CostReport, RunSummary
from .runtime import Context, SubmittedRun, ToolRun

if TYPE_CHECKING:
    from .llm import Completion, Limit
    from .widget import DagWidget

__version__ = "0.1.0"

__all__ = [
    "BatchUpdated",
    "BatonError",
    "BudgetReached",
    "CallFinished",
    "CallRecord",
    "Completion",
    "ConfigurationError",
    "Context",
    "CostReport",
    "CycleError",
    "DagWidget",
    "DependencyTypeWarning",
    "Discard",
    "EventsDropped",
    "Limit",
    "OutputValidationError",
    "ProviderError",
    "PruneResult",
    "ResultNotSerializable",
    "Run",
    "RunLocked",
    "RunNotFound",
    "RunRefused",
    "RunSummary",
    "SchemaVersionError",
    "Snooze",
    "StepInfo",
    "StepUpdated",
    "StorageError",
    "SubmittedRun",
    "ToolRun",
    "UnsupportedFeature",
    "Usage",
    "Workflow",
    "WorkflowFailed",
    "WorkflowFinished",
    "__version__",
    "configure",
    "events",
    "price",
    "prune",
    "report",
    "runs",
    "topic_all",
    "topic_workflow",
    "watch",
]

# The LLM layer (httpx, tiktoken) and pricing load on first use: `import baton_nb` stays fast.
_LAZY = {
    "Completion": ("baton_nb.llm", "Completion"),
    "Limit": ("baton_nb.llm", "Limit"),
    "configure": ("baton_nb.llm", "configure"),
    "price": ("baton_nb.pricing", "price"),
    "DagWidget": ("baton_nb.widget", "DagWidget"),  # ipywidgets: loaded on first use
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'baton_nb' has no attribute {name!r}")


class _ViewOnFirstShow:
    """``Run.notebook_view`` until ``baton_nb.widget`` is imported.

    The runtime shows a Run through the view registered on ``Run.notebook_view`` and imports
    no view (DESIGN §1); the widget package registers itself when imported, which a
    ``wf.run()`` in a kernel does. A Run shown in a kernel that never ran one
    (``bn.Run.load``, ``await wf.submit(...)``, ``bn.SubmittedRun.attach`` after a restart)
    would get a line of text. The package front, above every layer, registers this stand-in:
    the first Run shown imports the widget package (ipywidgets: not before, so ``import
    baton_nb`` and a script's run stay without it) and hands every Run to its view.
    """

    def _view(self) -> NotebookView:
        from .widget import notebook_view

        Run.notebook_view = notebook_view
        return notebook_view

    def display(self, run: Run) -> None:
        self._view().display(run)

    def static_html(self, run: Run) -> str:
        return self._view().static_html(run)


if Run.notebook_view is None:
    Run.notebook_view = _ViewOnFirstShow()
