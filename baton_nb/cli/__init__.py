"""``baton-nb``: the command line (demo, runs, show, report, prune, price).

Exit codes: 0 ok, 1 a run failed or an id is unknown (or the database cannot be used),
2 bad arguments. ``main(argv)`` returns the code instead of exiting, for tests.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
