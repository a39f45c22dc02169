"""A real Jupyter kernel for the tests that interrupt and restart one (jupyter_client)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def started_kernel(cwd: str | None = None) -> Iterator[tuple[Any, Any]]:
    """A python3 kernel and its client, ready; shut down (now) whatever the test did."""
    import jupyter_client

    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(**({} if cwd is None else {"cwd": cwd}))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def iopub_of(client: Any, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The iopub messages of one execution, until the kernel is idle again."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out
        out.append(msg)
    raise AssertionError(f"execution {msg_id} did not end; got {out}")
