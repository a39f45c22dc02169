"""A workflow script in a real subprocess, for the kill -9 tests: started, waited on, killed
with SIGKILL, and always reaped (its pipes closed) whatever the test does meanwhile."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from tests.fakes.provider_server import FakeProviderServer


def load_module(path: Path, name: str) -> Any:
    """The script at ``path`` imported in this process (to resume its workflow here)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def workflow_process(
    script: Path, *args: str, env: dict[str, str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``python script *args`` running for the block; killed and reaped after it."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


async def wait_for_file(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Until ``path`` exists; the process's stderr in the failure if it dies first."""
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        await anyio.sleep(0.05)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def dead_owner() -> str:
    """A lease owner (``host:pid:tag``) of this host whose process is gone."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{int(proc.stdout)}:deadbeef"


def paid_by_run(server: FakeProviderServer) -> dict[str, Counter[str]]:
    """Requests the fake provider received, per run id: how often each prompt was paid (the
    resume tests' prompts read ``"<run id> <item>"``)."""
    paid: dict[str, Counter[str]] = {}
    for request in server.requests:
        prompt = str(request.json["messages"][-1]["content"])
        run_id, _, item = prompt.partition(" ")
        paid.setdefault(run_id, Counter())[item] += 1
    return paid
