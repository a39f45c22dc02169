"""The DAG widget in a real browser: JupyterLab + Debian chromium, driven by Playwright.

Run with ``pytest -m browser``. Needs /usr/bin/chromium (``.ci/run`` installs it) and the
``playwright`` and ``jupyterlab`` packages; it never downloads a browser. Without them the
test fails when CI=true and is skipped otherwise. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KERNEL_NAME = "Python 3 (baton_nb test)"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

LIVE_CELL = """\
import anyio
import baton_nb as bn

MODELS = ["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.0-flash"]
wf = bn.Workflow("browser_demo", debug=True)

@wf.step()
async def fetch(ctx):
    await anyio.sleep(0.6)
    return ["durable execution", "fan-out", "cost"]

@wf.step(deps=["fetch"], models=MODELS)
async def answer(ctx):
    await anyio.sleep(0.5)
    reply = await ctx.complete(prompt="Explain " + ", ".join(ctx.results["fetch"]))
    return reply.text

@wf.step()
async def summary(ctx, answer):
    await anyio.sleep(0.5)
    return (await ctx.synthesize(answer, model="mock/gpt-4o-mini")).text

@wf.step()
async def report(ctx, summary):
    await anyio.sleep(0.5)
    return {"words": len(summary.split())}

run = await wf.run()
print("STATUS", run.status, run.cost)
"""

CANCEL_CELL = """\
wf2 = bn.Workflow("browser_cancel")

@wf2.step()
async def slow(ctx):
    await anyio.sleep(60)

@wf2.step()
async def after(ctx, slow):
    return 1

run2 = await wf2.run()
print("CANCELLED-RUN", run2.status)
"""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        _missing(f"the {module!r} package is not installed (pip install {module})")


def _missing(why: str) -> None:
    message = f"browser test needs {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FALLBACK_CELL = """\
import anyio
import baton_nb as bn
from baton_nb.widget import DagWidget

# Act like a kernel that only reads widget messages after the cell (ipykernel < 7): the
# button's message is ignored, so the view must fall back to interrupting the kernel.
DagWidget.cancel = lambda self: None

wf3 = bn.Workflow("browser_interrupt")

@wf3.step()
async def slow(ctx):
    await anyio.sleep(60)

run3 = await wf3.run()
"""


def _notebook(path: Path, *sources: str) -> None:
    cells = [
        {"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
         "outputs": [], "source": src}
        for i, src in enumerate(sources)
    ]  # fmt: skip
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": KERNEL_NAME, "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb), encoding="utf-8")


def _lab_env(tmp: Path) -> dict[str, str]:
    """A JupyterLab that sees only this venv's kernel and no user settings."""
    kernel_dir = tmp / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_NAME,
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    settings = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8"
    )
    env = dict(os.environ)
    env.update(
        JUPYTER_PATH=str(tmp / "jupyter"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        BATON_NB_DB=f"sqlite:///{tmp / 'browser.db'}",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """JupyterLab on 127.0.0.1 with a token and a temp notebook dir; yields (url, token)."""
    _require("jupyterlab")
    tmp_path = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), uuid.uuid4().hex
    root = tmp_path / "notebooks"
    root.mkdir()
    _notebook(root / "live.ipynb", LIVE_CELL, CANCEL_CELL)
    _notebook(root / "fallback.ipynb", FALLBACK_CELL)
    log = (tmp_path / "lab.log").open("w")
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--ServerApp.port_retries=0", "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=_lab_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(base, token, proc, tmp_path / "lab.log")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_for_server(base: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited:\n{log.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(
                f"{base}/api/status", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        _missing(f"Debian chromium at {CHROMIUM} (apt-get install chromium)")
    _require("playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: Any, name: str, target: Any = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (target or page).screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _wait(page: Any, predicate: str, timeout: float = 30_000, arg: Any = None) -> Any:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(predicate, arg=arg, timeout=timeout, polling=50)
    except PlaywrightTimeout:
        _shot(page, "failure")
        cells = [_cell(page, i) for i in range(2)]
        raise AssertionError(f"timed out waiting for {predicate}; cells: {cells}") from None


CELL_STATE = """([cell]) => {
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  if (!c) return null;
  const prompt = c.querySelector('.jp-InputPrompt').textContent;
  const out = c.querySelector('.jp-OutputArea') ? c.querySelector('.jp-OutputArea').innerText : '';
  const dag = c.querySelector('.bn-dag');
  const nodes = {};
  if (dag) dag.querySelectorAll('.bn-node').forEach(n => nodes[n.dataset.id] = n.dataset.state);
  return {running: prompt.includes('*'), out, status: dag ? dag.dataset.status : null, nodes,
          cost: dag ? dag.querySelector('.bn-stat-cost .bn-stat-value').textContent : null};
}"""


def _cell(page: Any, index: int) -> dict[str, Any]:
    return page.evaluate(CELL_STATE, [index])  # type: ignore[no-any-return]


def _open_and_run(browser: Any, lab: tuple[str, str], notebook: str) -> tuple[Any, list[str]]:
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    workspace = notebook.removesuffix(".ipynb")  # one workspace per notebook: nothing else opens
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=40_000)
    _wait(page, "() => window.jupyterapp && document.querySelector('.jp-Notebook')")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=40_000)
    _start_kernel_if_asked(page)
    # Not awaited: the command's promise settles only when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    return page, errors


def _start_kernel_if_asked(page: Any) -> None:
    """JupyterLab may ask which kernel to start; take the preferred one (this venv's)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if page.evaluate("() => !!document.querySelector('.jp-Dialog')"):
            page.locator(".jp-Dialog .jp-mod-accept").click()
            break
        if page.evaluate(
            "() => document.querySelector('.jp-KernelStatus, .jp-Toolbar-kernelStatus') !== null "
            "&& !!window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel"
        ):
            break
        time.sleep(0.1)
    _wait(
        page,
        "() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
    )


def test_live_widget_in_jupyterlab(lab: tuple[str, str], browser: Any) -> None:
    page, errors = _open_and_run(browser, lab, "live.ipynb")

    # (a) nodes appear while the cell still runs
    _wait(
        page,
        f"() => {{ const s = ({CELL_STATE})([0]); return s && Object.keys(s.nodes).length >= 4; }}",
    )
    first = _cell(page, 0)
    assert first["running"] and "STATUS" not in first["out"], first
    assert set(first["nodes"]) >= {"fetch", "answer", "summary", "report"}

    # (b) a node goes executing -> completed while the cell still runs
    seen: list[tuple[str | None, bool]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = _cell(page, 0)
        seen.append((state["nodes"].get("summary"), state["running"]))
        if state["nodes"].get("summary") == "executing":
            _shot(page, "widget_live_running", page.locator(".jp-Cell").nth(0))
        if state["nodes"].get("summary") == "completed" and state["running"]:
            break
        time.sleep(0.05)
    assert ("executing", True) in seen and ("completed", True) in seen, seen[-20:]

    # (c) the final header shows the outcome and a non-zero cost
    # When the run ends the live widget is replaced by its saved snapshot (same renderer).
    _wait(
        page,
        """() => { const c = document.querySelectorAll('.jp-Cell')[0];
        return c && c.innerText.includes('STATUS') && c.querySelector('.bn-snapshot .bn-dag[data-status=completed]'); }""",
    )
    final = _cell(page, 0)
    assert final["status"] == "completed" and "STATUS completed" in final["out"], final
    assert final["cost"] and final["cost"] not in ("$0", "–"), final
    assert set(final["nodes"].values()) == {"completed"}, final
    cell0 = page.locator(".jp-Cell").nth(0).locator(".bn-dag")
    cell0.locator(".bn-kid").first.click()
    page.wait_for_selector(".jp-Cell .bn-panel .bn-ctx-response", timeout=10_000)
    _shot(page, "widget_final_light", cell0)

    # (d) Cancel on a long run: the run ends cancelled and the cell goes on (no interrupt)
    _wait(
        page,
        "() => { const b = document.querySelectorAll('.jp-Cell')[1]?.querySelector('.bn-cancel'); return b && !b.hidden; }",
    )
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[1].querySelector('.bn-node[data-state=executing]')",
    )
    _shot(page, "widget_cancel_before", page.locator(".jp-Cell").nth(1).locator(".bn-dag"))
    page.locator(".jp-Cell").nth(1).locator(".bn-cancel").click()
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[1].innerText.includes('CANCELLED-RUN')",
        timeout=20_000,
    )
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[1].querySelector('.bn-snapshot .bn-dag[data-status=cancelled]')",
    )
    cancelled = _cell(page, 1)
    assert "CANCELLED-RUN cancelled" in cancelled["out"], cancelled
    assert (
        cancelled["nodes"] == {"slow": "cancelled", "after": "pending"}
        or cancelled["nodes"]["slow"] == "cancelled"
    ), cancelled
    assert "KeyboardInterrupt" not in cancelled["out"], "Cancel fell back to a kernel interrupt"
    _shot(page, "widget_cancelled", page.locator(".jp-Cell").nth(1).locator(".bn-dag"))

    # Dark theme: same view, JupyterLab's dark variables
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
    )
    _wait(page, "() => document.body.dataset.jpThemeLight === 'false'")
    page.wait_for_timeout(500)
    _shot(page, "widget_final_dark", cell0)

    # Saved and reopened: the snapshot renders without the live widget
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(1000)
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=40_000)
    _wait(
        page,
        "() => document.querySelector('.jp-Cell .bn-snapshot .bn-dag[data-status=completed]')",
        timeout=20_000,
    )
    reopened = _cell(page, 0)
    assert reopened["status"] == "completed" and reopened["cost"] == final["cost"], reopened
    _shot(page, "widget_reopened", page.locator(".jp-Cell").nth(0).locator(".bn-dag"))
    assert not errors, errors


def test_cancel_falls_back_to_kernel_interrupt(lab: tuple[str, str], browser: Any) -> None:
    """If the kernel cannot read the click during the cell, the view interrupts the kernel."""
    page, errors = _open_and_run(browser, lab, "fallback.ipynb")
    _wait(page, "() => document.querySelector('.jp-Cell .bn-node[data-state=executing]')")
    started = time.monotonic()
    page.locator(".jp-Cell").nth(0).locator(".bn-cancel").click()
    _wait(
        page,
        "() => document.querySelector('.jp-Cell .bn-snapshot .bn-dag[data-status=cancelled]')",
        timeout=20_000,
    )
    waited = time.monotonic() - started
    _wait(
        page, "() => !document.querySelector('.jp-Cell .jp-InputPrompt').textContent.includes('*')"
    )
    state = _cell(page, 0)
    assert state["nodes"] == {"slow": "cancelled"}, state
    assert "KeyboardInterrupt" in state["out"] or "CancelledError" in state["out"], state
    assert 2.0 < waited < 15, waited  # after the 2.5 s grace period, long before the 60 s step
    _shot(page, "widget_cancelled_by_interrupt", page.locator(".jp-Cell").nth(0))
    assert not errors, errors
