"""Live progress of runs: the DAG widget in a kernel, a progress line in a terminal."""

from __future__ import annotations

import sys

from .._errors import ConfigurationError
from .._run import Run
from ._dag import DagWidget, in_kernel
from ._progress import TextProgress
from ._snapshot import snapshot_bundle
from ._state import stored_state
from ._static import static_html

__all__ = ["Attached", "DagWidget", "TextProgress", "attach", "in_kernel", "notebook_view"]


class Attached:
    """The auto-displayed widget of one run; ``close()`` leaves its final snapshot behind."""

    def __init__(self, widget: DagWidget) -> None:
        self.widget = widget
        widget.closes_at_end = True  # its final state is the snapshot: no resend of every node

    def close(self) -> None:
        self.widget.finish()
        self.widget.close()  # the output now holds the snapshot; free the kernel-side model


def attach(run: Run, display: bool | str | None) -> Attached | TextProgress | None:
    """Show progress for ``run``; returns something with ``close()``, or None.

    ``display``: None (auto: the widget in a kernel, a text line when stderr is a terminal,
    nothing otherwise), True or "widget" (the widget; a text line outside a kernel), "text",
    or False.
    """
    if not (display is None or isinstance(display, bool) or display in ("text", "widget")):
        raise ConfigurationError(
            f"display must be None (auto), True, False, 'text' or 'widget'; got {display!r}"
        )
    if display is False:
        return None
    if display == "text" or not in_kernel():
        if display is None and not sys.stderr.isatty():
            return None
        return TextProgress(run)
    return _show_widget(run)


def _show_widget(run: Run) -> Attached:
    from IPython.display import display

    widget = DagWidget(run)
    display(widget)  # type: ignore[no-untyped-call]
    return Attached(widget)


class _NotebookView:
    """How a ``Run`` shows as a cell's result (``Run.notebook_view``): the live widget while
    it runs, the saved snapshot once it finished; the static view where neither can run."""

    def display(self, run: Run) -> None:
        from IPython.display import display

        if not in_kernel():
            display({"text/plain": repr(run)}, raw=True)  # type: ignore[no-untyped-call]
        elif run.done:  # nothing left to follow: no widget (and no comm) needed
            display(snapshot_bundle(run, stored_state(run)), raw=True)  # type: ignore[no-untyped-call]
        else:
            DagWidget(run)._ipython_display_()

    def static_html(self, run: Run) -> str:
        return static_html(run)


# Registered on import; the package front (baton_nb/__init__.py) also reaches it on the
# first Run shown in a kernel that never imported this package.
notebook_view = _NotebookView()
Run.notebook_view = notebook_view
