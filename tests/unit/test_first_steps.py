"""The first five minutes: the README's commands and what the demo leaves in the checkout."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from baton_nb.cli._demo import DEFAULT_CSV, DEFAULT_DB

ROOT = Path(__file__).resolve().parents[2]


def _ignored(name: str) -> bool:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def test_gitignore_covers_what_the_demo_and_the_venv_leave() -> None:
    database = DEFAULT_DB.removeprefix("sqlite:///")
    for name in (DEFAULT_CSV, database, f"{database}-wal", ".venv"):
        assert _ignored(name), f".gitignore does not match {name!r}"


def test_readme_starts_with_the_two_commands_then_says_how_to_open_the_notebooks() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == [
        "pip install -e '.[all]' && baton-nb demo",
        "pip install -e '.[dev]' && pytest",
    ]
    # [all] installs no JupyterLab: the README says how to get it before it sends anyone
    # to the notebooks, and the demo's next command needs no --db
    assert (
        "jupyterlab" not in (ROOT / "pyproject.toml").read_text().split("all = [")[1].split("]")[0]
    )
    install = readme.index("pip install jupyterlab && jupyter lab notebooks/")
    assert install < readme.index("](notebooks/)")
    assert "`baton-nb runs`" in readme[: readme.index("pip install jupyterlab")]
