"""The example notebooks in notebooks/ run top to bottom in a real kernel, without errors.

Each notebook is copied into ``tmp_path`` and executed there with nbclient (kernel
``python3``), so the SQLite file and the CSVs it writes never land in the checkout; the
default database (``BATON_NB_DB``) points into ``tmp_path`` too. Beyond "no error", each
notebook is checked for what it is there to show.
"""

from __future__ import annotations

import csv
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTGRES_URL

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CSV_HEADER = (
    "run_id,workflow,step,model,provider,calls,input_tokens,cached_input_tokens,"
    "cache_write_tokens,output_tokens,reasoning_tokens,cost_usd,latency_ms,replayed_calls,"
    "cache_write_1h_tokens,web_search_requests,fees_usd,price_source,price_model,"
    "cached_calls,saved_usd,unanswered_usd,unpriced_calls"
)
MODELS = ("mock/gpt-4o-mini", "mock/claude-haiku-4-5", "mock/gemini-2.5-flash")


def _execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a temp copy of notebooks/<name> with ``tmp_path`` as working directory."""
    copy = tmp_path / name
    shutil.copyfile(NOTEBOOKS_DIR / name, copy)
    monkeypatch.setenv("BATON_NB_DB", f"sqlite:///{tmp_path / 'default.db'}")  # the kernel inherits
    # 06_workers: a database of its own on the test server, created and dropped by it
    monkeypatch.delenv("BATON_NB_WORKERS_DB", raising=False)
    monkeypatch.setenv("BATON_NB_PG_SERVER", POSTGRES_URL.rsplit("/", 1)[0])
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        if any("restart-kernel" in c.metadata.get("tags", ()) for c in nb.cells):
            _execute_with_restarts(client, nb)
        else:
            client.execute()
    finally:
        nbformat.write(nb, copy)  # the executed copy stays in tmp_path for a look on failure
    return nb


def _execute_with_restarts(client: Any, nb: Any) -> None:
    """Run every cell; after a cell tagged ``restart-kernel``, restart the kernel (what the
    notebook asks its reader to do there: nothing of the cells above stays in memory)."""
    import asyncio

    async def run() -> None:
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                await client.async_execute_cell(cell, index)
                if "restart-kernel" in cell.metadata.get("tags", ()):
                    await client.km.restart_kernel(now=True)
                    await client.kc.wait_for_ready(timeout=60)

    asyncio.run(run())


def _cell(nb: Any, startswith: str) -> Any:
    """The code cell whose source starts with ``startswith``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith(startswith):
            return cell
    raise AssertionError(f"no code cell starts with {startswith!r}")


def _text(cell: Any) -> str:
    """Everything a cell showed: streams, text/plain and text/html."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
            parts.append(out.data.get("text/html", ""))
    return "\n".join(parts)


def _assert_dag_shown(cell: Any, steps: list[str], status: str = "completed") -> None:
    """The run cell shows the live widget, or the saved snapshot that replaced it at the end."""
    shown = [out for out in cell.outputs if out.output_type == "display_data"]
    assert shown, "`await wf.run()` displayed nothing: the widget should show by itself"
    data = shown[0].data
    if WIDGET_MIME in data:
        return
    said = data.get(
        "text/plain", ""
    )  # "... cancelled: ..." or "... cancelled (budget reached): ..."
    assert f"' {status}: " in said or f"' {status} (" in said, (
        f"the snapshot does not say {status!r}"
    )
    # The part shown where scripts do not run (GitHub, nbviewer): no CSS, no dag.js.
    static = re.sub(r"<(style|script)\b.*?</\1>", "", data.get("text/html", ""), flags=re.S)
    for step in steps:
        assert step in static, f"step {step!r} missing from the DAG snapshot"


def _not_ignored(files: list[Path], folder: Path) -> list[str]:
    """The files a notebook wrote in ``folder``, as they would be in notebooks/, that the
    checkout's .gitignore does not ignore (a user running it there would see them in
    ``git status``). Nothing to check outside a git checkout."""
    import subprocess

    repo = NOTEBOOKS_DIR.parent
    if not (repo / ".git").exists():
        return []
    names = [f"notebooks/{p.relative_to(folder).as_posix()}" for p in files]
    out = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(names),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr  # 1: none of them is ignored
    ignored = set(out.stdout.split("\n"))
    return [n for n in names if n not in ignored]


def _check_quickstart(nb: Any, tmp_path: Path) -> None:
    _assert_dag_shown(_cell(nb, "run = await wf.run("), ["topic", "facts", "summary"])
    assert "completed" in _text(_cell(nb, "run.status"))
    states = _text(_cell(nb, "import pandas as pd"))
    assert states.count("completed") >= 3
    assert (tmp_path / "notebook_runs.db").exists()


def _check_multi_model(nb: Any, tmp_path: Path) -> None:
    _assert_dag_shown(_cell(nb, "run = await wf.run("), ["answers", "synthesis"])
    answers = _text(_cell(nb, 'pd.Series(run.results["answers"]'))
    by_model = _text(_cell(nb, "by_model = run.report().by_model()"))
    for model in MODELS:
        assert model in answers
        assert model in by_model
    assert "mock/gpt-4o" in by_model  # the synthesis call, priced on its own
    assert re.search(r"cheapest of the three: mock/\S+ \(\$0\.\d+\)", _text(_cell(nb, "fanout =")))


def _check_cost_report(nb: Any, tmp_path: Path) -> None:
    assert _text(_cell(nb, "prompts = [")).count("'completed'") == 3
    with open(tmp_path / "costs.csv", encoding="utf-8", newline="") as fh:
        assert fh.readline().rstrip("\n") == CSV_HEADER
    with open(tmp_path / "costs_all_runs.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["run_id"] for r in rows}) == 3
    assert len(rows) == 9  # 3 runs x (2 fan-out children + the summary)
    assert all(re.fullmatch(r"\d+\.\d+", r["cost_usd"]) for r in rows)
    assert all(r["price_source"].startswith("genai-prices ") for r in rows)
    sources = _text(_cell(nb, 'df[["model", "price_model", "price_source"]]'))
    assert "openai/gpt-4o-mini" in sources and "genai-prices" in sources
    repriced = _text(_cell(nb, "repriced = await bn.report("))
    assert "priced as" in repriced and "openai/gpt-4o-mini" in repriced
    assert "<table" in _cell(nb, "report = batch[0].report()").outputs[0].data["text/html"]


def _check_resume(nb: Any, tmp_path: Path) -> None:
    """Completed steps are not redone and no call is paid twice."""
    _assert_dag_shown(_cell(nb, "run = await wf.run("), ["outline", "draft", "polish"], "failed")
    _assert_dag_shown(_cell(nb, "fail_polish = False"), ["outline", "draft", "polish"])
    assert "'failed', ['polish']" in _text(_cell(nb, "run.status, run.failed_steps"))
    assert "'completed'" in _text(_cell(nb, "resumed.status"))
    line = re.search(
        r"paid calls before resume: (\d+), after: (\d+), replayed: (\d+)",
        _text(_cell(nb, "assert second.calls == first.calls")),
    )
    assert line is not None
    before, after, replayed = map(int, line.groups())
    assert before == after == 4 and replayed == 1
    # Straight from the database: every call was paid for at most once.
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        paid = con.execute(
            "SELECT step, call_index, COUNT(*) FROM workflow_step_stats "
            "WHERE NOT replayed GROUP BY run_id, step, call_index"
        ).fetchall()
        replays = con.execute("SELECT step FROM workflow_step_stats WHERE replayed").fetchall()
    assert len(paid) == 4 and all(count == 1 for _, _, count in paid)
    assert replays == [("polish",)]


def _check_structured(nb: Any, tmp_path: Path) -> None:
    """One Receipt per provider, their costs side by side, and a two-tool loop each."""
    _assert_dag_shown(_cell(nb, "run = await wf.run("), ["extract"])
    parsed = _text(_cell(nb, 'pd.DataFrame(run.results["extract"])'))
    costs = _text(_cell(nb, "by_model = run.report().by_model()"))
    for model in MODELS:
        assert model in parsed and model in costs
    for field in ("merchant", "total", "currency", "items", "paid_by_card"):
        assert field in parsed
    loop = _cell(nb, 'pd.DataFrame(tool_run.results["plan"])').outputs[0].data["text/html"]
    assert loop.count("get_weather(") == 3 and loop.count("get_local_time(") == 3
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        rows = con.execute(
            "SELECT model, COUNT(*) FROM workflow_step_stats WHERE step LIKE 'plan%' "
            "GROUP BY model ORDER BY model"
        ).fetchall()
    assert rows == [(m, 3) for m in sorted(MODELS)]  # three model calls per tool loop


def _check_batch(nb: Any, tmp_path: Path) -> None:
    """A batched map at half price; a kernel restart while a batch runs, then a resume that
    re-attaches to it: one batch, each call paid once."""
    _assert_dag_shown(_cell(nb, "import baton_nb as bn\nfrom batch_demo import DB, wf\n\nrun ="),
                      ["reviews", "sentiment", "tally"])  # fmt: skip
    saving = _text(_cell(nb, "[batch] = run.batches.values()"))
    # amounts as the library shows money: exact, no trailing zeros (it read "the $0.00072690")
    money = r"\$0\.\d*[1-9]"
    assert re.search(rf"50 calls in one mock batch \(done\): paid {money}, {money} less", saving)
    assert re.search(rf"less than the {money} of standard rates", saving), saving
    assert "(50% off)" in saving
    loaded = _cell(nb, "import baton_nb as bn\nfrom batch_demo import DB, wf\n\n[last]")
    # after the restart: `stored` (bn.Run.load, the widget package never imported) as the
    # cell's result shows the saved DAG snapshot, not a line of text
    _assert_dag_shown(loaded, ["reviews", "sentiment", "tally"], "cancelled")
    waiting = _text(loaded)
    assert "waiting for: [('running', 200)]" in waiting or "('submitted', 200)" in waiting
    _assert_dag_shown(_cell(nb, "resumed = await wf.run("), ["reviews", "sentiment", "tally"])
    final = _text(_cell(nb, "batches = list(resumed.batches.values())"))
    assert "1 batch, 200 of 200 answered, 200 calls paid (each once)" in final
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        rows = con.execute(
            "SELECT run_id, COUNT(*) FROM workflow_provider_batches GROUP BY run_id"
        ).fetchall()
        paid = con.execute(
            "SELECT COUNT(*), COUNT(DISTINCT run_id || step || call_index) FROM "
            "workflow_step_stats WHERE NOT replayed AND batch"
        ).fetchone()
    assert sorted(count for _, count in rows) == [1, 1]  # one batch per run, none twice
    assert paid == (250, 250)


def _check_spend_less(nb: Any, tmp_path: Path) -> None:
    """A budget stops the run under its cap, a resume pays nothing twice, a cached re-run
    pays nothing."""
    _assert_dag_shown(_cell(nb, 'run = await wf.run(budget="0.01")'), ["answer"], "cancelled")
    stopped = _text(_cell(nb, "print(run.status)"))
    assert "cancelled" in stopped and "budget reached" in stopped
    resumed = _text(_cell(nb, "paid = [c for c in resumed.calls"))
    assert re.search(r"40 calls paid in all \(each once\), \d+ replayed", resumed)
    cached = _text(_cell(nb, "report = second.report()"))
    assert "second run: 0 calls paid, 40 answered from the cache" in cached
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        paid = con.execute(
            "SELECT COUNT(*), COUNT(DISTINCT run_id || step || call_index) FROM "
            "workflow_step_stats WHERE NOT replayed AND NOT cached"
        ).fetchone()
        hits = con.execute("SELECT SUM(hits) FROM workflow_cache").fetchone()
    assert paid == (80, 80)  # the budgeted run's 40 and the first cached run's 40, once each
    assert hits == (40,)


def _check_workers(nb: Any, tmp_path: Path) -> None:
    """A run submitted to two worker subprocesses completes; workers=True shows the DAG.
    The runs went to a database the notebook created, dropped at its end (never into the
    server's ``postgres`` database)."""
    assert "completed {'cities': 40, 'words':" in _text(_cell(nb, "done = await run.wait()"))
    assert "workers-demo" in _text(_cell(nb, "print(subprocess.run("))
    _assert_dag_shown(_cell(nb, "run = await wf.run("), ["cities", "describe", "tally"])
    assert "'completed', {'cities': 20" in _text(_cell(nb, "run.status, run.results"))
    stopped = _text(_cell(nb, "for worker in workers:"))
    assert "[0, 0]" in stopped
    dropped = re.search(r"dropped database (baton_workers_demo_\d+)", stopped)
    assert dropped is not None, stopped
    assert not _database_exists(dropped.group(1))


def _database_exists(name: str) -> bool:
    import asyncio

    import asyncpg

    async def exists() -> bool:
        con = await asyncpg.connect(POSTGRES_URL.rsplit("/", 1)[0] + "/postgres", timeout=10)
        try:
            return bool(await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await con.close()

    return asyncio.run(exists())


CHECKS = {
    "01_quickstart.ipynb": _check_quickstart,
    "02_multi_model.ipynb": _check_multi_model,
    "03_cost_report.ipynb": _check_cost_report,
    "04_resume.ipynb": _check_resume,
    "05_structured.ipynb": _check_structured,
    "06_workers.ipynb": _check_workers,
    "07_spend_less.ipynb": _check_spend_less,
    "08_batch.ipynb": _check_batch,
}


def test_notebooks_are_saved_clean() -> None:
    assert [p.name for p in NOTEBOOKS if p.name in CHECKS] == list(CHECKS)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert nb.cells[0].cell_type == "markdown", f"{path.name}: start with a markdown intro"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name}: save the notebook with outputs cleared"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout_before = sorted(NOTEBOOKS_DIR.iterdir())
    nb = _execute(path.name, tmp_path, monkeypatch)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            assert out.output_type != "error", f"{cell.source!r} raised {out.ename}: {out.evalue}"
            # Warnings inside the kernel (deprecations, unknown prices, ...) go to stderr.
            assert not (out.output_type == "stream" and out.name == "stderr"), (
                f"{cell.source!r} wrote to stderr: {out.text}"
            )
    assert sorted(NOTEBOOKS_DIR.iterdir()) == checkout_before, "the notebook wrote into notebooks/"
    batches = tmp_path / "mock_batches"  # the tests' BATON_NB_MOCK_BATCHES (a user's: a temp dir)
    written = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name != path.name and batches not in p.parents
    ]
    assert _not_ignored(written, tmp_path) == [], "run in notebooks/, these show in git status"
    check = CHECKS.get(path.name)
    if check is not None:
        check(nb, tmp_path)


def test_notebook_02_rerun_with_the_cache_buys_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notebook 02 run twice with ``bn.configure(cache=True)`` (a cell put before it), in
    one folder (one database): the second run buys nothing, its report says the saving."""
    monkeypatch.setenv("BATON_NB_DB", f"sqlite:///{tmp_path / 'default.db'}")
    texts = []
    for _ in range(2):
        nb = nbformat.read(NOTEBOOKS_DIR / "02_multi_model.ipynb", as_version=4)
        nb.cells.insert(
            1, nbformat.v4.new_code_cell("import baton_nb as bn\nbn.configure(cache=True)")
        )
        nb.cells.append(nbformat.v4.new_code_cell("print(run.report())"))
        client = nbclient.NotebookClient(
            nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
        texts.append(_text(nb.cells[-1]))
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        runs = [r for (r,) in con.execute("SELECT id FROM workflow_runs ORDER BY created_at")]
        assert len(runs) == 2
        first, second = (
            con.execute(
                "SELECT SUM(NOT cached), SUM(cached) FROM workflow_step_stats WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            for run_id in runs
        )
    assert first == (4, 0)  # three models and the synthesis, paid
    assert second == (0, 4)  # the same four, answered from the cache: no provider call
    assert re.search(
        r"Cost: \$0 for 1 run, 0 calls, .*4 answered from the cache \(\$0\.\d+ saved\)", texts[1]
    )


def test_notebook_07_runs_again_in_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Run All of notebook 07 in the folder of the first (its database, with the
    answers the first cached): its cached section's first run still pays and the second
    pays nothing, as the first Run All showed."""
    for _ in range(2):
        nb = _execute("07_spend_less.ipynb", tmp_path, monkeypatch)
        errors = [o for c in nb.cells for o in c.get("outputs", ()) if o.output_type == "error"]
        assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
        cached = _text(_cell(nb, "report = second.report()"))
        assert re.search(r"first run paid \$0\.\d+ for 40 calls", cached), cached
        assert "second run: 0 calls paid, 40 answered from the cache" in cached
    with closing(sqlite3.connect(tmp_path / "notebook_runs.db")) as con:
        paid = con.execute(
            "SELECT COUNT(*) FROM workflow_step_stats WHERE NOT replayed AND NOT cached"
        ).fetchone()
        hits = con.execute("SELECT SUM(hits) FROM workflow_cache").fetchone()
    assert paid == (160,) and hits == (80,)  # each Run All: 40 budgeted, 40 cached first run
