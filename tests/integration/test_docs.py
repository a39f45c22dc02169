"""The documentation builds (``mkdocs build --strict``) and its Python samples run.

Every ```` ```python ```` block of every page in docs/ is executed, in page order, in one
namespace per page, in a temp dir with ``BATON_NB_DB`` pointing at a temp SQLite file and
no API keys. Top-level ``await`` works as in a notebook cell. A block that must not run
(it needs a real provider, or shows a signature) has ``<!-- skip -->`` on the line before
its opening fence.
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from baton_nb.llm import reset_configuration

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIP = "<!-- skip -->"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
            "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "GROQ_API_KEY")  # fmt: skip


def samples(page: Path) -> list[tuple[int, str]]:
    """(line number, code) of the runnable python blocks of a page."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP:
            continue
        out.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return out


PAGES = sorted(p for p in DOCS.glob("*.md") if samples(p))


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if p.name not in nav]
    assert not missing, f"add these pages to the nav of mkdocs.yml: {missing}"


@pytest.mark.slow  # a real subprocess
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
async def test_samples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATON_NB_DB", f"sqlite:///{tmp_path / 'docs.db'}")
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        await _run_samples(page, namespace)
    finally:
        reset_configuration()  # a page's bn.configure(...) must not leak into other tests


async def _run_samples(page: Path, namespace: dict[str, object]) -> None:
    for line, code in samples(page):
        where = f"docs/{page.name}, block at line {line}"
        try:
            compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(compiled, namespace)
            if inspect.iscoroutine(result):
                await result
        except Exception as exc:
            pytest.fail(
                f"{where} failed: {type(exc).__name__}: {exc}\n{code}\n"
                f"(fix the sample, or put {SKIP} on the line before a block that must not run)"
            )
