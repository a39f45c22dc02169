"""``python -m baton_nb.cli``."""

import sys

from ._main import main

sys.exit(main())
