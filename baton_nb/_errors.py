"""Every exception baton_nb raises on purpose. One place, so users can catch them."""

from __future__ import annotations

__all__ = [
    "AnswerStoredElsewhere",
    "BatonError",
    "BudgetReached",
    "ConfigurationError",
    "CycleError",
    "OutputValidationError",
    "ProviderError",
    "ResultNotSerializable",
    "RunLocked",
    "RunNotFound",
    "RunRefused",
    "SchemaVersionError",
    "StorageError",
    "UnsupportedFeature",
    "WorkflowFailed",
    "describe_error",
    "lease_not_held",
    "save_failed",
    "unwrap_group",
]


def describe_error(exc: BaseException) -> str:
    """``TypeName: message`` (or the type's name alone): how a step's error is stored."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BatonError(Exception):
    """Base class of baton_nb's own errors."""


class ConfigurationError(BatonError, ValueError):
    """An option, URL or setting is invalid; the message says which and how to fix it."""


class CycleError(ValueError):
    """The workflow graph has a cycle; the message names it: ``cycle: a -> b -> a``."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__("cycle: " + " -> ".join(path))


class StorageError(BatonError):
    """The database cannot be reached or used."""


class AnswerStoredElsewhere(StorageError):
    """A commit of a run found one of its answers stored already by another process
    running steps of the same run (``save_failed``): nothing of the commit was written."""


def save_failed(run_id: str, exc: BaseException) -> StorageError:
    """The error of a run's commit that the database refused (``GroupCommit``): one that
    met another writer's answer to the same call (``uq_workflow_completions_call``) says
    so, and what to do, rather than the database's words alone."""
    text = str(exc)
    if "uq_workflow_completions_call" not in text:
        return StorageError(f"could not save run {run_id}: {text}")
    return AnswerStoredElsewhere(
        f"could not save run {run_id}: an answer this execution got was stored meanwhile "
        "by another process running steps of the same run (workers still finishing a "
        "cancelled run, another resume of it); nothing of this commit was written, what "
        "was stored before is kept. Wait until nothing else runs it, then resume it again "
        f'(wf.run(run_id="{run_id}") replays the answers stored)'
    )


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of baton_nb understands."""


class RunNotFound(BatonError, LookupError):
    """No run with that id in the database."""


class RunLocked(BatonError):
    """Another process holds the lease on this run and is executing it.

    Raised when an execution cannot take the run's lease, and when an execution loses it
    (taken over by another process, its live Run then ``taken_over``): ``run_id`` and
    ``owner`` (the lease's holder now, when known) say which run and who has it."""

    def __init__(
        self, message: str, *, run_id: str | None = None, owner: str | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.owner = owner


def lease_not_held(run_id: str | None, owner: str, unwritten: str = "this commit") -> RunLocked:
    """A write refused because ``owner`` no longer holds ``run_id``'s lease (every store,
    every guarded write: one message)."""
    return RunLocked(
        f"run {run_id}: its lease is no longer held by {owner} (another process took it "
        f"over, or it was given back); nothing of {unwritten} was written"
    )


class RunRefused(BatonError):
    """A worker refused a submitted run (its code differs from the worker's, or it was
    shipped by value to workers that refuse that); the message says why and what to do."""


class ResultNotSerializable(BatonError, TypeError):
    """A step returned a value that cannot be stored as JSON."""


class WorkflowFailed(BatonError):
    """Raised by ``Run.raise_for_status()`` when the run did not complete."""

    def __init__(self, run_id: str, status: str, failed_steps: list[str], errors: dict[str, str]):
        self.run_id = run_id
        self.status = status
        self.failed_steps = failed_steps
        self.errors = errors
        detail = "; ".join(f"{k}: {v}" for k, v in errors.items() if v)
        msg = f"run {run_id} {status}; failed steps: {', '.join(failed_steps) or 'none'}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ProviderError(BatonError):
    """An LLM provider answered with an error (after in-call retries, if it was retryable).

    ``status`` is the HTTP status (``None`` for connection errors and timeouts);
    ``retryable`` says whether a later attempt could succeed; ``retry_after`` is how many
    seconds the provider asked to wait before the next request (its ``Retry-After``
    header or the retry hint in its error body, as left when the error was raised), or
    ``None``. A step's next attempt waits at least that long. The message carries the
    provider's own words and never a secret.
    """

    def __init__(
        self,
        provider: str,
        status: int | None,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        where = f"{provider} HTTP {status}" if status is not None else provider
        super().__init__(f"{where}: {message}")


class UnsupportedFeature(ConfigurationError):
    """A request asks a provider for something it cannot do; raised before anything is sent.

    ``provider``, ``model`` and ``feature`` say what; the message says what to do instead.
    """

    def __init__(self, provider: str, model: str, feature: str, hint: str = "") -> None:
        self.provider = provider
        self.model = model
        self.feature = feature
        message = f"{provider}/{model} does not support {feature}"
        super().__init__(message + (f": {hint}" if hint else ""))


class OutputValidationError(BatonError, ValueError):
    """A structured answer (``response_format=``) is not valid JSON or fails its schema.

    The call was made and paid for: ``completion`` is the answer as received (its usage
    and cost are recorded); the step attempt fails and retries by the step's policy.
    """

    def __init__(self, message: str, completion: object) -> None:
        self.completion = completion
        super().__init__(message)


def unwrap_group(exc: BaseException) -> BaseException:
    """The one real error inside (nested) exception groups, if there is exactly one."""
    inner = getattr(exc, "exceptions", None)
    while inner is not None and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


class BudgetReached(BatonError):
    """A call was not sent: its worst-case cost would take a budget past its cap
    (DESIGN §11). The run stops ``cancelled`` and resumable; ``wf.run(run_id=...,
    budget=...)`` with a higher budget goes on without paying again for what was paid."""
