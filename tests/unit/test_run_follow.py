"""``Run.follow``: the views of this process told of a run's changes (DESIGN §7)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from baton_nb._run import Run


def test_followers_added_and_removed_from_two_threads_at_once_are_all_kept_or_gone() -> None:
    """``Run.followers`` is a tuple replaced by ``follow`` and its remover: from two
    threads at once (a widget made on the kernel's thread, one removed on the run's), none
    of the changes may be lost (a read-extend-replace without the lock lost some in most
    trials). The switch interval is cut so the threads interleave inside each change."""

    def nothing(_name: str) -> None:
        return None

    def ended() -> None:
        return None

    def follow(run: Run) -> None:
        for _ in range(200):
            run.follow(nothing, ended)

    def unfollow(removers: list[Callable[[], None]]) -> None:
        for remove in removers:
            remove()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(30):
            run = Run("r", "wf")
            removers = [run.follow(nothing, ended) for _ in range(200)]
            threads = [
                threading.Thread(target=follow, args=(run,)),
                threading.Thread(target=unfollow, args=(removers,)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(run.followers) == 200
    finally:
        sys.setswitchinterval(interval)
