"""What a run imports: a script's run that shows nothing loads no notebook machinery."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import asyncio, sys
import baton_nb as bn

wf = bn.Workflow("imports", db="memory://imports")

@wf.step()
async def a(ctx):
    return 1

for display in (False, None):  # None: stderr is a pipe here, not a terminal
    assert asyncio.run(wf.run(display=display)).status == "completed"
print(*(name in sys.modules for name in ("baton_nb.widget", "ipywidgets", "IPython")))
"""


def test_a_run_that_shows_nothing_outside_ipython_imports_no_widget() -> None:
    """``display=False`` (or the default with no terminal) outside IPython: no progress to
    show and no notebook to show the Run in later, so the widget package (ipywidgets,
    IPython: a quarter of a second of a process's first run) is not imported."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "False", "False"], done.stderr
