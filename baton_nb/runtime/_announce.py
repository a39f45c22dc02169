"""What the runtime tells the world, in one place: the live ``Run`` (the read model, through
its update methods) and the events on the run's topics (DESIGN §7)."""

from __future__ import annotations

from datetime import datetime

from .._run import Run
from .._runview import StepInfo
from .._states import RunStatus
from ..events import (
    BatchUpdated,
    StepUpdated,
    WorkflowFinished,
    has_subscribers,
    publish,
    topic_all,
    topic_workflow,
)
from ..store import CallRecord, LogRow, ProviderBatchRow, utcnow
from ._node import Node

__all__ = ["Announcer"]


class Announcer:
    """Keeps a run's ``Run`` current and publishes its events."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.label = run.workflow
        self.topics = (topic_all(), topic_workflow(run.id))

    def added(self, infos: list[StepInfo]) -> None:
        """Nodes made mid-run (a map's children), as just stored: their nodes hold the same."""
        add_step = self.run.add_step
        for info in infos:
            add_step(info)

    def unstored(self, group: Node, count: int) -> None:
        """``count`` of a map's items have no stored child yet (counted pending meanwhile)."""
        self.run.steps[group.name].unstored = count

    def children(self, group: Node) -> None:
        """A fan-out group's children, in order (a map's, once expanded)."""
        self.run.set_children(group.name, [c.name for c in group.children])

    def result(self, node: Node) -> None:
        """``node`` completed: its result (as downstream steps see it) in ``run.results``."""
        self.run.set_result(node.name, node.result)

    def step(self, node: Node) -> None:
        """``StepUpdated`` for ``node``'s state now (to subscribers, if any; the run's
        followers were told when it changed: ``Driver.mark``)."""
        if not has_subscribers(*self.topics):
            return
        event = StepUpdated(
            workflow_id=self.run.id,
            workflow_label=self.label,
            step_name=node.name,
            worker=node.spec.worker,
            state=node.state,
            job_id=node.id,
            attempt=node.attempt,
            has_result=node.has_result,
            error=node.error,
            timestamp=utcnow(),
            parent=node.parent.name if node.parent is not None else None,
            max_attempts=node.max_attempts,
        )
        publish(event, *self.topics)

    def call(self, call: CallRecord) -> None:
        self.run.add_call(call)
        if self.run.followers:
            self.run.step_changed(call.step)
        if has_subscribers(*self.topics):
            publish(call.event(self.label), *self.topics)

    def log(self, log: LogRow) -> None:
        self.run.add_log(log)

    def batch(self, batch: ProviderBatchRow) -> None:
        """A provider batch as it is now: in the live Run, and ``BatchUpdated``."""
        self.run.sync_batch(batch)
        if self.run.followers:
            self.run.step_changed(batch.step)
        if has_subscribers(*self.topics):
            event = BatchUpdated(
                workflow_id=self.run.id,
                workflow_label=self.label,
                step_name=batch.step,
                key=batch.key,
                provider=batch.provider,
                model=batch.model,
                state=batch.state.value,
                remote_id=batch.remote_id,
                request_count=batch.request_count,
                succeeded=batch.succeeded,
                failed=batch.failed,
                cost=batch.cost,
                saved=batch.saved,
                timestamp=utcnow(),
            )
            publish(event, *self.topics)

    def ended(self, status: RunStatus, failed: list[str], at: datetime) -> None:
        """The run ended: its status (announced by ``finished`` once stored)."""
        self.run.set_status(status, failed_steps=failed, finished_at=at)

    def finished(self, status: RunStatus, failed: list[str], at: datetime) -> None:
        """``WorkflowFinished``, always published (subscribers or not); the run's followers
        told."""
        self.run.run_ended()
        publish(WorkflowFinished(self.run.id, self.label, status, list(failed), at), *self.topics)

    def taken_over(self, owner: str | None, at: datetime) -> None:
        """This execution lost the run's lease (to ``owner``, when known): the live Run
        says ``taken_over``, and the execution's one ``WorkflowFinished`` does; no step is
        announced cancelled (they go on there); the run's followers told its end here."""
        run = self.run
        run.set_status(RunStatus.TAKEN_OVER, taken_over_by=owner)
        run.run_ended()
        failed = list(run.failed_steps)
        event = WorkflowFinished(run.id, self.label, RunStatus.TAKEN_OVER, failed, at, owner)
        publish(event, *self.topics)
