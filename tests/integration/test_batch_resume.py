"""A batched map in a process killed (kill -9) while it polls its provider batch: the
resumed run re-attaches to the batch and submits nothing twice (DESIGN §12)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from baton_nb._states import BatchState
from baton_nb.store import Store
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio

SCRIPT = textwrap.dedent(
    """
    import sys
    import anyio
    import baton_nb as bn

    def build(db, model):
        wf = bn.Workflow("killed-while-polling", db=db)

        @wf.step()
        async def items(ctx):
            return [f"document {i}" for i in range(ctx.params["n"])]

        @wf.step(map_over="items", batch=True)
        async def label(ctx):
            return (await ctx.complete(model=model, prompt=f"Label {ctx.item}")).text

        return wf

    if __name__ == "__main__":
        db, base_url, model, run_id, n = sys.argv[1:6]
        v1 = base_url + "/v1"
        bn.configure(providers={
            "openai": {"base_url": v1, "api_key": "sk-test-openai-0123456789abcdef"},
            "anthropic": {"base_url": base_url, "api_key": "sk-ant-test-0123456789abcdef"},
            "gemini": {"base_url": base_url, "api_key": "AIzaTestGeminiKey0123456789"},
        }, batch_poll=(0.05, 0.2))
        wf = build(db, model)
        run = anyio.run(lambda: wf.run(params={"n": int(n)}, run_id=run_id, display=False))
        print(run.status)
    """
)


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("killed_while_polling", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _kill_while_polling(
    server: FakeProviderServer, db: str, tmp_path: Path, model: str, run_id: str, n: int
) -> Path:
    """Run the batched map in a subprocess; kill -9 it once its batch is stored, submitted
    and being polled."""
    script = tmp_path / "killed.py"
    script.write_text(SCRIPT)
    server.batches.hold = True  # the batch runs for as long as the test wants
    proc = subprocess.Popen(
        [sys.executable, str(script), db, server.base_url, model, run_id, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        polled_at = None
        while True:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"the run's process ended by itself: {err.decode()[-3000:]}")
            assert time.monotonic() < deadline, "the batch was never polled"
            polls = server.batches.stats()["polls"]
            if polled_at is None and polls:
                polled_at = polls
            if polled_at is not None and polls >= polled_at + 3:  # polling, for a while
                break
            await anyio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL
    return script


async def _resume_after_kill(
    server: FakeProviderServer, db: str, tmp_path: Path, model: str, run_id: str, n: int
) -> None:
    provider = model.partition("/")[0]
    script = await _kill_while_polling(server, db, tmp_path, model, run_id, n)
    async with await Store.open(db) as store:
        [batch] = await store.get_provider_batches(run_id)
        assert batch.state in (BatchState.SUBMITTED, BatchState.RUNNING)
        assert batch.remote_id is not None and batch.request_count == n
        assert len(await store.get_batch_requests(run_id)) == n
    stats = server.batches.stats()
    assert stats["creates"] == {provider: 1} and stats["answered"] == {}

    server.batches.hold = False  # the provider finishes the batch while no one watches
    run = await _module(script).build(db, model).run(run_id=run_id, display=False)
    assert run.status == "completed"
    stats = server.batches.stats()
    assert stats["creates"] == {provider: 1}  # re-attached: nothing submitted twice
    submitted = [cid for _, ids in stats["submitted"] for cid in ids]
    assert len(submitted) == len(set(submitted)) == n
    assert stats["answered"] == {provider: n}
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == n and all(c.pricing is not None and c.pricing.batch for c in paid)
    assert len(run.results["label"]) == n
    assert run.results["label"][n - 1] == f"batch answer: Label document {n - 1}"
    async with await Store.open(db) as store:
        [batch] = await store.get_provider_batches(run_id)
        assert (batch.state, batch.succeeded) == (BatchState.DONE, n)


@pytest.mark.slow  # a real subprocess
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_batched_map_killed_while_polling_resumes_without_submitting_twice(
    fake_providers: FakeProviderServer, db_url: str, tmp_path: Path, unique: str, provider: str
) -> None:
    model = {
        "openai": "openai/gpt-4o-mini",
        "anthropic": "anthropic/claude-haiku-4-5",
        "gemini": "gemini/gemini-2.5-flash",
    }[provider]
    await _resume_after_kill(fake_providers, db_url, tmp_path, model, f"kill-{unique}", 40)


@pytest.mark.slow  # a real subprocess, 10,000 children
async def test_a_10000_item_batched_map_killed_while_polling_submits_nothing_twice(
    fake_providers: FakeProviderServer, sqlite_url: str, tmp_path: Path, unique: str
) -> None:
    fake_providers.record = False  # 10,000 lines per batch: count them, do not keep them
    await _resume_after_kill(
        fake_providers, sqlite_url, tmp_path, "openai/gpt-4o-mini", f"big-{unique}", 10_000
    )
