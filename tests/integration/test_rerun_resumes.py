"""Running a workflow again after its process was killed resumes the run it left
unfinished (DESIGN §4): nothing paid twice, counted at the fake provider; and the runs it
must never resume (stopped by the user or a budget, finished, owned by a live process,
other params or models, submitted to workers, ``resume=False``)."""

from __future__ import annotations

import logging
import os
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
from baton_nb.store import Store, utcnow
from baton_nb.store._sql_rows import RUNS
from tests.fakes.provider_server import FakeProviderServer
from tests.integration._process import kill9, load_module, workflow_process

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


def _paid_by_run(server: FakeProviderServer) -> dict[str, Counter[str]]:
    """Requests the provider received, per run id: how often each prompt was paid."""
    paid: dict[str, Counter[str]] = {}
    for request in server.requests:
        prompt = str(request.json["messages"][-1]["content"])
        run_id, _, item = prompt.partition(" ")
        paid.setdefault(run_id, Counter())[item] += 1
    return paid


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

    resumed = await wf.run(params={"n": N}, display=False)  # what a re-run cell does
    assert resumed.id == crashed and resumed.status == "completed"
    assert len(resumed.results["ask"]) == N
    line = next(r.getMessage() for r in caplog.records if "resuming run" in r.getMessage())
    assert line.startswith(f"resuming run {crashed} of {name!r}, left unfinished by ")
    done = 1 + paid_before - CONCURRENCY  # the list of items and the children completed
    assert f"({done} of {N + 1} steps done)" in line
    assert line.endswith("for a new run instead: await wf.run(..., resume=False)")

    paid = _paid_by_run(fake_providers)
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


def _dead_owner() -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{int(proc.stdout)}:deadbeef"


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
    holder = _dead_owner() if owner == "dead-pid" else owner
    await _left_unfinished(db_url, first.id, owner=holder, expired=expired)
    ran.clear()
    run = await wf.run(params={"k": 1}, display="text")
    assert run.id == first.id and run.status == "completed" and ran == ["second"]
    out = capsys.readouterr().out
    assert (
        f"resuming run {first.id} of 'gone-{unique}', left unfinished by {holder} "
        "(1 of 2 steps done); for a new run instead: await wf.run(..., resume=False)"
    ) in out


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
    owner, expired = _dead_owner(), False
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


async def test_resume_false_with_a_run_id_is_refused(sqlite_url: str) -> None:
    wf = _two_steps(sqlite_url, "refused", [])
    with pytest.raises(bn.ConfigurationError, match="resume=False asks for a new run"):
        await wf.run(run_id="abcdef", resume=False, display=False)
    with pytest.raises(bn.ConfigurationError, match="resume must be True or False"):
        await wf.run(resume="no", display=False)  # type: ignore[arg-type]
