"""``WorkersNotice``: the line ``wf.run(..., workers=True)`` shows from what the worker
tables say, for workers on other hosts (seen by their heartbeats only)."""

from __future__ import annotations

from datetime import datetime, timezone

from baton_nb.runtime import WorkersNotice
from baton_nb.runtime._workers_notice import STALE_BEAT
from baton_nb.store import Coordination, SubmissionRow, WorkerBeat

URL = "postgresql://u:secret@db/baton"


def _notice(code_blob: bytes | None = None) -> WorkersNotice:
    notice = WorkersNotice("summaries")
    submission = SubmissionRow(
        run_id="r1",
        workflow="summaries",
        code_hash="h",
        created_at=datetime.now(timezone.utc),
        code_ref=None if code_blob else "pipeline:wf",
        code_blob=code_blob,
    )
    notice.submitted(submission, URL)
    return notice


def _beat(pid: int, age: float = 1.0, workflows: tuple[str, ...] = ("summaries",)) -> WorkerBeat:
    return WorkerBeat(id=f"far:{pid}:abc", host="far", pid=pid, workflows=list(workflows), age=age)


def test_no_worker_names_the_command_without_the_password() -> None:
    text = _notice().text(Coordination(None, None, [_beat(1, workflows=("other",))]))
    assert text == (
        "no live worker takes runs of 'summaries' on this database: start one with "
        "`baton-nb worker pipeline:wf --db postgresql://u:***@db/baton` (docs/workers.md); "
        "the run waits in the queue"
    )
    # a worker whose heartbeat is old is not live; one serving the workflow is
    assert _notice().text(Coordination(None, None, [_beat(1, age=STALE_BEAT + 1)])) == text
    assert _notice().text(Coordination(None, None, [_beat(1)])) is None


def test_a_run_by_value_is_taken_by_any_worker() -> None:
    notice = _notice(code_blob=b"x")
    assert notice.text(Coordination(None, None, [_beat(1, workflows=())])) is None
    text = notice.text(Coordination(None, None, []))
    assert text is not None and "`baton-nb worker --db postgresql://u:***@db/baton`" in text


def test_a_coordinator_without_heartbeat_then_the_one_that_took_over() -> None:
    notice = _notice()
    live = Coordination("far:1:tag", 25.0, [_beat(1), _beat(2)])
    assert notice.text(live) is None
    silent = Coordination("far:1:tag", 4.2, [_beat(1, age=STALE_BEAT + 1), _beat(2)])
    assert notice.text(silent) == (
        "worker far:1 stopped answering; another takes the run over when its lease ends (≤ 5 s)"
    )
    lapsed = Coordination("far:1:tag", -1.0, [_beat(2)])
    assert notice.text(lapsed) == (
        "worker far:1 stopped answering; its lease ended: another worker takes the run over"
    )
    taken = "worker far:1 stopped answering; the run was taken over by far:2"
    assert notice.text(Coordination("far:2:tag", 29.0, [_beat(2)])) == taken
    assert notice.text(Coordination("far:2:tag", 25.0, [_beat(2)])) == taken  # it stays
    assert notice.taken == taken


def test_a_coordinator_that_answers_again_is_not_said_lost() -> None:
    notice = _notice()
    notice.text(Coordination("far:1:tag", 4.0, [_beat(1, age=STALE_BEAT + 1)]))
    assert notice.text(Coordination("far:1:tag", 28.0, [_beat(1)])) is None
    assert notice.taken is None
