"""Whether the process that holds a run's lease is alive (``host:pid:tag`` owners).

The lease (``runtime/_lease.py``) takes a run over from a dead holder; ``wf.run()``
resumes a run a dead process left unfinished (``runtime/_unfinished.py``); ``bn.runs()``
shows such a run as ``abandoned``. On this host a pid that no longer exists is known at
once; anywhere, a lease that expired means its holder stopped renewing it.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from ._states import RunStatus

__all__ = [
    "LIVE_OWNERS",
    "held_by_this_process",
    "holder_is_dead",
    "holder_where",
    "owner_gone",
    "process_gone",
]

# Lease owners of executions alive in this process: a lease held by this process under
# another owner name is left over from an interrupted start and can be taken over.
LIVE_OWNERS: set[str] = set()


def holder_where(holder: str) -> tuple[str, int | None]:
    """The host and pid of a lease holder or worker id (``host:pid:tag``); the pid None
    when it is not a number."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return host, int(pid) if pid.isdigit() else None


def held_by_this_process(holder: str | None) -> bool:
    """Whether ``holder`` (``host:pid:tag``) is a process of this host with this pid."""
    host, pid = holder_where(holder or "")
    return host == socket.gethostname() and pid == os.getpid()


def holder_is_dead(holder: str) -> bool:
    """True if the lease holder was a process on this host that no longer exists."""
    host, pid = holder_where(holder)
    if host != socket.gethostname() or pid is None:
        return False
    if pid == os.getpid():
        return holder not in LIVE_OWNERS
    return process_gone(host, pid)


def process_gone(host: str, pid: int) -> bool:
    """True if ``pid`` on ``host`` surely no longer runs: a process of this host (not this
    one) that does not exist, or a zombie; False when it cannot be known (another host)."""
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def owner_gone(
    status: RunStatus, owner: str | None, expires: datetime | None, now: datetime
) -> bool:
    """A ``running`` run whose executing process is gone: on this host a pid that no
    longer exists (a live pid is alive, even stalled by SIGSTOP or a debugger with its
    lease expired), on another host a lease that expired before ``now``. A run no process
    ever held (submitted and pending, or without an owner) is not."""
    if status is not RunStatus.RUNNING or not owner:
        return False
    if holder_is_dead(owner):
        return True
    if _on_this_host(owner):
        return False
    return expires is not None and expires < now


def _on_this_host(holder: str) -> bool:
    """A ``host:pid:tag`` holder of this host whose pid is known (alive, or this process)."""
    host, pid = holder_where(holder)
    return host == socket.gethostname() and pid is not None
