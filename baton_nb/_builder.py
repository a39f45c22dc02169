"""``bn.Workflow``: define steps, validate the graph (Kahn), run it. No I/O here."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from ._dep_types import model_annotations
from ._errors import AnswerStoredElsewhere, ConfigurationError, RunLocked
from ._graph import DepCallback, GraphSpec, StepSpec, default_backoff, topological_order
from ._money import parse_budget

if TYPE_CHECKING:
    from ._run import Run
    from .runtime import SubmittedRun
    from .runtime._submit import Following
    from .runtime._unfinished import Edited, Unfinished

__all__ = ["Workflow"]

logger = logging.getLogger("baton_nb")

F = TypeVar("F", bound=Callable[..., Any])
# Workflow names and run ids are keys of database indexes (run listings; every row of a
# run): a Postgres btree entry holds at most 2704 bytes, so they are capped at 500
# characters (2,000 bytes of UTF-8 at most), checked before anything is written. Step,
# model and map-key names have no cap.
MAX_KEY_LENGTH = 500
_NAME = re.compile(r"^[^\[\]\s][^\[\]]*$")
_STEP_OPTIONS = (
    "deps",
    "max_attempts",
    "timeout",
    "backoff",
    "ignore_cancelled",
    "ignore_discarded",
    "models",
    "quorum",
    "map_over",
    "map_key",
    "on_dep_cancelled",
    "on_dep_discarded",
    "concurrency_key",
    "debug",
    "batch",
    "fail_fast",
    "budget",
)


class Workflow:
    """A DAG of async (or sync) step functions, run with ``await wf.run()``.

    Args:
        name: The workflow's name (runs are listed and reported under it).
        db: Database URL (``sqlite:///runs.db``, ``postgresql://...``). Default:
            ``BATON_NB_DB``, else ``sqlite:///baton.db``.
        debug: Capture every step's context (see the ``debug`` step option).
        ignore_cancelled: Default of the step option of the same name.
        ignore_discarded: Default of the step option of the same name.
        models: ``{step: "provider/model"}``: the model of ``ctx.model`` for these steps
            (``wf.run(models=...)`` can override it per run).
        limits: ``{concurrency_key: n}``: at most ``n`` steps with that
            ``concurrency_key`` execute at once in a run; a key not listed here allows 1.
        budget: USD cap on each run's LLM calls (``"2.50"``); ``wf.run(budget=...)``
            overrides it (docs/spend_less.md).
        allow_unpriced: Under a budget, send calls of models without a known price (they
            count as $0). Default ``False``: refused before sending.
        cache: Answer calls from the response cache (shared by the database's runs);
            default: ``bn.configure(cache=...)``, else off.
    """

    def __init__(
        self,
        name: str,
        *,
        db: str | None = None,
        debug: bool = False,
        ignore_cancelled: bool = False,
        ignore_discarded: bool = False,
        models: Mapping[str, str] | None = None,
        limits: Mapping[str, int] | None = None,
        budget: str | float | Decimal | None = None,
        allow_unpriced: bool = False,
        cache: bool | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"Workflow name must be a non-empty string, got {name!r}")
        _check_key_length("Workflow name", name)
        self.name = name
        where = f"Workflow {name!r}"
        self.db = _check_db(db)
        self.debug = _check_bool(where, "debug", debug)
        self.ignore_cancelled = _check_bool(where, "ignore_cancelled", ignore_cancelled)
        self.ignore_discarded = _check_bool(where, "ignore_discarded", ignore_discarded)
        self.models = _check_models(where, models)
        self.limits = _check_limits(where, limits)
        self.budget = parse_budget(where, budget)
        self.allow_unpriced = _check_bool(where, "allow_unpriced", allow_unpriced)
        self.cache = None if cache is None else _check_bool(where, "cache", cache)
        self._steps: dict[str, StepSpec] = {}
        self.last_run: Run | None = None

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} steps={list(self._steps)}>"

    # ── defining steps ────────────────────────────────────────────────────────

    def step(self, name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Decorator that adds the function below it as a step of this workflow.

        ``@wf.step(deps=["fetch"], max_attempts=3, timeout=30)``. The function gets a
        `bn.Context` (``ctx``) and returns a JSON-serialisable result; ``async def`` is
        preferred, a plain ``def`` runs in a worker thread. Every option is checked here,
        when the step is added: an unknown option, a wrong type or a contradiction (e.g.
        ``quorum`` without ``models``/``map_over``) raises ``ValueError``
        (`bn.ConfigurationError`).

        Args:
            name: Step name, unique in the workflow, without ``[`` or ``]``.
                Default: the function's ``__name__``.
            **options: The step options below.

        Keyword Args:
            deps (list[str] | None): Names of the steps this one waits for; their results
                are in ``ctx.results``. Default: the function's parameters after ``ctx``
                (Hamilton style: each receives that dep's result); none means no deps.
            max_attempts (int): Attempts before the step is ``discarded`` (>= 1).
                Default ``3``.
            timeout (float | None): Seconds per attempt; a slower attempt fails with
                ``TimeoutError`` and is retried like any error. Default ``None``
                (no limit).
            backoff (Callable[[int], float] | None): Seconds to wait before the next
                attempt, given the attempt number that failed. Default: exponential with
                full jitter, base 1 s, cap 60 s.
            ignore_cancelled (bool): Run even if a dep ended ``cancelled`` (it is then
                missing from ``ctx.results``). Default: the workflow's
                ``ignore_cancelled`` (``False``).
            ignore_discarded (bool): Run even if a dep ended ``discarded``. Default: the
                workflow's ``ignore_discarded`` (``False``).
            models (list[str] | None): Fan-out over models: one child per
                ``"provider/model"``, named ``step[provider/model]``, each with
                ``ctx.model`` set; downstream steps see ``{model: result}``.
                Default ``None``.
            quorum (int | None): With ``models`` or ``map_over``: the group completes as
                soon as this many children completed (the children not finished then are
                cancelled; children that fail inside a met quorum do not fail the run).
                Default ``None``: all children must complete.
            map_over (str | None): Name of a dep whose result (a list) is mapped: one
                child per item (``ctx.item``), named ``step[0]``, ``step[1]``, ...;
                downstream steps see the list of results in item order. Added to ``deps``
                if missing. Not together with ``models``. Default ``None``.
            map_key (Callable[[Any], Any] | None): With ``map_over`` only: names each
                child ``step[map_key(item)]`` instead of by index. Default ``None``.
            on_dep_cancelled (Callable[[str, Context], Any] | None): Called with
                ``(reason, ctx)`` (may be async) when this step is cancelled because a dep
                was cancelled. Default ``None``.
            on_dep_discarded (Callable[[str, Context], Any] | None): The same when a dep
                was discarded. Default ``None``.
            concurrency_key (str | None): Steps with the same key share a limit on how many
                of them execute at once in a run: ``limits={key: n}`` on `bn.Workflow`,
                1 for a key without a limit (fan-out children each take a slot).
                Default ``None``: only ``wf.run(concurrency=...)`` applies.
            debug (bool | None): Capture this step's context (LLM requests, responses,
                ``ctx.log`` lines; never API keys) for ``run.context(step)``. Default: the
                workflow's ``debug``.
            batch (bool): With ``map_over`` or ``models``: the children's ``ctx.complete``
                calls go to the providers' batch APIs (OpenAI Batch, Anthropic Message
                Batches, Gemini batch mode; half price), gathered round by round, and the
                children finish once their batch answers (docs/batch.md). Default ``False``.
            fail_fast (bool): With ``map_over`` or ``models``: as soon as the group's
                quorum cannot be met any more (a child failed for good), the children not
                finished are cancelled and the group fails. Default ``False``: children fail
                alone, the others run to their end and keep their results, and the group
                settles once every child has, completing or failing by its quorum
                (docs/fanout.md).
            budget (str | Decimal | None): USD cap on this step's calls (its children's
                included), on top of the run's budget (docs/spend_less.md). Default ``None``.

        Returns:
            A decorator that registers the function and returns it unchanged.
        """
        if callable(name):
            raise ConfigurationError(
                f"workflow {self.name!r}: use @wf.step() with parentheses (above "
                f"{getattr(name, '__name__', name)!r})"
            )

        def register(fn: F) -> F:
            self.add(name or _fn_name(fn), fn, **options)
            return fn

        return register

    def add(self, name: str, fn: Callable[..., Any], **options: Any) -> Workflow:
        """Add ``fn`` as the step ``name`` (builder form, Baton ``add/4``).

        ``wf.add("parse", parse_fn, deps=["fetch"], max_attempts=5)`` is the same as
        decorating ``parse_fn`` with ``@wf.step("parse", deps=["fetch"], max_attempts=5)``.

        Args:
            name: Step name, unique in the workflow, without ``[`` or ``]``. Adding the
                same function again (same module and qualified name: its notebook cell ran
                again) replaces the step; another function under a taken name raises
                ``ValueError``.
            fn: The step function (async or sync), called with ``ctx`` and, Hamilton
                style, one argument per dep it names as a parameter.
            **options: ``deps``, ``max_attempts`` (default 3), ``timeout``, ``backoff``,
                ``ignore_cancelled``, ``ignore_discarded``, ``models``, ``quorum``,
                ``map_over``, ``map_key``, ``on_dep_cancelled``, ``on_dep_discarded``,
                ``concurrency_key``, ``debug``, ``batch``, ``fail_fast``: the options of
                `Workflow.step`, with the same types, defaults and checks (described there).

        Returns:
            The workflow, for chaining: ``wf.add("a", f).add("b", g, deps=["a"])``.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"step name must be a non-empty string without '[' or ']', got {name!r}"
            )
        if not callable(fn):
            raise ConfigurationError(f"step {name!r}: expected a function, got {fn!r}")
        unknown = sorted(set(options) - set(_STEP_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"step {name!r}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(_STEP_OPTIONS)}"
            )
        spec = _make_spec(self, name, fn, options)
        if name in self._steps:
            _check_redefinition(self.name, self._steps[name], fn)
        self._steps[name] = spec  # a redefinition keeps the step's place in the order
        return self

    def step_names(self) -> list[str]:
        """Step names in the order they were added."""
        return list(self._steps)

    def validate(self) -> list[str]:
        """Check the graph; return the topological order. Raises CycleError, or
        ConfigurationError (a ValueError) naming what is wrong."""
        return _checked_order(self.name, self._steps, self.models)

    def graph(self) -> GraphSpec:
        order = self.validate()
        return GraphSpec(
            name=self.name,
            steps=dict(self._steps),
            order=order,
            debug=self.debug,
            models=dict(self.models),
            limits=dict(self.limits),
            budget=self.budget,
            allow_unpriced=self.allow_unpriced,
            cache=self.cache,
        )

    # ── running ───────────────────────────────────────────────────────────────

    async def run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        db: str | None = None,
        concurrency: int = 32,
        models: Mapping[str, str] | None = None,
        display: bool | str | None = None,
        budget: str | float | Decimal | None = None,
        workers: bool = False,
        resume: bool = True,
    ) -> Run:
        """Run the workflow (or resume ``run_id``) and return the finished ``bn.Run``.

        Without ``run_id`` it resumes this workflow's newest run with the same params and
        models that a process that is gone (a killed kernel) left unfinished, and says so;
        ``resume=False`` starts a new run instead (docs/concepts.md "After a crash").

        Everything is checked before anything is written: the graph, the options, the
        database URL. ``budget`` (USD) caps the run's LLM calls, over every execution of
        the run (a resume may raise it); default: the workflow's ``budget``, or on a
        resume the run's stored one (docs/spend_less.md). ``workers=True``: submit the run
        to the worker processes (Postgres, ``wf.submit``), show it and wait for it;
        interrupting detaches; run again while that run is pending or running on the
        workers, it follows it instead of submitting another (``resume=False``: submit).
        """

        resume = _check_bool(f"workflow {self.name!r}: run()", "resume", resume)
        if _check_bool(f"workflow {self.name!r}: run()", "workers", workers):
            from ._workers_front import run_on_workers

            where = f"workflow {self.name!r}: run()"
            model_map = _check_run_options(self, where, concurrency, models)
            db = _check_db(db) or self.db

            def following(found: Following) -> None:
                _tell(found.message(_name_in_notebook(self)), display)

            self.last_run = await run_on_workers(
                self, params, run_id, budget, db, concurrency, model_map, display,
                _show_progress, resume, following,
            )  # fmt: skip
            return self.last_run

        graph = self.graph()
        cap = parse_budget(f"workflow {self.name!r}: run()", budget)
        if cap is not None:
            graph = replace(graph, budget=cap)
        where = f"workflow {self.name!r}: run()"
        model_map = _check_run_options(self, where, concurrency, models)
        if run_id is not None:
            if not isinstance(run_id, str) or not run_id.strip():
                raise ConfigurationError(
                    f"{where}: run_id must be a non-empty string, got {run_id!r}"
                )
            _check_key_length("run_id", run_id)
            if not resume:
                raise ConfigurationError(
                    f"{where}: run_id={run_id!r} resumes that run (or names a new one), "
                    "resume=False asks for a new run: give one of the two"
                )
        _check_display(display)  # before execute_run writes the run row
        db = _check_db(db) or self.db
        return await _run_here(
            self, graph, params, run_id, db, concurrency, model_map, display, resume
        )

    async def submit(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        db: str | None = None,
        concurrency: int = 32,
        models: Mapping[str, str] | None = None,
        by_value: bool | None = None,
    ) -> SubmittedRun:
        """Queue a run for the worker processes (``baton-nb worker``) and return at once.

        Postgres only. A workflow importable from a module goes by import path and a hash
        of its steps' code; one defined in a notebook goes by value (cloudpickle), or
        always with ``by_value=True`` (docs/workers.md). ``await run.wait()``."""
        from ._workers_front import submit

        where = f"workflow {self.name!r}: submit()"
        model_map = _check_run_options(self, where, concurrency, models)
        if by_value is not None:
            _check_bool(where, "by_value", by_value)
        db = _check_db(db) or self.db
        self.last_run = await submit(self, params, db, concurrency, model_map, by_value)
        return self.last_run


def _check_run_options(
    wf: Workflow, where: str, concurrency: Any, models: Mapping[str, str] | None
) -> dict[str, str]:
    """``concurrency`` and the ``models`` map of ``run()`` / ``submit()``, checked."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"{where}: concurrency must be an int >= 1, got {concurrency!r}")
    model_map = _check_models(where, models)
    _check_model_steps(where, model_map, wf._steps)
    return model_map


async def _run_here(
    wf: Workflow,
    graph: GraphSpec,
    params: Mapping[str, Any] | None,
    run_id: str | None,
    db: str | None,
    concurrency: int,
    model_map: dict[str, str],
    display: bool | str | None,
    resume: bool = True,
) -> Run:
    """``wf.run()`` in this process, its options checked: progress shown from the start,
    ``wf.last_run`` live, an interrupt ending in the short resume message, the run a
    dead process left unfinished resumed (``resume``) with one line saying so (or, when
    only its steps' code differs, named in one line with the call that resumes it)."""
    from .runtime import execute_run

    shown: list[Any] = []
    live: list[Run] = []

    def started(run: Run) -> None:
        wf.last_run = run  # the live Run from its start: wf.last_run.cancel() works
        live.append(run)
        shown.append(_show_progress(run, display))

    def resuming(found: Unfinished | Edited) -> None:
        _tell(found.message(_name_in_notebook(wf), model_map), display)

    try:
        run = await execute_run(
            graph,
            params=params,
            run_id=run_id,
            db=db,
            concurrency=concurrency,
            models=model_map,
            on_start=started,
            resume_unfinished=resume,
            on_resume=resuming,
        )
    except BaseException as exc:
        if live and _stopped(exc, live[0]):
            _short_traceback(exc, live[0].resume_message(_name_in_notebook(wf)))
        elif live and isinstance(exc, RunLocked) and live[0].status == "taken_over":
            _short_traceback(exc, f"RunLocked: {exc}")  # who has the run, how to follow it
        elif not live and isinstance(exc, RunLocked) and run_id is None:
            _short_traceback(exc, f"RunLocked: {exc}")  # a second re-run: whose run, what next
        elif isinstance(exc, AnswerStoredElsewhere):  # another writer of the run: what to do
            _short_traceback(exc, f"StorageError: {exc}")
        raise
    finally:
        for handle in shown:
            if handle is not None:
                handle.close()
    wf.last_run = run
    if run.budget_stop:  # it ends with the line that resumes the run: named as printed
        name = _name_in_notebook(wf)
        run.budget_stop = run.budget_stop.replace("await wf.run(", f"await {name}.run(")
    if live and run.status == "cancelled" and display is not False:
        print(run.resume_message(_name_in_notebook(wf)))
    return run


def _tell(line: str, display: bool | str | None) -> None:
    """The line that names a run picked up (resumed, followed) or left for a new one."""
    if display is False:
        # Nothing is shown, yet picking up an old run (or leaving one for a new run that
        # pays again) must not go unnoticed: a warning of the baton_nb logger, which
        # Python prints on stderr when logging is not set up.
        logger.warning("%s", line)
        return
    logger.info("%s", line)
    print(line)


def _stopped(exc: BaseException, run: Run) -> bool:
    """The run was stopped from outside (kernel interrupt, Ctrl-C, a cancelled task) and
    stored as cancelled: a resumable run, not an error in the library."""
    import asyncio

    return isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) and run.status in (
        "cancelled",
        "failed",
    )


def _short_traceback(exc: BaseException, message: str) -> None:
    """IPython shows an exception through its ``_render_traceback_``, when it has one: the
    cell ends with ``message`` instead of frames through the library's internals."""
    lines = message.splitlines()
    with contextlib.suppress(AttributeError):  # no __dict__: the usual traceback then
        exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]


def _name_in_notebook(wf: Workflow) -> str:
    """The name the notebook's namespace gives ``wf`` (for the resume line), else ``wf``."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    namespace = getattr(shell, "user_ns", None) or {}
    for name, value in list(namespace.items()):
        if value is wf and name.isidentifier() and not name.startswith("_"):
            return str(name)
    return "wf"


def _show_progress(run: Run, display: bool | str | None) -> Any:
    """The widget in a kernel, a text line in a terminal (``display``); has ``close()``.

    Nothing to show and no IPython in this process (a script's run with ``display=False``,
    or with the default and no terminal on stderr): None, without importing the widget
    package (ipywidgets, anywidget, IPython: ~0.25 s of a process's first run,
    docs/performance.md "Sixth round"), as ``widget.attach`` would answer."""
    import sys

    quiet = display is False or (display is None and not sys.stderr.isatty())
    if quiet and "IPython" not in sys.modules:
        return None
    from .widget import attach

    return attach(run, display)


def _identity(fn: Callable[..., Any]) -> tuple[str, str]:
    """What makes a step function the same one when its cell runs again."""
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", "")
    return str(module), str(qualname)


def _check_redefinition(workflow: str, old: StepSpec, fn: Callable[..., Any]) -> None:
    """A step added again under its name: the same function (same module and qualified
    name: its cell ran again) replaces it; another function is refused (DESIGN §2)."""
    if _identity(old.fn) == _identity(fn):
        return
    was, now = (".".join(part for part in _identity(f) if part) for f in (old.fn, fn))
    raise ValueError(
        f"workflow {workflow!r} already has a step named {old.name!r}, defined by {was}; "
        f"{now} cannot take the same name. Give it another name (@wf.step('other_name') or "
        f"wf.add('other_name', fn)), or rename the function; to drop the old step, create "
        f"the workflow again (bn.Workflow({workflow!r}, ...)) and define its steps"
    )


def _fn_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ConfigurationError(
            f"cannot name a step after {fn!r}: give its name, @wf.step('name') or "
            "wf.add('name', fn)"
        )
    return name


def _checked_order(
    workflow: str, steps: Mapping[str, StepSpec], models: Mapping[str, str]
) -> list[str]:
    """``Workflow.validate``: the steps in topological order, or the error to fix."""
    if not steps:
        raise ConfigurationError(f"workflow {workflow!r} has no steps; add some with @wf.step()")
    _check_params(steps)
    order = topological_order({name: list(spec.deps) for name, spec in steps.items()})
    for spec in steps.values():
        if spec.map_over is not None and spec.map_over not in spec.deps:
            raise ConfigurationError(f"step {spec.name!r}: map_over={spec.map_over!r} is not a dep")
    _check_model_steps(f"Workflow {workflow!r}", models, steps)
    return order


def _check_params(steps: Mapping[str, StepSpec]) -> None:
    """A step's parameter (read as a dep) or map_over= that names no step: said as what the
    user wrote, not as a ``deps`` they never wrote. In a map step, the parameter is most
    often the item: say ctx.item."""
    known = ", ".join(steps)
    for spec in steps.values():
        if spec.map_over is not None and spec.map_over not in steps:
            raise ConfigurationError(
                f"step {spec.name!r}: map_over={spec.map_over!r} names no step (steps: "
                f"{known}); name the step whose list it maps over, added before it"
            )
        stray = [p for p in spec.kwarg_deps if p not in steps]
        if stray and spec.map_over is None:
            raise ConfigurationError(
                f"step {spec.name!r}: parameter {stray[0]!r} names no step (steps: {known}); "
                "each parameter after ctx is read as a dependency and gets the result of "
                f"the step it names: rename it to one of the steps, add a step {stray[0]!r}, "
                f"or give it a default value ({stray[0]}=None: a parameter with a default "
                "is not a dependency)"
            )
        if stray:
            raise ConfigurationError(
                f"step {spec.name!r}: parameter {stray[0]!r} names no step (steps: "
                f"{', '.join(steps)}); a map child gets its item as ctx.item, not as a "
                f"parameter: write `async def {spec.name}(ctx)` and read ctx.item (the "
                "other parameters name deps)"
            )


def _make_spec(wf: Workflow, name: str, fn: Callable[..., Any], opts: dict[str, Any]) -> StepSpec:
    where = f"step {name!r}"
    params = _parameters(fn)
    wants_ctx = bool(params) and (params[0] == "ctx" or _is_context_annotated(fn, params[0]))
    dep_params = params[1:] if wants_ctx else params
    explicit = opts.get("deps")
    if explicit is None:
        deps = tuple(dep_params)
    else:
        deps = tuple(_check_str_list(name, "deps", explicit))
        if len(set(deps)) != len(deps):
            raise ConfigurationError(f"step {name!r}: deps lists a step twice: {list(deps)}")
    unknown_params = [p for p in dep_params if p not in deps]
    if unknown_params:
        raise ConfigurationError(
            f"step {name!r}: parameter(s) {unknown_params} are not deps; name them in deps= "
            "or give the function only (ctx) plus one parameter per dependency"
        )
    models = tuple(_check_model_list(name, opts.get("models")))
    map_over = opts.get("map_over")
    if map_over is not None:
        if not isinstance(map_over, str) or not map_over:
            raise ConfigurationError(
                f"step {name!r}: map_over must be a step name (str), got {map_over!r}"
            )
        if models:
            raise ConfigurationError(f"step {name!r}: use models= or map_over=, not both")
        if map_over not in deps:
            deps = (*deps, map_over)
    elif opts.get("map_key") is not None:
        raise ConfigurationError(f"step {name!r}: map_key needs map_over= (it names map children)")
    if name in deps:
        option = "map_over" if map_over == name else "deps"
        raise ConfigurationError(
            f"step {name!r}: {option} names the step itself (it depends on itself)"
        )
    return StepSpec(
        name=name,
        fn=fn,
        deps=deps,
        kwarg_deps=tuple(dep_params),
        dep_types=model_annotations(fn, dep_params),
        wants_ctx=wants_ctx,
        is_async=_is_async(fn),
        max_attempts=_check_int(name, "max_attempts", opts.get("max_attempts", 3), minimum=1),
        timeout=_check_timeout(name, opts.get("timeout")),
        backoff=_check_callable(name, "backoff", opts.get("backoff")) or default_backoff,
        ignore_cancelled=_check_bool(
            where, "ignore_cancelled", opts.get("ignore_cancelled", wf.ignore_cancelled)
        ),
        ignore_discarded=_check_bool(
            where, "ignore_discarded", opts.get("ignore_discarded", wf.ignore_discarded)
        ),
        models=models,
        quorum=_check_quorum(name, opts.get("quorum"), models, map_over),
        map_over=map_over,
        map_key=_check_callable(name, "map_key", opts.get("map_key")),
        on_dep_cancelled=_check_callback(name, "on_dep_cancelled", opts.get("on_dep_cancelled")),
        on_dep_discarded=_check_callback(name, "on_dep_discarded", opts.get("on_dep_discarded")),
        concurrency_key=_check_key(name, opts.get("concurrency_key")),
        debug=None if opts.get("debug") is None else _check_bool(where, "debug", opts["debug"]),
        batch=_check_batch(name, opts.get("batch", False), models, map_over),
        fail_fast=_check_fail_fast(name, opts.get("fail_fast", False), models, map_over),
        budget=parse_budget(where, opts.get("budget")),
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # An object with ``async def __call__`` is an async step too.
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _parameters(fn: Callable[..., Any]) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ["ctx"]
    out = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not p.empty and p.name != "ctx":
            continue
        out.append(p.name)
    return out


def _is_context_annotated(fn: Callable[..., Any], param: str) -> bool:
    annotation = getattr(fn, "__annotations__", {}).get(param)
    return annotation is not None and "Context" in str(getattr(annotation, "__name__", annotation))


def _check_key_length(what: str, value: str) -> None:
    if len(value) > MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"{what} is {len(value):,} characters long; at most {MAX_KEY_LENGTH} are allowed "
            f"(it is a key of the database's indexes): shorten it ({value[:40]!r}...)"
        )


def _check_bool(where: str, option: str, value: Any) -> bool:
    """``where``: whose option it is (``step 'x'``, ``Workflow 'w'``), for the message."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {option} must be True or False, got {value!r}")
    return value


def _check_int(step: str, option: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"step {step!r}: {option} must be an int >= {minimum}, got {value!r}"
        )
    return value


def _check_timeout(step: str, value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)  # nan and inf: "no timeout" is timeout=None
        or value <= 0
    ):
        raise ConfigurationError(
            f"step {step!r}: timeout must be seconds > 0 (a finite number; None for no "
            f"limit), got {value!r}"
        )
    return float(value)


def _check_str_list(step: str, option: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"step {step!r}: {option} must be a list of names, got {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"step {step!r}: {option} must hold strings, got {item!r}")
    return items


def _check_quorum(step: str, value: Any, models: Sequence[str], map_over: Any) -> int | None:
    if value is None:
        return None
    if not models and map_over is None:
        raise ConfigurationError(f"step {step!r}: quorum needs models= or map_over=")
    _check_int(step, "quorum", value, minimum=1)
    if models and value > len(models):
        raise ConfigurationError(
            f"step {step!r}: quorum={value} is more than the {len(models)} models"
        )
    return int(value)


def _check_batch(step: str, value: Any, models: Sequence[str], map_over: Any) -> bool:
    batch = _check_bool(f"step {step!r}", "batch", value)
    if batch and not models and map_over is None:
        raise ConfigurationError(
            f"step {step!r}: batch=True needs map_over= or models= (a batch gathers the calls "
            "of a fan-out's children)"
        )
    return batch


def _check_fail_fast(step: str, value: Any, models: Sequence[str], map_over: Any) -> bool:
    fail_fast = _check_bool(f"step {step!r}", "fail_fast", value)
    if fail_fast and not models and map_over is None:
        raise ConfigurationError(
            f"step {step!r}: fail_fast=True needs map_over= or models= (it says when a "
            "fan-out's children stop once one fails)"
        )
    return fail_fast


def _check_callable(step: str, option: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigurationError(f"step {step!r}: {option} must be callable, got {value!r}")
    return value


def _check_callback(step: str, option: str, value: Any) -> DepCallback | None:
    return _check_callable(step, option, value)  # type: ignore[no-any-return]


def _check_key(step: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"step {step!r}: concurrency_key must be a string, got {value!r}")
    return value


def _check_display(display: Any) -> None:
    # Same rule and message as widget.attach (which runs only after the run row is written).
    if not (display is None or isinstance(display, bool) or display in ("text", "widget")):
        raise ConfigurationError(
            f"display must be None (auto), True, False, 'text' or 'widget'; got {display!r}"
        )


def _check_db(db: Any) -> str | None:
    if db is None:
        return None
    from ._dburl import resolve_url

    return resolve_url(db)


def _check_models(where: str, models: Mapping[str, str] | None) -> dict[str, str]:
    if models is None:
        return {}
    if not isinstance(models, Mapping):
        raise ConfigurationError(
            f"{where}: models must be a dict {{step: 'provider/model'}}, got {models!r}"
        )
    for step, model in models.items():
        if not isinstance(step, str) or not _is_model_name(model):
            raise ConfigurationError(
                f"{where}: models must map step names to 'provider/model' strings, got "
                f"{step!r}: {model!r}"
            )
    return dict(models)


def _check_model_steps(where: str, models: Mapping[str, str], steps: Mapping[str, Any]) -> None:
    for step in models:
        if step not in steps:
            raise ValueError(
                f"{where}: models= names unknown step {step!r} (steps: {', '.join(steps)})"
            )


def _is_model_name(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    provider, _, model = value.partition("/")
    return bool(provider) and bool(model)


def _check_model_list(step: str, value: Any) -> list[str]:
    """A step's ``models=``: 'provider/model' names, each once."""
    if value is None:
        return []
    models = _check_str_list(step, "models", value)
    if not models:
        raise ConfigurationError(
            f"step {step!r}: models=[] names no model; list at least one 'provider/model', "
            "or leave models= out for a single call"
        )
    for model in models:
        if not _is_model_name(model):
            raise ConfigurationError(
                f"step {step!r}: models must hold 'provider/model' names, got {model!r}"
            )
    if len(set(models)) != len(models):
        raise ConfigurationError(f"step {step!r}: models lists a model twice: {models}")
    return models


def _check_limits(where: str, limits: Mapping[str, int] | None) -> dict[str, int]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise ConfigurationError(
            f"{where}: limits must be a dict {{concurrency_key: int}}, got {limits!r}"
        )
    for key, value in limits.items():
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"{where}: limits keys must be concurrency_key strings, got {key!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{where}: limits[{key!r}] must be an int >= 1, got {value!r}")
    return dict(limits)
