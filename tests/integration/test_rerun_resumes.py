"""Running a workflow again after its process was killed resumes the run it left
unfinished (DESIGN §4): nothing paid twice, counted at the fake provider; and the runs it
must never resume (stopped by the user or a budget, finished, owned by a live process,
other params or models, submitted to workers, ``resume=False``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

import baton_nb as bn
from baton_nb.cli import main as cli_main
from baton_nb.store import Store, utcnow
from baton_nb.store._sql_rows import RUNS
from tests.conftest import POSTGRES_URL
from tests.fakes.provider_server import FakeProviderServer
from tests.integration._process import dead_owner, kill9, load_module, paid_by_run, workflow_process

pytestmark = pytest.mark.anyio

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import anyio
    import baton_nb as bn

    def build(db, name):
        wf = bn.Workflow(name, db=db)

        @wf.step()
        async def items(ctx):
            return [f"item {i}" for i in range(ctx.params["n"])]

        @wf.step(map_over="items")
        async def ask(ctx):
            reply = await ctx.complete(
                model="openai/gpt-4o-mini", prompt=f"{ctx.run_id} {ctx.item}", max_tokens=5
            )
            marks = os.environ.get("HANG_MARKS")
            if marks and int(ctx.item.split()[1]) >= int(os.environ["HANG_FROM"]):
                (Path(marks) / ctx.item).write_text("paid")  # paid, then never finishes
                await anyio.sleep(600)
            return reply.text

        return wf

    if __name__ == "__main__":
        db, base_url, name, n = sys.argv[1:5]
        bn.configure(providers={
            "openai": {"base_url": base_url + "/v1", "api_key": "sk-test-openai-0123456789abcdef"},
        })
        anyio.run(lambda: build(db, name).run(params={"n": int(n)}, concurrency=4, display=False))
    """
)
N = 12
HANG_FROM = 6
CONCURRENCY = 4


async def _wait_hung(
    proc: subprocess.Popen[bytes], server: FakeProviderServer, db: str, name: str, marks: Path
) -> tuple[str, int]:
    """The run of the process, once every slot holds a paid call that hangs (nothing more
    is called) and every call paid is stored (what a kill may not lose); its id and the
    number of calls paid."""
    with anyio.fail_after(60):
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            if len(list(marks.iterdir())) == CONCURRENCY:
                async with await Store.open(db) as store:
                    [row] = await store.list_runs(workflow=name)
                    stored = await store.get_stats([row.id])
                if len(stored) == len(server.requests):
                    return row.id, len(stored)
            await anyio.sleep(0.05)


@pytest.mark.slow  # a real subprocess
async def test_running_again_after_sigkill_resumes_and_pays_nothing_twice(
    fake_providers: FakeProviderServer,
    db_url: str,
    tmp_path: Path,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"rerun-{unique}"
    script = tmp_path / "rerun.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "HANG_MARKS": str(marks), "HANG_FROM": str(HANG_FROM)}
    wf = load_module(script, f"rerun_{unique}").build(db_url, name)
    caplog.set_level(logging.INFO, logger="baton_nb")
    async with workflow_process(
        script, db_url, fake_providers.base_url, name, str(N), env=env
    ) as proc:
        crashed, paid_before = await _wait_hung(proc, fake_providers, db_url, name, marks)
        [alive] = await bn.runs(db_url, workflow=name)
        assert alive.id == crashed and not alive.abandoned  # its process is alive
        # Another notebook runs the same workflow meanwhile: its owner is alive, so this
        # is a second run of its own, not a resume.
        other = await wf.run(params={"n": N}, display=False)
        assert other.id != crashed and other.status == "completed"
        assert "resuming run" not in caplog.text
        kill9(proc)

    async with await Store.open(db_url) as store:
        row = await store.get_run(crashed)
        assert row is not None and row.status == "running"  # as the kill left it
    [listed] = [r for r in await bn.runs(db_url, workflow=name) if r.id == crashed]
    assert listed.abandoned and listed.status == "running"  # the owner's pid is gone
    assert listed.to_dict()["abandoned"] is True
    assert f"{crashed}  {name}  abandoned" in str(await bn.runs(db_url, workflow=name))
    # the word the listing shows selects it, and show and Run.load call it the same
    assert [r.id for r in await bn.runs(db_url, workflow=name, status="abandoned")] == [crashed]
    assert crashed in [r.id for r in await bn.runs(db_url, workflow=name, status="running")]
    loaded = await bn.Run.load(crashed, db=db_url)
    assert loaded.abandoned and f"{name!r} abandoned:" in repr(loaded)
    capsys.readouterr()
    argv = ["runs", "--status", "abandoned", "--workflow", name, "--db", db_url]
    assert await anyio.to_thread.run_sync(cli_main, argv) == 0
    assert f"{crashed}  {name}  abandoned" in capsys.readouterr().out
    assert await anyio.to_thread.run_sync(cli_main, ["show", crashed, "--db", db_url]) == 0
    assert f"workflow {name!r}  abandoned\n" in capsys.readouterr().out

    resumed = await wf.run(params={"n": N}, display=False)  # what a re-run cell does
    assert resumed.id == crashed and resumed.status == "completed"
    assert len(resumed.results["ask"]) == N
    line = next(r.getMessage() for r in caplog.records if "resuming run" in r.getMessage())
    assert line.startswith(f"resuming run {crashed} of {name!r}, left unfinished by ")
    done = 1 + paid_before - CONCURRENCY  # the list of items and the children completed
    assert f"({done} of {N + 1} steps done)" in line
    assert line.endswith("for a new run instead: await wf.run(..., resume=False)")

    paid = paid_by_run(fake_providers)
    assert set(paid) == {crashed, other.id}
    for run_id in (crashed, other.id):  # every item paid once per run, none twice
        assert paid[run_id] == Counter({f"item {i}": 1 for i in range(N)})
    async with await Store.open(db_url) as store:
        row = await store.get_run(crashed)
        assert row is not None and row.executions == 2

    # Finished now: the next run of the cell is a new one.
    again = await wf.run(params={"n": N}, display=False)
    assert again.id not in (crashed, other.id)


# ── the runs never resumed: a run left as a kill leaves it, then changed ─────────


def _two_steps(db: str, name: str, ran: list[str]) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        ran.append("first")
        return 1

    @wf.step()
    async def second(ctx: bn.Context, first: int) -> int:
        ran.append("second")
        return first + 1

    return wf


async def _left_unfinished(
    db: str, run_id: str, *, status: str = "running", owner: str | None = None, expired: bool
) -> None:
    """The run as a process killed in ``second`` leaves it (``status`` and the lease's
    owner and expiry as given)."""
    expires = utcnow() + timedelta(seconds=-3600 if expired else 3600)
    async with await Store.open(db) as store, store.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE workflow_nodes SET state = 'executing', result = NULL, "
                "has_result = false, finished_at = NULL WHERE run_id = :run AND step = 'second'"
            ),
            {"run": run_id},
        )
        await conn.execute(  # typed: stored as the store stores times
            sa.update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(status=status, finished_at=None, lease_owner=owner, lease_expires_at=expires)
        )


@pytest.mark.parametrize(
    ("owner", "expired"),
    [("dead-pid", False), ("elsewhere:4242:cafebabe", True)],
    ids=["this-host-pid-gone", "other-host-lease-expired"],
)
async def test_a_run_whose_owner_is_gone_is_resumed(
    db_url: str, unique: str, owner: str, expired: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []
    wf = _two_steps(db_url, f"gone-{unique}", ran)
    first = await wf.run(params={"k": 1}, display=False)
    holder = dead_owner() if owner == "dead-pid" else owner
    await _left_unfinished(db_url, first.id, owner=holder, expired=expired)
    ran.clear()
    run = await wf.run(params={"k": 1}, display="text")
    assert run.id == first.id and run.status == "completed" and ran == ["second"]
    out = capsys.readouterr().out
    assert (
        f"resuming run {first.id} of 'gone-{unique}', left unfinished by {holder} "
        "(1 of 2 steps done); for a new run instead: await wf.run(..., resume=False)"
    ) in out


async def test_a_resumed_step_and_group_keep_their_first_start(db_url: str, unique: str) -> None:
    """Durations count from a step's first start (docs/widget.md): a step, a map group and
    a child that were executing when their process died keep the start it stored."""
    wf = bn.Workflow(f"first-start-{unique}", db=db_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1, 2]

    @wf.step(map_over="items")
    async def work(ctx: bn.Context) -> int:
        return ctx.item * 2

    @wf.step()
    async def total(ctx: bn.Context, work: list[int]) -> int:
        return sum(work)

    first = await wf.run(display=False)
    cut = ("work", "work[1]", "total")
    expires = utcnow() + timedelta(seconds=3600)
    async with await Store.open(db_url) as store, store.engine.begin() as conn:
        await conn.execute(  # as a kill while work[1] and then total ran leaves them
            sa.text(
                "UPDATE workflow_nodes SET state = 'executing', result = NULL, "
                "has_result = false, finished_at = NULL WHERE run_id = :run AND step IN "
                "('work', 'work[1]', 'total')"
            ),
            {"run": first.id},
        )
        await conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.id == first.id)
            .values(
                status="running", finished_at=None, lease_owner=dead_owner(),
                lease_expires_at=expires,
            )
        )  # fmt: skip
    stored = await bn.Run.load(first.id, db=db_url)
    starts = {name: stored.steps[name].started_at for name in cut}
    assert all(start is not None for start in starts.values())

    resumed = await wf.run(display=False)
    assert resumed.id == first.id and resumed.status == "completed"
    assert resumed.results["total"] == 6
    again = await bn.Run.load(first.id, db=db_url)
    for run in (resumed, again):  # the live run, and what show and the widget read
        for name in cut:
            step = run.steps[name]
            assert step.started_at == starts[name], name
            assert step.finished_at is not None and step.finished_at >= starts[name]
    assert again.steps["work[0]"].started_at == stored.steps["work[0]"].started_at  # untouched


async def test_a_resume_with_display_false_is_a_logged_warning(
    db_url: str,
    unique: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing is printed with display=False, yet a script must learn that an old run was
    picked up: a WARNING of the ``baton_nb`` logger (on stderr when logging is not set up)."""
    ran: list[str] = []
    wf = _two_steps(db_url, f"quiet-{unique}", ran)
    first = await wf.run(display=False)
    await _left_unfinished(db_url, first.id, owner=dead_owner(), expired=False)
    caplog.set_level(logging.INFO, logger="baton_nb")
    run = await wf.run(display=False)
    assert run.id == first.id and run.status == "completed"
    assert capsys.readouterr().out == ""
    [record] = [r for r in caplog.records if "resuming run" in r.getMessage()]
    assert record.name == "baton_nb" and record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"resuming run {first.id} of 'quiet-{unique}'")
    assert record.getMessage().endswith("await wf.run(..., resume=False)")


@pytest.mark.parametrize(
    "case",
    [
        "cancelled",  # interrupted by the user, or stopped by a budget: told how to resume
        "failed",
        "completed",
        "owner-alive-elsewhere",
        "owner-alive-here",
        "other-params",
        "other-models",
        "submitted",
        "resume-false",
    ],
)
async def test_runs_never_resumed(db_url: str, unique: str, case: str) -> None:
    ran: list[str] = []
    wf = _two_steps(db_url, f"never-{unique}", ran)
    first = await wf.run(params={"k": 1}, display=False)
    status = case if case in ("cancelled", "failed", "completed") else "running"
    owner, expired = dead_owner(), False
    if case == "owner-alive-elsewhere":
        owner = "elsewhere:4242:cafebabe"  # its lease is being renewed
    elif case == "owner-alive-here":
        owner = f"{socket.gethostname()}:{os.getppid()}:cafebabe"
    await _left_unfinished(db_url, first.id, status=status, owner=owner, expired=expired)
    [listed] = await bn.runs(db_url, workflow=wf.name)
    assert listed.abandoned is (status == "running" and "alive" not in case)
    if case == "submitted":
        async with await Store.open(db_url) as store, store.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO workflow_submissions (run_id, workflow, code_hash, "
                    "concurrency, models, cancel_requested, created_at) "
                    "VALUES (:run, :wf, 'h', 4, '{}', false, :now)"
                ),
                {"run": first.id, "wf": wf.name, "now": utcnow()},
            )
    params = {"k": 2} if case == "other-params" else {"k": 1}
    models = {"second": "mock/other"} if case == "other-models" else None
    ran.clear()
    run = await wf.run(params=params, models=models, display=False, resume=case != "resume-false")
    assert run.id != first.id and run.status == "completed" and ran == ["first", "second"]
    async with await Store.open(db_url) as store:
        row = await store.get_run(first.id)
        assert row is not None and row.status == status  # left as it was


# ── a run not resumed only because its steps' code changed: named, with its run_id= ──


def _fixable(db: str, name: str, ran: list[str], *, fixed: bool) -> bn.Workflow:
    """``_two_steps`` before (``fixed=False``) and after its second step was edited."""
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def first(ctx: bn.Context) -> int:
        ran.append("first")
        return 1

    if fixed:

        @wf.step()
        async def second(ctx: bn.Context, first: int) -> int:
            ran.append("second")
            return first + 2  # the fix

    else:

        @wf.step()
        async def second(ctx: bn.Context, first: int) -> int:
            ran.append("second")
            return first + 1

    return wf


def _not_resuming(run_id: str, name: str, owner: str, call: str = "wf") -> str:
    return (
        f"not resuming run {run_id} of {name!r}, left unfinished by {owner} (1 of 2 steps "
        "done): the steps' code changed since it started, so this is a new run, paying for "
        f"its calls again; to resume that run with this code instead: await {call}.run("
        f'run_id="{run_id}")'
    )


@pytest.mark.parametrize("left", ["killed", "kernel-restarted"])
async def test_a_run_not_resumed_only_for_its_edited_code_is_named_with_its_resume_call(
    db_url: str, unique: str, left: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed mid-way (or stopped by a kernel restart's interrupt), then a step not
    yet run is edited and the cell run again: a new run, as before, but the cell says
    which run it leaves and the line that resumes it; that line pays nothing again."""
    name = f"edited-{unique}"
    ran: list[str] = []
    first = await _fixable(db_url, name, ran, fixed=False).run(params={"k": 1}, display=False)
    dead = dead_owner()
    if left == "killed":
        await _left_unfinished(db_url, first.id, owner=dead, expired=False)
    else:  # Jupyter interrupts the kernel before it shuts it down: stored cancelled
        await _left_unfinished(db_url, first.id, status="cancelled", owner=None, expired=True)
        async with await Store.open(db_url) as store, store.engine.begin() as conn:
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == first.id).values(stopped_by=dead))
    fixed = _fixable(db_url, name, ran, fixed=True)
    ran.clear()
    capsys.readouterr()
    new = await fixed.run(params={"k": 1}, display="text")
    assert new.id != first.id and new.status == "completed" and ran == ["first", "second"]
    out = capsys.readouterr().out
    assert _not_resuming(first.id, name, dead) in out, out
    assert out.count("not resuming run") == 1

    ran.clear()  # the line it printed: the old run resumed with the edited code
    resumed = await fixed.run(run_id=first.id, display=False)
    assert resumed.id == first.id and resumed.status == "completed"
    assert ran == ["second"] and resumed.results["second"] == 3  # first not run (paid) again

    # Both finished: the next run of the cell is a new one, and says nothing.
    again = await fixed.run(params={"k": 1}, display="text")
    assert again.id not in (first.id, new.id) and "resuming run" not in capsys.readouterr().out


async def test_the_edited_code_line_is_a_logged_warning_with_display_false(
    db_url: str, unique: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    name = f"edited-quiet-{unique}"
    first = await _fixable(db_url, name, [], fixed=False).run(display=False)
    dead = dead_owner()
    await _left_unfinished(db_url, first.id, owner=dead, expired=False)
    caplog.set_level(logging.INFO, logger="baton_nb")
    new = await _fixable(db_url, name, [], fixed=True).run(display=False)
    assert new.id != first.id and capsys.readouterr().out == ""
    [record] = [r for r in caplog.records if "not resuming run" in r.getMessage()]
    assert record.name == "baton_nb" and record.levelno == logging.WARNING
    assert record.getMessage() == _not_resuming(first.id, name, dead)


@pytest.mark.parametrize(
    "case", ["same-code", "other-models", "owner-alive", "failed", "newer-run", "resume-false"]
)
async def test_no_edited_code_line_for_a_run_that_would_not_be_resumed_anyway(
    db_url: str, unique: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the code stands between the run and its resume, or nothing is said: the same
    code resumes it; other models, a live owner or a finished run were never resumed; a
    run of these params started after it is what a re-run follows (named once, then)."""
    name = f"edited-not-{unique}"
    first = await _fixable(db_url, name, [], fixed=False).run(params={"k": 1}, display=False)
    owner = f"{socket.gethostname()}:{os.getppid()}:cafebabe" if case == "owner-alive" else None
    status = "failed" if case == "failed" else "running"
    await _left_unfinished(
        db_url, first.id, status=status, owner=owner or dead_owner(), expired=False
    )
    fixed = _fixable(db_url, name, [], fixed=case != "same-code")
    if case == "newer-run":
        await fixed.run(params={"k": 1}, display=False, resume=False)
    caplog.set_level(logging.INFO, logger="baton_nb")
    models = {"second": "mock/other"} if case == "other-models" else None
    run = await fixed.run(
        params={"k": 1}, models=models, display=False, resume=case != "resume-false"
    )
    assert (run.id == first.id) is (case == "same-code")
    assert "not resuming run" not in caplog.text


async def _map_left_unfinished(db: str, run_id: str, owner: str) -> None:
    """A run of ``_map_steps`` as a process killed in its map step leaves it."""
    expires = utcnow() + timedelta(hours=1)
    async with await Store.open(db) as store, store.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE workflow_nodes SET state = 'executing', result = NULL, "
                "has_result = false, finished_at = NULL "
                "WHERE run_id = :run AND (step = 'ask' OR parent = 'ask')"
            ),
            {"run": run_id},
        )
        await conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(status="running", finished_at=None, lease_owner=owner, lease_expires_at=expires)
        )


@pytest.mark.parametrize("shown", ["written-out", "long-map"])
async def test_the_edited_code_line_passes_the_calls_models_and_following_it_keeps_them(
    db_url: str, unique: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is named only if its models are this call's; a map step's children take
    their model from the call's map, so the line that resumes it passes them: followed,
    the children keep the run's model (before, it had no models=, and they resumed with
    none). A long map is not written out: the line says to pass the same one."""
    name = f"edited-models-{unique}"
    model = "mock/a" if shown == "written-out" else "mock/" + "a" * 80
    models = {"ask": model}
    first = await _map_steps(db_url, name).run(models=models, display=False)
    await _map_left_unfinished(db_url, first.id, dead_owner())
    fixed = _map_steps(db_url, name, suffix="edited")
    capsys.readouterr()
    new = await fixed.run(models=models, display="text")
    assert new.id != first.id and new.status == "completed"
    [line] = [x for x in capsys.readouterr().out.splitlines() if "not resuming run" in x]
    call = line.split("to resume that run with this code instead: ", 1)[1]
    if shown == "written-out":
        assert call == f'await wf.run(run_id="{first.id}", models={models!r})', line
        resumed = await eval(call.removeprefix("await "), {"wf": fixed})  # the line, run
    else:
        assert call == (
            f'await wf.run(run_id="{first.id}", models=...) with the same models= as this call'
        ), line
        resumed = await fixed.run(run_id=first.id, models=models, display=False)
    assert resumed.id == first.id and resumed.status == "completed"
    assert resumed.results["ask"] == [f"{model} 0 edited", f"{model} 1 edited"]


async def test_a_run_resumed_by_its_run_id_is_resumed_again_after_another_crash(
    db_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed line followed, the run goes on with the edited code; it crashes again:
    the next plain re-run resumes it (its resume key is this code's now). Before, the
    key stayed the old code's: neither resumed nor named, a new paid run."""
    name = f"edited-twice-{unique}"
    ran: list[str] = []
    first = await _fixable(db_url, name, ran, fixed=False).run(params={"k": 1}, display=False)
    await _left_unfinished(db_url, first.id, owner=dead_owner(), expired=False)
    fixed = _fixable(db_url, name, ran, fixed=True)
    new = await fixed.run(params={"k": 1}, display=False)  # the cell run again: named
    assert new.id != first.id
    resumed = await fixed.run(run_id=first.id, display=False)  # the line it printed
    assert resumed.id == first.id and resumed.status == "completed"
    await _left_unfinished(db_url, first.id, owner=dead_owner(), expired=False)  # crash 2
    ran.clear()
    capsys.readouterr()
    again = await fixed.run(params={"k": 1}, display="text")
    out = capsys.readouterr().out
    assert again.id == first.id and again.status == "completed", out
    assert ran == ["second"] and again.results["second"] == 3
    assert f"resuming run {first.id} of {name!r}" in out and "not resuming" not in out, out


@pytest.mark.parametrize("edited", [False, True], ids=["same-code", "edited-code"])
async def test_a_run_resumed_by_its_run_id_with_other_models_keeps_its_resume_key(
    db_url: str, unique: str, edited: bool
) -> None:
    """Resumed by its run_id= with another models=: its steps keep the models they were
    stored with, so this call's key (code and model map) would claim models the run does
    not have. Before, it was stored; the run's key is left as it was."""
    name = f"rekey-models-{unique}"
    ran: list[str] = []
    began = {"first": "mock/a", "second": "mock/a"}
    wf = _fixable(db_url, name, ran, fixed=False)
    first = await wf.run(params={"k": 1}, models=began, display=False)
    async with await Store.open(db_url) as store:
        row = await store.get_run(first.id)
        assert row is not None and row.resume_key is not None
        key = row.resume_key
    await _left_unfinished(db_url, first.id, owner=dead_owner(), expired=False)
    other = _fixable(db_url, name, ran, fixed=edited)
    resumed = await other.run(run_id=first.id, models={"second": "mock/b"}, display=False)
    assert resumed.id == first.id and resumed.status == "completed"
    async with await Store.open(db_url) as store:
        row = await store.get_run(first.id)
        assert row is not None and row.resume_key == key
        nodes = {n.step: n.model for n in await store.get_nodes(first.id)}
        assert nodes == began  # what the key (still) says


async def test_resume_false_with_a_run_id_is_refused(sqlite_url: str) -> None:
    wf = _two_steps(sqlite_url, "refused", [])
    with pytest.raises(bn.ConfigurationError, match="resume=False asks for a new run"):
        await wf.run(run_id="abcdef", resume=False, display=False)
    with pytest.raises(bn.ConfigurationError, match="resume must be True or False"):
        await wf.run(resume="no", display=False)  # type: ignore[arg-type]


# ── the same model map and code, or no resume; two re-runs at once; a stalled owner ──


def _map_steps(db: str, name: str, suffix: str = "") -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return [0, 1]

    if suffix:

        @wf.step(map_over="items")
        async def ask(ctx: bn.Context) -> str:
            return f"{ctx.model} {ctx.item} edited"

    else:

        @wf.step(map_over="items")
        async def ask(ctx: bn.Context) -> str:
            return f"{ctx.model} {ctx.item}"

    return wf


async def _left_running(db: str, run_id: str, owner: str, *, expired: bool = False) -> None:
    expires = utcnow() + timedelta(seconds=-3600 if expired else 3600)
    async with await Store.open(db) as store, store.engine.begin() as conn:
        await conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(status="running", finished_at=None, lease_owner=owner, lease_expires_at=expires)
        )


@pytest.mark.parametrize("case", ["same", "map-models", "code", "stored-without-key"])
async def test_resumed_only_with_the_same_model_map_and_code(
    db_url: str, unique: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A map step's node stores no model (its children take theirs from the call's map),
    and nothing on the nodes says which code ran: the run's ``resume_key`` does; a run
    stored before it existed (NULL) is never resumed unasked. The run not resumed is
    named, the map's entry for the map step said to be a possible difference too."""
    name = f"key-{unique}"
    first = await _map_steps(db_url, name).run(models={"ask": "mock/a"}, display=False)
    await _left_running(db_url, first.id, dead_owner())
    if case == "stored-without-key":
        async with await Store.open(db_url) as store, store.engine.begin() as conn:
            await conn.execute(sa.update(RUNS).where(RUNS.c.id == first.id).values(resume_key=None))
    wf = _map_steps(db_url, name, suffix="edited" if case == "code" else "")
    models = {"ask": "mock/b" if case == "map-models" else "mock/a"}
    run = await wf.run(models=models, display=False)
    assert (run.id == first.id) is (case == "same")
    assert run.status == "completed"
    named = [r.getMessage() for r in caplog.records if "not resuming run" in r.getMessage()]
    if case in ("map-models", "code"):
        [line] = named
        assert line.startswith(f"not resuming run {first.id} of {name!r}"), line
        assert "the steps' code (or the models= map's entry for fan-out step 'ask') " in line
    else:
        assert named == []
    if case != "same":
        async with await Store.open(db_url) as store:
            row = await store.get_run(first.id)
            assert row is not None and row.status == "running"  # left as it was
    if case == "map-models":
        assert run.results["ask"] == ["mock/b 0", "mock/b 1"]


@pytest.mark.slow  # a real process, stopped
async def test_a_stalled_process_of_this_host_is_alive_even_with_its_lease_expired(
    db_url: str, unique: str
) -> None:
    """SIGSTOP (or a debugger) stops the lease's renewals, not the process: on this host
    its pid decides, so a re-run starts a run of its own instead of taking it over."""
    ran: list[str] = []
    wf = _two_steps(db_url, f"stalled-{unique}", ran)
    first = await wf.run(params={"k": 1}, display=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        proc.send_signal(signal.SIGSTOP)
        owner = f"{socket.gethostname()}:{proc.pid}:cafebabe"
        await _left_unfinished(db_url, first.id, owner=owner, expired=True)
        [listed] = await bn.runs(db_url, workflow=wf.name)
        assert not listed.abandoned
        ran.clear()
        run = await wf.run(params={"k": 1}, display=False)
        assert run.id != first.id and ran == ["first", "second"]
    finally:
        proc.kill()
        proc.wait()
    [gone] = [r for r in await bn.runs(db_url, workflow=wf.name) if r.id == first.id]
    assert gone.abandoned  # its pid no longer exists: resumable now
    resumed = await wf.run(params={"k": 1}, display=False)
    assert resumed.id == first.id and resumed.status == "completed"


@pytest.mark.parametrize("when", ["before-the-look", "between-the-look-and-the-lease"])
async def test_a_second_rerun_at_once_raises_run_locked_naming_the_run(
    db_url: str, unique: str, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two notebooks re-run the crashed workflow at the same moment: one resumes the run,
    the other neither starts a new paid run unasked nor names a run it never asked for."""
    ran: list[str] = []
    wf = _two_steps(db_url, f"twice-{unique}", ran)
    first = await wf.run(params={"k": 1}, display=False)
    dead = dead_owner()
    await _left_unfinished(db_url, first.id, owner=dead, expired=False)
    winner = f"{socket.gethostname()}:{os.getppid()}:cafebabe"  # alive, renewing its lease

    async def the_other_resumes() -> None:
        async with await Store.open(db_url) as store:
            took = await store.acquire_lease(
                first.id, winner, 600, steal_from=dead, count_execution=True
            )
            assert took

    if when == "before-the-look":
        await the_other_resumes()
    else:
        from baton_nb.runtime import _start

        looked = _start.find_unfinished

        async def look_then_lose(*args: object, **kwargs: object) -> object:
            found = await looked(*args, **kwargs)  # type: ignore[arg-type]
            await the_other_resumes()
            return found

        monkeypatch.setattr(_start, "find_unfinished", look_then_lose)
    ran.clear()
    with pytest.raises(bn.RunLocked) as raised:
        await wf.run(params={"k": 1}, display=False)
    assert raised.value.run_id == first.id and raised.value.owner == winner
    assert str(raised.value).startswith(
        f"this call would have resumed run {first.id} of {wf.name!r} (the same params, "
        f"models and code), which another process ({winner}) resumed and is executing: follow"
    )
    assert str(raised.value).endswith("or start a new run with wf.run(..., resume=False)")
    shown = raised.value._render_traceback_()  # type: ignore[attr-defined]
    assert shown == [f"RunLocked: {raised.value}"]  # in a notebook: this line, no frames
    assert ran == [] and [r.id for r in await bn.runs(db_url, workflow=wf.name)] == [first.id]
    async with await Store.open(db_url) as store:
        row = await store.get_run(first.id)
        assert row is not None and row.executions == 2 and row.lease_owner == winner
    monkeypatch.undo()
    fresh = await wf.run(params={"k": 1}, display=False, resume=False)  # what it advises
    assert fresh.id != first.id and fresh.status == "completed"


async def test_run_locked_and_run_not_found_never_show_the_urls_password(
    unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both named the database with ``store.url`` as given: its password with it."""
    db = POSTGRES_URL.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    assert "s3cret" in db  # the server trusts the user: the password is not checked
    wf = _two_steps(db, f"secret-{unique}", [])
    first = await wf.run(params={"k": 1}, display=False)
    dead = dead_owner()
    await _left_unfinished(db, first.id, owner=dead, expired=False)
    async with await Store.open(db) as store:  # another notebook resumed it first
        winner = f"{socket.gethostname()}:{os.getppid()}:cafebabe"
        assert await store.acquire_lease(
            first.id, winner, 600, steal_from=dead, count_execution=True
        )
    with pytest.raises(bn.RunLocked) as locked:
        await wf.run(params={"k": 1}, display=False)
    hidden = "postgresql://postgres:***@127.0.0.1"
    assert "s3cret" not in str(locked.value) and hidden in str(locked.value), locked.value
    nope = f"nope-{unique}"
    for read in (
        lambda: bn.Run.load(nope, db=db),
        lambda: bn.report(db, run_ids=[nope]),
        lambda: bn.SubmittedRun.attach(nope, db=db),
    ):
        with pytest.raises(bn.RunNotFound) as missing:
            await read()
        assert "s3cret" not in str(missing.value) and hidden in str(missing.value), missing.value
    argv = ["show", nope, "--db", db]
    assert await anyio.to_thread.run_sync(cli_main, argv) != 0
    err = capsys.readouterr().err
    assert "s3cret" not in err and hidden in err, err


@pytest.mark.slow  # real subprocesses
async def test_two_processes_rerun_at_once_one_resumes_the_other_is_told(
    fake_providers: FakeProviderServer, db_url: str, tmp_path: Path, unique: str
) -> None:
    """Run All in two notebooks after a crash: one resumes the run (it hangs again in
    the items the crash left, so it is still running when the other has decided), the
    other raises ``RunLocked`` naming that run; no second run is created."""
    name = f"twice-{unique}"
    script = tmp_path / "rerun.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "HANG_MARKS": str(marks), "HANG_FROM": str(HANG_FROM)}
    args = (db_url, fake_providers.base_url, name, str(N))
    async with workflow_process(script, *args, env=env) as proc:
        crashed, _ = await _wait_hung(proc, fake_providers, db_url, name, marks)
        kill9(proc)
    async with (
        workflow_process(script, *args, env=env) as one,
        workflow_process(script, *args, env=env) as two,
    ):
        with anyio.fail_after(60):
            while one.poll() is None and two.poll() is None:
                await anyio.sleep(0.05)
        loser, winner = (one, two) if one.poll() is not None else (two, one)
        assert winner.poll() is None  # resuming, hung in the items left
        assert loser.returncode != 0 and loser.stderr is not None
        err = loser.stderr.read().decode()
        assert f"RunLocked: this call would have resumed run {crashed} of {name!r}" in err
        assert f"which another process ({socket.gethostname()}:{winner.pid}:" in err
        assert [r.id for r in await bn.runs(db_url, workflow=name)] == [crashed]
        async with await Store.open(db_url) as store:
            row = await store.get_run(crashed)
            assert row is not None and row.executions == 2
            assert (row.lease_owner or "").startswith(f"{socket.gethostname()}:{winner.pid}:")


async def test_a_run_this_process_resumed_and_executes_does_not_refuse_a_second_run(
    db_url: str, unique: str
) -> None:
    """A failed run resumed by its id in this kernel, still executing: a second
    ``wf.run()`` of the same params here starts its own run (the review found it refused
    with RunLocked naming this same process as 'another process')."""
    release = anyio.Event()
    started = anyio.Event()
    attempts: dict[str, int] = {}
    wf = bn.Workflow(f"mine-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def slow(ctx: bn.Context) -> int:
        attempts[ctx.run_id] = attempts.get(ctx.run_id, 0) + 1
        if attempts[ctx.run_id] == 1 and len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        if len(attempts) == 1:
            started.set()
            await release.wait()
        return 1

    failed = await wf.run(params={"k": 1}, display=False)
    assert failed.status == "failed"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: wf.run(run_id=failed.id, display=False))
        await started.wait()
        second = await wf.run(params={"k": 1}, display=False)
        assert second.id != failed.id and second.status == "completed"
        release.set()


async def test_a_watch_of_an_abandoned_run_sees_it_resumed(db_url: str, unique: str) -> None:
    """``bn.watch`` says ``abandoned`` as ``bn.runs()`` does, and no more once a process
    takes the run's lease again (a resume elsewhere): read from the run's row at each
    poll, not once at the snapshot. ``Run.load`` reads the run's row once."""
    wf = _two_steps(db_url, f"watched-{unique}", [])
    first = await wf.run(params={"k": 1}, display=False)
    dead = dead_owner()
    await _left_unfinished(db_url, first.id, owner=dead, expired=False)
    loaded = await bn.Run.load(first.id, db=db_url)
    assert loaded.abandoned and "abandoned" in repr(loaded)
    async with bn.watch(first.id, db_url, poll_interval=0.05) as live:
        assert live.run.abandoned
        async with await Store.open(db_url) as store:
            alive = f"{socket.gethostname()}:{os.getppid()}:resumer"  # a live process
            assert await store.acquire_lease(first.id, alive, 60, steal_from=dead)
            await live._poll()
            assert not live.run.abandoned
            assert "abandoned" not in repr(live.run)
    async with await Store.open(db_url) as store, store.engine.begin() as conn:
        await conn.execute(  # not left running in the shared database
            sa.update(RUNS)
            .where(RUNS.c.id == first.id)
            .values(status="cancelled", lease_owner=None, lease_expires_at=None)
        )
