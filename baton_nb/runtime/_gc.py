"""The collector's young threshold while runs execute: ``baton_nb/_gc.py`` (shared with
``llm.complete``, which raises it while calls are in flight)."""

from __future__ import annotations

from .._gc import RUN_THRESHOLD, fewer_collections

__all__ = ["RUN_THRESHOLD", "fewer_collections"]
