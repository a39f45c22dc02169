"""The DAG widget in a real browser: JupyterLab + Debian chromium, driven by Playwright.

Run with ``pytest -m browser``. Needs /usr/bin/chromium (``.ci/run`` installs it) and the
``playwright`` and ``jupyterlab`` packages; it never downloads a browser. Without them the
test fails when CI=true and is skipped otherwise. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import itertools
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

from .widget_scenarios import MAP_1000, MAP_5000, SETUP, TEN, THOUSAND, TWO_HUNDRED

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
print("STATUS", run.status, run.cost, "ID", run.id)
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


# Kernel › Interrupt during a run, then the line the cell printed resumes it.
INTERRUPT_CELL = """\
import anyio
import baton_nb as bn

HANG = True
wf4 = bn.Workflow("browser_kernel_interrupt")

@wf4.step()
async def quick(ctx):
    return 1

@wf4.step()
async def slow(ctx, quick):
    if HANG:
        await anyio.sleep(60)
    return quick + 1

run4 = await wf4.run()
"""


# A step with a long result that ends early, then a slow one: its panel is open (and
# scrolled) when the run ends and the live widget is replaced by the saved snapshot.
PANEL_CELL = """\
import anyio
import baton_nb as bn

wfp = bn.Workflow("browser_panel", debug=True)

@wfp.step()
async def long_result(ctx):
    for i in range(15):
        ctx.log(f"checked source {i}", rows=100 + i)
    reply = await ctx.complete(model="mock/gpt-4o-mini", prompt="Explain the long result")
    return {"reply": reply.text, "lines": [f"line {i}: " + "x" * 40 for i in range(80)]}

@wfp.step()
async def slow(ctx, long_result):
    await anyio.sleep(4)
    return "done"

runp = await wfp.run()
print("PANEL-RUN", runp.status)
"""


# A run still going when the kernel restarts: its widget must stop looking live.
RESTART_CELL = """\
import anyio
import baton_nb as bn

wfr = bn.Workflow("browser_restart")

@wfr.step()
async def items(ctx):
    return [1, 2, 3]

@wfr.step(map_over="items")
async def slow(ctx):
    await anyio.sleep(60)

runr = await wfr.run()
"""


BATCH_CELL = """\
import baton_nb as bn

bn.configure(providers={"mock": {"latency": 4}})  # a mock batch that takes 4 seconds
wfb = bn.Workflow("browser_batch")

@wfb.step()
async def docs(ctx):
    return [f"document {i}" for i in range(20)]

@wfb.step(map_over="docs", batch=True)
async def label(ctx):
    return (await ctx.complete(model="mock/gpt-4o-mini", prompt=f"Label {ctx.item}")).text

runb = await wfb.run()
print("BATCH-RUN", runb.status, runb.id)
"""

BATCH_REOPEN_CELL = """\
await bn.Run.load(runb.id)  # the next day: the same run, read back from the database
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
    _notebook(root / "panel.ipynb", PANEL_CELL)
    _notebook(root / "interrupt.ipynb", INTERRUPT_CELL, "pass  # the resume line goes here")
    _notebook(root / "sizes.ipynb", SETUP, TEN, TWO_HUNDRED, THOUSAND, MAP_1000)
    _notebook(root / "wide.ipynb", SETUP, TWO_HUNDRED)
    _notebook(root / "big.ipynb", SETUP, MAP_5000)
    _notebook(root / "batch.ipynb", BATCH_CELL, BATCH_REOPEN_CELL)
    _notebook(root / "restart.ipynb", RESTART_CELL)
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


CLIPPED = """([cell]) => {
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  return [...c.querySelectorAll('.bn-panel .bn-table span')]
    .filter(s => s !== s.parentNode.firstChild && s.scrollWidth > s.clientWidth + 1)
    .map(s => s.textContent);
}"""


def _clipped(page: Any, cell: int) -> list[str]:
    """Text of the panel's table cells (but the first column) that do not fit their cell."""
    return page.evaluate(CLIPPED, [cell])  # type: ignore[no-any-return]


RECORD_SUMMARY = """() => {
  window.__bnSeen = [];
  const timer = setInterval(() => {
    const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[0];
    const prompt = c && c.querySelector('.jp-InputPrompt');
    if (!prompt) return;
    const node = c.querySelector('.bn-node[data-id=summary]');
    const running = prompt.textContent.includes('*');
    window.__bnSeen.push([node ? node.dataset.state : null, running]);
    // until the cell ran and stopped (started before it is seen running)
    if (!running && window.__bnSeen.some(([, r]) => r)) clearInterval(timer);
  }, 20);
}"""


def _cell(page: Any, index: int) -> dict[str, Any]:
    return page.evaluate(CELL_STATE, [index])  # type: ignore[no-any-return]


def _open_and_run(
    browser: Any, lab: tuple[str, str], notebook: str, width: int = 1400
) -> tuple[Any, list[str]]:
    base, token = lab
    context = browser.new_context(viewport={"width": width, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()
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
    # For (b), sampled in the page every 20 ms from now (started after (a), as it was, it
    # missed the ~0.5 s that ``summary`` executes when a cold JupyterLab drew late).
    page.evaluate(RECORD_SUMMARY)

    # (a) nodes appear while the cell still runs
    _wait(
        page,
        f"() => {{ const s = ({CELL_STATE})([0]); return s && Object.keys(s.nodes).length >= 4; }}",
    )
    first = _cell(page, 0)
    assert first["running"] and "STATUS" not in first["out"], first
    assert set(first["nodes"]) >= {"fetch", "answer", "summary", "report"}

    # (b) a node goes executing -> completed while the cell still runs. Sampled in the
    # page (a round trip from here can take longer than a step on a busy box).
    _wait(page, "() => window.__bnSeen.some(([s, running]) => s === 'executing' && running)")
    _shot(page, "widget_live_running", page.locator(".jp-Cell").nth(0))
    _wait(page, "() => window.__bnSeen.some(([s, running]) => s === 'completed' && running)")
    seen = page.evaluate("() => window.__bnSeen")
    assert ["executing", True] in seen and ["completed", True] in seen, seen[-20:]

    # (c) the final header shows the outcome and a non-zero cost
    # When the run ends the live widget is replaced by its saved snapshot (same renderer).
    _wait(
        page,
        """() => { const c = document.querySelectorAll('.jp-Cell')[0];
        const out = c && c.querySelector('.jp-OutputArea');
        return out && out.innerText.includes('STATUS completed') && c.querySelector('.bn-snapshot .bn-dag[data-status=completed]'); }""",
    )
    final = _cell(page, 0)
    assert final["status"] == "completed" and "STATUS completed" in final["out"], final
    assert final["cost"] and final["cost"] not in ("$0", "–"), final
    assert set(final["nodes"].values()) == {"completed"}, final
    cell0 = page.locator(".jp-Cell").nth(0).locator(".bn-dag")

    # The full run id, selectable, and a button that copies it
    run_id = final["out"].split("ID ", 1)[1].split()[0]
    assert len(run_id) == 32 and cell0.locator(".bn-runid").inner_text() == run_id
    assert page.evaluate(
        "() => getComputedStyle(document.querySelector('.jp-Cell .bn-runid')).userSelect"
    ) in ("all", "text")
    cell0.locator(".bn-copy").click()
    _wait(
        page, "() => document.querySelector('.jp-Cell .bn-copy').textContent.startsWith('copied')"
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == run_id

    # A fan-out card's model rows give their tokens with the unit, as the card itself does
    kid_tokens = cell0.locator(".bn-kid").first.locator(".bn-kid-num").nth(1).inner_text()
    assert kid_tokens.endswith(" tok") and kid_tokens[:-4].replace(",", "").isdigit(), kid_tokens
    assert " tok · " in cell0.locator('.bn-node[data-id="answer"]').inner_text()

    # The saved snapshot's panel: the captured request (it used to be empty), the response,
    # and the LLM calls table with its cost column and latency header unclipped.
    cell0.locator(".bn-kid").first.click()
    page.wait_for_selector(".jp-Cell .bn-panel .bn-ctx-response", timeout=10_000)
    request = cell0.locator(".bn-panel .bn-ctx-request .bn-pre").first.inner_text()
    assert request.startswith("[user] Explain durable execution"), request
    assert _clipped(page, 0) == [], _clipped(page, 0)
    assert cell0.locator(".bn-t-calls .bn-th span").nth(4).inner_text() == "latency"
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
    again = page.locator(".jp-Cell").nth(0).locator(".bn-dag")
    again.locator(".bn-kid").first.click()
    page.wait_for_selector(".jp-Cell .bn-panel .bn-ctx-request", timeout=10_000)
    assert again.locator(".bn-panel .bn-ctx-request .bn-pre").first.inner_text() == request
    _shot(page, "widget_reopened", page.locator(".jp-Cell").nth(0).locator(".bn-dag"))
    # back to the light theme: the lab's settings are shared by the tests that follow
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
    )
    _wait(page, "() => document.body.dataset.jpThemeLight === 'true'")
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
    assert "interrupted, stored and resumable" in state["out"], state
    assert 2.0 < waited < 15, waited  # after the 2.5 s grace period, long before the 60 s step
    _shot(page, "widget_cancelled_by_interrupt", page.locator(".jp-Cell").nth(0))
    assert not errors, errors


def test_kernel_interrupt_then_the_printed_line_resumes(lab: tuple[str, str], browser: Any) -> None:
    """Kernel › Interrupt: the cell ends with one short message naming the run and the
    line that resumes it (no traceback); that line, run in the next cell, resumes it."""
    page, errors = _open_and_run(browser, lab, "interrupt.ipynb")
    _wait(
        page,
        "() => document.querySelector('.jp-Cell .bn-node[data-id=slow][data-state=executing]')",
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[0].innerText.includes('stored and resumable')",
        timeout=20_000,
    )
    out = _cell(page, 0)["out"]
    assert "interrupted" in out and "1 completed" in out and "1 cancelled" in out, out
    assert "Traceback" not in out and "CancelledError" not in out and "File " not in out, out
    line = next(x for x in out.splitlines() if "await wf4.run(run_id=" in x)
    resume = line[line.index("await wf4.run") :].strip()
    _shot(page, "widget_interrupted", page.locator(".jp-Cell").nth(0))
    source = f"HANG = False\nrun4 = {resume}\nprint('RESUMED', run4.status, run4.id)"
    page.evaluate(
        """(src) => { const nb = window.jupyterapp.shell.currentWidget.content;
        nb.widgets[1].model.sharedModel.setSource(src); nb.activeCellIndex = 1;
        window.jupyterapp.commands.execute('notebook:run-cell'); }""",
        source,
    )
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[1].querySelector('.jp-OutputArea')"
        "?.innerText.includes('RESUMED')",
        timeout=30_000,
    )
    resumed = _cell(page, 1)["out"]
    run_id = resume.split('"')[1]
    assert f"RESUMED completed {run_id}" in resumed, resumed
    assert not errors, errors


def test_a_kernel_restart_stops_the_live_widget(lab: tuple[str, str], browser: Any) -> None:
    """Kernel › Restart mid-run: the old widget says its kernel is gone, its clock stops and
    its Cancel button goes (it would reach nothing), instead of looking like a live run."""
    page, errors = _open_and_run(browser, lab, "restart.ipynb")
    dag = page.locator(".jp-Cell").nth(0).locator(".bn-dag")
    _wait(
        page, "() => document.querySelector('.jp-Cell .bn-dag')?.innerText.includes('3 executing')"
    )
    assert dag.locator(".bn-cancel").is_visible()
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
    )
    _wait(page, "() => document.querySelector('.jp-Cell .bn-dag[data-disconnected]')")
    elapsed = dag.locator(".bn-stat-elapsed .bn-stat-value").text_content()
    line = dag.locator(".bn-gone").text_content()
    assert line == (
        "kernel restarted or disconnected: this view stopped updating; "
        "run the cell again to resume the run"
    ), line
    assert dag.locator(".bn-pill").text_content() == "disconnected"
    assert not dag.locator(".bn-cancel").is_visible()
    page.wait_for_timeout(1500)  # the clock ticks every 0.5 s while a run is live
    assert dag.locator(".bn-stat-elapsed .bn-stat-value").text_content() == elapsed
    _shot(page, "widget_kernel_restarted", page.locator(".jp-Cell").nth(0))
    assert not errors, errors


def test_open_panel_survives_the_end_of_the_run(lab: tuple[str, str], browser: Any) -> None:
    """The live widget becomes the saved snapshot when the run ends: the panel the user
    was reading stays open, on the same node, scrolled to the same place."""
    page, errors = _open_and_run(browser, lab, "panel.ipynb")
    dag = page.locator(".jp-Cell").nth(0).locator(".bn-dag")
    _wait(
        page,
        "() => document.querySelector('.jp-Cell .bn-node[data-id=long_result][data-state=completed]')",
    )
    assert _cell(page, 0)["running"]
    dag.locator(".bn-node[data-id=long_result]").click()
    page.wait_for_selector(".jp-Cell .bn-panel .bn-ctx-response", timeout=10_000)
    top = page.evaluate("""() => { const p = document.querySelector('.jp-Cell .bn-panel');
        p.scrollTop = 400; p.dispatchEvent(new Event('scroll')); return p.scrollTop; }""")
    assert top > 300, top
    assert not page.locator(".jp-Cell .bn-snapshot").count()  # still the live widget
    _wait(
        page,
        "() => document.querySelector('.jp-Cell .bn-snapshot .bn-dag[data-status=completed]')",
        timeout=20_000,
    )
    page.wait_for_selector(".jp-Cell .bn-snapshot .bn-panel .bn-ctx-response", timeout=10_000)
    page.wait_for_timeout(300)
    panel = page.evaluate("""() => { const p = document.querySelector('.jp-Cell .bn-snapshot .bn-panel');
        return {hidden: p.hidden, title: p.querySelector('.bn-panel-title').textContent, top: p.scrollTop}; }""")
    assert panel["hidden"] is False and panel["title"] == "long_result", panel
    assert abs(panel["top"] - top) <= 2, (panel, top)
    _shot(page, "widget_panel_after_end", dag)
    assert not errors, errors


VISIBLE = """([cell, id]) => {
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  const sc = c.querySelector('.bn-scroll').getBoundingClientRect();
  const el = c.querySelector(`.bn-node[data-id="${id}"], .bn-cell[data-id="${id}"], .bn-kid[data-child="${id}"]`);
  if (!el) return false;
  const r = el.getBoundingClientRect();
  return r.left >= sc.left - 1 && r.right <= sc.right + 1 && r.top >= sc.top - 1 && r.bottom <= sc.bottom + 1;
}"""

EDGES_ACROSS_CARDS = """([cell]) => {
  // Sample every edge path; a point inside a card (other than the edge's own ends) is a crossing.
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  const canvas = c.querySelector('.bn-canvas');
  const boxes = [...canvas.querySelectorAll('.bn-node, .bn-dense')].map(n => ({
    x: n.offsetLeft, y: n.offsetTop, w: n.offsetWidth, h: n.offsetHeight }));
  const bad = [];
  for (const path of canvas.querySelectorAll('path.bn-edge')) {
    const len = path.getTotalLength();
    for (let d = 8; d < len - 8; d += 4) {
      const p = path.getPointAtLength(d);
      if (boxes.some(b => p.x > b.x + 1 && p.x < b.x + b.w - 1 && p.y > b.y + 1 && p.y < b.y + b.h - 1)) {
        bad.push(path.getAttribute('d').slice(0, 40)); break; }
    }
  }
  return bad;
}"""


FIT = """([cell]) => {
  // The right edge of the last column against the right edge of what the scroller shows.
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  const sc = c.querySelector('.bn-scroll');
  const cards = [...c.querySelectorAll('.bn-node, .bn-dense')];
  return {right: Math.max(...cards.map(n => n.getBoundingClientRect().right)),
          shown: sc.getBoundingClientRect().left + sc.clientLeft + sc.clientWidth,
          overflow: sc.scrollWidth - sc.clientWidth};
}"""


def _fits(page: Any, cell: int) -> dict[str, float]:
    """The graph of a fitted view: the last column's right edge in view, no sideways scroll."""
    seen: dict[str, float] = page.evaluate(FIT, [cell])
    assert seen["right"] <= seen["shown"] and seen["overflow"] <= 0, seen
    return seen


def _zoom(page: Any, cell: int) -> float:
    return float(
        page.evaluate(
            "([c]) => document.querySelectorAll('.jp-Notebook .jp-Cell')[c].querySelector('.bn-dag').dataset.zoom",
            [cell],
        )
    )


def test_ten_two_hundred_and_a_thousand_nodes(lab: tuple[str, str], browser: Any) -> None:
    """Zoom and fit, jump to a failed node from the banner and from the count, edges that
    never cross a card; screenshots of a 10-, a 200- and a 1,000-node run."""
    page, errors = _open_and_run(browser, lab, "sizes.ipynb")
    # While `topics` runs, the map over its result has no items yet: it must not say "0 …"
    page.evaluate("""() => { window.__bnBadges = new Set(); const t = setInterval(() => {
        const b = document.querySelectorAll('.jp-Cell')[1]?.querySelector('.bn-node[data-id=fetch] .bn-badge');
        if (b) window.__bnBadges.add(b.textContent);
        if (document.querySelectorAll('.jp-Cell')[1]?.querySelector('.bn-snapshot')) clearInterval(t); }, 20); }""")
    cells = page.locator(".jp-Cell")
    for index, marker in ((1, "RUN10"), (2, "RUN200"), (3, "RUN1000"), (4, "RUNMAP")):
        _wait(
            page,
            f"() => {{ const c = document.querySelectorAll('.jp-Cell')[{index}]; return c && c.innerText.includes('{marker}') && c.querySelector('.bn-snapshot .bn-dag'); }}",
            timeout=60_000,
        )

    # JupyterLab does not lay out cells out of view (content-visibility): show each first.
    def show(index: int) -> Any:
        dag = cells.nth(index).locator(".bn-dag")
        dag.scroll_into_view_if_needed()
        page.wait_for_timeout(200)
        return dag

    badges = page.evaluate("() => [...window.__bnBadges]")
    assert "map over topics" in badges and "20 items" in badges, badges
    assert not any(b.startswith("0 ") for b in badges), badges

    # 10 nodes: every edge clear of the cards (topics -> report crosses two columns)
    ten = show(1)
    assert page.evaluate(EDGES_ACROSS_CARDS, [1]) == []
    # fitted to the saved snapshot's width (20 px narrower than the live widget it replaced)
    assert _zoom(page, 1) < 1
    _fits(page, 1)
    assert ten.locator(".bn-node[data-id=fact_check]").get_attribute("data-state") == "discarded"
    assert ten.locator(".bn-node[data-id=panel]").get_attribute("data-state") == "cancelled"
    assert "1 cancelled" in ten.locator(".bn-counts").text_content()
    assert ten.locator(".bn-node[data-id=fetch] .bn-state").text_content() == "20/20 completed"
    # debug=True is on: the panel of a failed step that made no call shows its failed
    # attempt's capture (the error; its traceback kept in run.context), no debug hint
    ten.locator(".bn-node[data-id=fact_check]").click()
    hint = ten.locator(".bn-panel .bn-context").inner_text()
    assert "error · attempt 1" in hint and "3 of 20 sources disagree" in hint, hint
    assert "debug=True" not in hint, hint
    ten.locator(".bn-close").click()
    # A retried step's panel lists its attempts: the two errors and the one that completed
    ten.locator(".bn-node[data-id=flaky_fetch]").click()
    page.wait_for_selector(".jp-Cell .bn-panel .bn-t-attempts", timeout=10_000)
    attempts = ten.locator(".bn-panel .bn-t-attempts").inner_text()
    assert "upstream timed out (call 1)" in attempts and "(call 2)" in attempts, attempts
    assert "completed" in attempts, attempts
    # laid out as a table: a row's four cells side by side on one line (a grid without its
    # columns stacked every cell on a line of its own)
    tops = page.evaluate(
        "() => [...document.querySelectorAll('.jp-Cell .bn-panel .bn-t-attempts .bn-th span')]"
        ".map((s) => Math.round(s.getBoundingClientRect().top))"
    )
    assert len(tops) == 4 and len(set(tops)) == 1, tops
    ten.locator(".bn-close").click()
    _shot(page, "widget_10_nodes", ten)

    # 200 nodes: wider than the view, it starts fitted to the width; zoom and Fit work
    two = show(2)
    assert page.evaluate(EDGES_ACROSS_CARDS, [2]) == []
    fitted = _zoom(page, 2)
    assert 0.4 <= fitted < 1, fitted
    _shot(page, "widget_200_nodes", two)
    two.locator(".bn-zoom-in").click()
    assert _zoom(page, 2) > fitted
    two.locator(".bn-zoom-reset").click()
    assert _zoom(page, 2) == 1
    assert not page.evaluate(VISIBLE, [2, "l3_11"])  # the failed node is off-screen at 1:1
    # the banner names the failed step: a click scrolls to it and opens it
    two.locator(".bn-failure-item").first.click()
    assert page.evaluate(VISIBLE, [2, "l3_11"])
    assert two.locator(".bn-panel-title").inner_text() == "l3_11"
    assert "bad input row 17" in two.locator(".bn-panel .bn-pre-error").inner_text()
    _shot(page, "widget_200_nodes_jump", two)
    two.locator(".bn-fit").click()
    fitted = _zoom(page, 2)
    assert fitted < 1
    # the count of cancelled steps finds them one after the other, at the same zoom (a
    # jump scrolls, it does not zoom: docs/widget.md)
    two.locator(".bn-counts [data-jump=cancelled]").click()
    first = two.locator(".bn-panel-title").inner_text()
    two.locator(".bn-counts [data-jump=cancelled]").click()
    second = two.locator(".bn-panel-title").inner_text()
    assert _zoom(page, 2) == fitted
    assert first != second and {first, second} <= {"l4_00", "l4_01", "l4_02"} | set(
        first.split()
    ) | set(second.split())
    assert page.evaluate(VISIBLE, [2, second])

    # 1,000 steps side by side: the grid; the discarded count opens each failed cell
    thousand = show(3)
    assert page.evaluate(EDGES_ACROSS_CARDS, [3]) == []
    assert _zoom(page, 3) < 1
    _fits(page, 3)
    _shot(page, "widget_1000_nodes", thousand)
    assert thousand.locator(".bn-cell").count() == 1000
    for expected in ("s017", "s512", "s901"):
        thousand.locator(".bn-counts [data-jump=discarded]").click()
        assert thousand.locator(".bn-panel-title").inner_text() == expected
        assert page.evaluate(VISIBLE, [3, expected])

    # a 1,000-item map: the failed child is opened inside its group
    mapped = show(4)
    mapped.locator('.bn-failure-item[data-id="work[17]"]').click()
    assert mapped.locator(".bn-panel-title").inner_text() == "work[17]"
    assert page.evaluate(VISIBLE, [4, "work[17]"])
    assert "failed" not in mapped.locator(".bn-node[data-id=work] .bn-state").get_attribute("title")
    _shot(page, "widget_1000_map", mapped)
    # debug is off and this child made a call: the panel says how to keep its prompts
    mapped.locator('.bn-kid[data-child="work[18]"]').click()
    hint = mapped.locator(".bn-panel .bn-context").inner_text()
    assert "were not kept" in hint and "debug=True" in hint, hint
    assert not errors, errors


def test_a_large_map_is_counted_and_its_first_children_listed(
    lab: tuple[str, str], browser: Any
) -> None:
    """A 5,000-item map is tallied (``_tally``): its counts and sums come from the kernel's
    tally, live and in the saved snapshot; its table and side panel list its first 500
    children and say so; a child that failed past them is named by the failure line and
    opens, and the discarded count finds both failures."""
    page, errors = _open_and_run(browser, lab, "big.ipynb")
    page.evaluate("""() => { window.__bnBig = []; const t = setInterval(() => {
        const c = document.querySelectorAll('.jp-Cell')[1];
        const s = c && c.querySelector('.bn-node[data-id=label] .bn-state');
        if (s) window.__bnBig.push(s.textContent);
        if (c && c.querySelector('.bn-snapshot')) clearInterval(t); }, 50); }""")
    _wait(
        page,
        "() => { const c = document.querySelectorAll('.jp-Cell')[1]; return c && c.innerText.includes('RUNBIG') && c.querySelector('.bn-snapshot .bn-dag'); }",
        timeout=120_000,
    )
    seen = page.evaluate("() => window.__bnBig")
    done = {int(text.split("/")[0].replace(",", "")) for text in seen if "/5,000" in text}
    assert any(0 < n < 4998 for n in done), seen  # counted live, as the children completed
    cell = page.locator(".jp-Cell").nth(1)
    big = cell.locator(".bn-dag")
    big.scroll_into_view_if_needed()
    printed = cell.locator(".jp-OutputArea").inner_text()
    line = next(text for text in printed.splitlines() if text.startswith("RUNBIG"))
    steps = line.split(" of ")[1].split(" steps")[0]  # the run's own count of its steps
    group = big.locator(".bn-node[data-id=label]")
    assert group.locator(".bn-state").inner_text() == "4,998/5,000 completed"
    assert group.locator(".bn-others").inner_text() == "2 discarded"
    assert big.locator(".bn-counts").inner_text().endswith(f"of {steps} steps")
    cost = big.locator(".bn-stat-cost .bn-stat-value").inner_text()
    _shot(page, "widget_5000_map", big)
    # its table: the first 500 children, then a line for the others
    group.locator(".bn-toggle").click()
    group = big.locator(".bn-node[data-id=label]")
    assert group.locator(".bn-kid[data-child]").count() == 500
    assert "4,500 more" in group.locator(".bn-kid-more").inner_text()
    _shot(page, "widget_5000_map_open", big)
    # the failure line names the child past them; it opens with its error
    big.locator('.bn-failure-item[data-id="label[4321]"]').click()
    assert big.locator(".bn-panel-title").inner_text() == "label[4321]"
    assert "row 4321: empty text" in big.locator(".bn-panel .bn-pre-error").inner_text()
    titles = []
    for _ in range(3):  # the map itself is discarded too
        big.locator(".bn-counts [data-jump=discarded]").click()
        titles.append(big.locator(".bn-panel-title").inner_text())
    assert sorted(titles) == ["label", "label[17]", "label[4321]"], titles
    # the group's panel: its facts count every child, its table lists the first 500
    big.locator(".bn-node[data-id=label] .bn-name").click()
    assert big.locator(".bn-panel-title").inner_text() == "label"
    facts = big.locator(".bn-panel .bn-facts").inner_text()
    assert cost.startswith("$") and cost in facts, (cost, facts)  # the run's calls: all here
    assert "4,998" in facts.split("LLM calls")[1], facts  # one call a completed child
    assert "The first 500 of 5,000 children" in big.locator(".bn-panel .bn-kids-more").inner_text()
    assert big.locator(".bn-panel .bn-t-kids .bn-click").count() == 500
    assert not errors, errors


def test_a_fitted_graph_stays_whole_in_the_saved_snapshot(
    lab: tuple[str, str], browser: Any
) -> None:
    """A view wide enough to fit the 200-step graph above the automatic fit's floor (50 %):
    the live widget starts fitted, and the saved snapshot that replaces it (narrower: an
    HTML output is padded) is fitted again to its own width; its last column was cut off
    until the user clicked Fit. Fit then changes nothing."""
    page, errors = _open_and_run(browser, lab, "wide.ipynb", width=1800)
    _wait(page, "() => document.querySelectorAll('.jp-Cell')[1]?.querySelector('.bn-dag .bn-node')")
    live = _zoom(page, 1)
    assert 0.5 < live < 1, live
    _wait(
        page,
        "() => { const c = document.querySelectorAll('.jp-Cell')[1]; return c.textContent.includes('RUN200') && c.querySelector('.bn-snapshot .bn-dag'); }",
        timeout=60_000,
    )
    dag = page.locator(".jp-Cell").nth(1).locator(".bn-dag")
    dag.scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    fitted = _zoom(page, 1)
    assert 0.5 < fitted <= live, (fitted, live)
    _fits(page, 1)
    _shot(page, "widget_200_nodes_wide", dag)
    dag.locator(".bn-fit").click()
    assert abs(_zoom(page, 1) - fitted) < 0.001
    assert not errors, errors


BATCH_LINES = """([cell]) => {
  const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell];
  return c ? [...c.querySelectorAll('.bn-batch')].map(b => b.textContent) : [];
}"""


def test_a_batch_shows_its_progress_live_and_after_a_reopen(
    lab: tuple[str, str], browser: Any
) -> None:
    """A batched map (DESIGN §12): the header's batch line goes from in progress (with what
    the batch rates save) to done (with what was saved); the run read back shows the same."""
    page, errors = _open_and_run(browser, lab, "batch.ipynb")
    _wait(page, f"() => ({BATCH_LINES})([0]).some(t => t.includes('in progress'))", timeout=60_000)
    [line] = page.evaluate(BATCH_LINES, [0])
    assert "mock/gpt-4o-mini" in line and "of 20 done" in line and "saves 50%" in line, line
    assert _cell(page, 0)["running"]
    _shot(page, "widget_batch_running", page.locator(".jp-Cell").nth(0).locator(".bn-dag"))
    _wait(
        page,
        "() => document.querySelectorAll('.jp-Cell')[0].innerText.includes('BATCH-RUN completed')",
        timeout=60_000,
    )
    _wait(page, f"() => ({BATCH_LINES})([0]).some(t => t.includes('done'))")
    [done] = page.evaluate(BATCH_LINES, [0])
    assert "20 of 20 done" in done and "saved $" in done, done
    _wait(page, f"() => ({BATCH_LINES})([1]).length > 0", timeout=30_000)
    assert page.evaluate(BATCH_LINES, [1]) == [done]
    _shot(page, "widget_batch_reopened", page.locator(".jp-Cell").nth(1).locator(".bn-dag"))
    assert not errors, errors


def test_a_taken_over_run_says_who_took_it(browser: Any, tmp_path: Path) -> None:
    """The saved snapshot of a run whose execution here was taken over by another lease
    owner (docs/workers.md "Failures"), in Chromium: the status pill says "taken over",
    the header names who continues the run and how to follow it, no step is drawn
    cancelled. (The live widget and the snapshot share the renderer: no kernel needed.)"""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    from baton_nb.widget import DagWidget
    from baton_nb.widget._snapshot import snapshot_bundle
    from tests.integration._takeover import taken_over_run

    db = f"sqlite:///{tmp_path / 'taken.db'}"
    # In a thread of its own: Playwright's sync API runs an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            anyio.run, lambda: taken_over_run(db, "browser_taken", "host-b:77:c0ffee00")
        ).result(timeout=60)
    bundle = snapshot_bundle(run, DagWidget(run)._snapshot_state())
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    try:
        page = context.new_page()
        page.set_content(f"<!doctype html><meta charset=utf-8><body>{bundle['text/html']}</body>")
        _wait(page, "() => document.querySelector('.bn-snapshot .bn-dag[data-status=taken_over]')")
        seen = page.evaluate(
            """() => { const root = document.querySelector('.bn-snapshot .bn-dag');
                return { pill: root.querySelector('.bn-pill').textContent,
                         taken: root.querySelector('.bn-taken')?.textContent || '',
                         cancelled: root.querySelectorAll('.st-cancelled').length }; }"""
        )
        _shot(page, "taken_over_snapshot")
    finally:
        context.close()
    assert seen["pill"] == "taken over"
    assert "taken over by host-b:77:c0ffee00" in seen["taken"]
    assert f'bn.DagWidget("{run.id}", db=...)' in seen["taken"]
    assert seen["cancelled"] == 0


def test_the_panel_counts_cache_hits_apart(browser: Any, tmp_path: Path) -> None:
    """A step whose calls were answered from the response cache, in the saved snapshot
    (the live widget's renderer): its panel shows the paid calls, then "+ N from the
    cache", and the tokens of the paid call only; the calls table marks the hits."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    import baton_nb as bn
    from baton_nb.widget import DagWidget
    from baton_nb.widget._snapshot import snapshot_bundle

    db = f"sqlite:///{tmp_path / 'cached.db'}"

    def workflow(prompts: tuple[str, ...]) -> bn.Workflow:
        wf = bn.Workflow("browser_cached", db=db, cache=True)

        @wf.step()
        async def ask(ctx: bn.Context) -> str:
            for p in prompts:
                await ctx.complete(prompt=p, model="mock/gpt-4o-mini", max_tokens=20)
            return "done"

        return wf

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs a loop in this thread
        pool.submit(anyio.run, lambda: workflow(("x", "y")).run(display=False)).result(60)
        again = workflow(("x", "y", "z"))
        run = pool.submit(anyio.run, lambda: again.run(display=False)).result(timeout=60)
    totals = run.report().by_step()["ask"]
    bundle = snapshot_bundle(run, DagWidget(run)._snapshot_state())
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    try:
        page = context.new_page()
        page.set_content(f"<!doctype html><meta charset=utf-8><body>{bundle['text/html']}</body>")
        _wait(page, "() => document.querySelector('.bn-snapshot .bn-node[data-id=ask]')")
        page.locator(".bn-snapshot .bn-node[data-id=ask]").click()
        _wait(page, "() => document.querySelector('.bn-snapshot .bn-panel .bn-t-calls')")
        facts = page.evaluate(
            """() => { const out = {};
                for (const k of document.querySelectorAll('.bn-panel .bn-k'))
                    out[k.textContent] = k.nextElementSibling.textContent;
                return out; }"""
        )
        models = page.evaluate(
            """() => [...document.querySelectorAll('.bn-panel .bn-t-calls .bn-tr:not(.bn-th)')]
                .map(r => r.firstElementChild.textContent)"""
        )
    finally:
        context.close()
    assert facts["LLM calls"] == "1 (+ 2 from the cache)", facts
    tokens = f"{totals.usage.input_tokens:,} in · {totals.usage.output_tokens:,} out"
    assert facts["Tokens"] == tokens, facts
    assert [m.endswith("(from the cache)") for m in models] == [True, True, False], models


KID_ROWS = """(step) => [...document.querySelectorAll(`.bn-node[data-id="${step}"] .bn-kid[data-child]`)]
  .map(row => {
    // where a cell's text is drawn: its text's extent, within its box if it clips (a name)
    const text = (el) => { const r = document.createRange(); r.selectNodeContents(el);
                           const t = r.getBoundingClientRect(), b = el.getBoundingClientRect();
                           if (getComputedStyle(el).overflowX === 'visible') return [t.left, t.right];
                           return [Math.max(t.left, b.left), Math.min(t.right, b.right)]; };
    const [label, dur, tok, cost] = [...row.children].slice(1);
    const row_ = row.getBoundingClientRect();
    return { cells: [label, dur, tok, cost].map(c => c.textContent),
             text: [label, dur, tok, cost].map(text), right: row_.right,
             widths: [dur, tok, cost].map(c => c.getBoundingClientRect().width),
             overflowing: [label, dur, tok, cost].filter(c => c.scrollWidth > c.clientWidth)
                            .map(c => c.textContent) };
  })"""


# The rows laid out as where CSS subgrid is unknown (Chrome < 117, Safari < 16): with the
# fixed columns dag.css gives them there (its --bn-kid-columns), not the card's shared ones.
NO_SUBGRID = "<style>.bn-kid { grid-template-columns: var(--bn-kid-columns) !important; }</style>"


@pytest.mark.parametrize("layout", ["subgrid", "no_subgrid"])
def test_a_fanout_cards_rows_never_run_their_numbers_together(
    layout: str, browser: Any, tmp_path: Path
) -> None:
    """A fan-out card's rows (model, duration, tokens, cost) in the saved snapshot (the live
    widget's renderer), in Chromium: with the widest realistic values ("1h 02m",
    "123.5M tok", "$0.00000123", "$12.34") no text runs into the next or out of the row
    ("201 tok" ran into "$0.0000481": the columns were sized for "58"); with everyday ones
    the model's name is whole. The same with the fixed columns of browsers without subgrid
    (sized for "$0.0000481", "$0.00000123" ran 5.5px out of the row), where a name may be
    cut even among everyday numbers."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    import baton_nb as bn
    from baton_nb.widget import DagWidget
    from baton_nb.widget._snapshot import snapshot_bundle

    models = ["mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.0-flash"]
    wide_models = [*models, "mock/gpt-4o", "mock/o3", "mock/gpt-4.1"]
    wf = bn.Workflow("browser_kid_rows", db=f"sqlite:///{tmp_path / 'kids.db'}")

    @wf.step(models=models)
    async def everyday(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="Explain durable execution")).text

    @wf.step(models=wide_models)
    async def wide(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="Explain fan-out")).text

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs a loop in this thread
        run = pool.submit(anyio.run, lambda: wf.run(display=False)).result(timeout=60)
    state = DagWidget(run)._snapshot_state()
    # (input + output tokens, cost, seconds): what a long run of big prompts shows
    widest = [
        (150, 51, "0.0000481", 0.7),  # the tester's "201 tok" and "$0.0000481"
        (123_400_000, 100_000, "12.34", 303),  # "123.5M tok", "5m 03s"
        (999_000, 600, "0.0000481", 59),  # "1.0M tok" (it read "1000k")
        (12_300, 45, "0.000213", 12),
        (88_000, 1_234, "123.4", 3723),  # "1h 02m"
        (5, 3, "0.00000123", 0.1),  # "$0.00000123"
    ]
    for model, (ti, to, cost, seconds) in zip(wide_models, widest, strict=True):
        row = list(state["rows"][f"wide[{model}]"])
        row[3] = row[2] + int(seconds * 1000)  # t1 = t0 + the duration
        row[4], row[5], row[6] = ti, to, cost
        state["rows"][f"wide[{model}]"] = tuple(row)
    bundle = snapshot_bundle(run, state)
    context = browser.new_context(viewport={"width": 1200, "height": 700}, device_scale_factor=2)
    try:
        page = context.new_page()
        forced = NO_SUBGRID if layout == "no_subgrid" else ""
        page.set_content(
            f"<!doctype html><meta charset=utf-8><body>{bundle['text/html']}{forced}</body>"
        )
        _wait(
            page, "() => document.querySelectorAll('.bn-snapshot .bn-kid[data-child]').length === 9"
        )
        rows = {step: page.evaluate(KID_ROWS, step) for step in ("everyday", "wide")}
        suffix = "" if layout == "subgrid" else "_no_subgrid"
        for step, name in (("wide", "widget_kid_rows"), ("everyday", "widget_kid_rows_everyday")):
            _shot(page, name + suffix, page.locator(f'.bn-snapshot .bn-node[data-id="{step}"]'))
    finally:
        context.close()
    shown = [r["cells"][1:] for r in rows["wide"]]
    assert shown == [
        ["0.7s", "201 tok", "$0.0000481"],
        ["5m 03s", "123.5M tok", "$12.34"],
        ["59s", "1.0M tok", "$0.0000481"],
        ["12s", "12k tok", "$0.000213"],
        ["1h 02m", "89k tok", "$123"],
        ["0.1s", "8 tok", "$0.00000123"],
    ], shown
    for row in rows["wide"] + rows["everyday"]:
        drawn = row["text"]  # [left, right] of the name, duration, tokens and cost
        # each text ends before the next begins, the columns' gap (6px) apart at least
        for (_, end), (start, _) in itertools.pairwise(drawn):
            assert end <= start - 5, row
        assert drawn[-1][1] <= row["right"], row
        assert row["overflowing"] in ([], [row["cells"][0]]), row  # only a name may be cut
    assert [r["cells"][0] for r in rows["everyday"]] == [m.split("/")[1] for m in models]
    # the numbers' columns: each as wide as its widest text in the card (subgrid), or the
    # same fixed widths in every card (no subgrid: the style above took effect)
    widths = {step: {tuple(r["widths"]) for r in found} for step, found in rows.items()}
    assert all(len(w) == 1 for w in widths.values()), widths  # one grid per card
    if layout == "subgrid":
        assert widths["everyday"] != widths["wide"], widths
        assert all(r["overflowing"] == [] for r in rows["everyday"]), rows["everyday"]
    else:
        assert widths["everyday"] == widths["wide"], widths
