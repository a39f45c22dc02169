"""``baton-nb`` commands end to end in a temp dir, with no API keys and no network."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb.cli import main
from baton_nb.pricing import _api, _registry
from baton_nb.reports import CSV_COLUMNS, fmt_money

KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
            "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "GROQ_API_KEY")  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cwd, no API keys, no BATON_NB_DB."""
    for var in (*KEY_VARS, "BATON_NB_DB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


DEMO_DB = "sqlite:///baton.db"  # the default database of every command, the demo's too


def run_ids(capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    capsys.readouterr()
    assert main(["runs", "--json", *extra]) == 0
    return [r["id"] for r in json.loads(capsys.readouterr().out)]


def test_demo_then_every_command(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    csv_path = workdir / "baton_demo_costs.csv"
    assert (workdir / "baton.db").exists() and csv_path.exists()
    assert f"stored in sqlite:///baton.db ({workdir / 'baton.db'})" in out
    # the next commands, exact: right after the demo they need no --db
    last = out.split("baton-nb show ", 1)[1].split()[0]
    assert len(last) == 32 and "\n  baton-nb runs\n" in out and f"baton-nb report {last}\n" in out
    assert main(["runs"]) == 0 and capsys.readouterr().out.count("baton-demo") == 3
    assert main(["show", last]) == 0 and last in capsys.readouterr().out
    assert anyio.run(bn.runs)[0].id == last  # bn.runs() with no db= sees them too
    assert f"written to {csv_path}" in out
    assert "fan-out 'answer', models side by side" in out
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 12  # 3 runs x (3 models + synthesis)

    # runs: table and JSON; --db before or after the command
    assert main(["runs", "--db", DEMO_DB]) == 0
    table = capsys.readouterr().out
    assert table.count("baton-demo") == 3 and "completed" in table
    ids = run_ids(capsys, "--db", DEMO_DB)
    assert len(ids) == 3
    assert main(["--db", DEMO_DB, "runs", "--workflow", "nope"]) == 0
    assert "no runs" in capsys.readouterr().out

    # show: the DAG with states and cost
    assert main(["show", ids[0], "--db", DEMO_DB]) == 0
    shown = capsys.readouterr().out
    assert "answer[mock/claude-haiku-4-5]" in shown and "synthesis" in shown
    assert "completed" in shown and "cost $" in shown

    # report: table, CSV of two runs, JSON
    assert main(["report", "--db", DEMO_DB]) == 0
    assert "Cost: $" in capsys.readouterr().out
    assert main(["report", ids[0], ids[1], "--csv", "two.csv", "--db", DEMO_DB]) == 0
    assert "wrote 8 rows" in capsys.readouterr().out
    two = list(csv.DictReader(io.StringIO((workdir / "two.csv").read_text(encoding="utf-8"))))
    assert {r["run_id"] for r in two} == {ids[0], ids[1]}
    assert main(["report", "--json", "--since", "1h", "--db", DEMO_DB]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] and len(data["rows"]) == 12
    assert sum(float(r["cost_usd"]) for r in data["rows"]) == pytest.approx(
        float(data["total_cost_usd"])
    )
    assert main(["report", "--by", "model", "--db", DEMO_DB]) == 0
    assert "mock/gemini-2.5-flash" in capsys.readouterr().out

    # prune: recent runs stay; a dry run with a zero age counts them all
    assert main(["prune", "--older-than", "7d", "--db", DEMO_DB]) == 0
    assert "deleted 0 runs" in capsys.readouterr().out
    argv = ["prune", "--older-than", "0s", "--debug-logs-older-than", "0s", "--dry-run"]
    assert main([*argv, "--db", DEMO_DB]) == 0
    assert "would delete 3 runs" in capsys.readouterr().out
    assert len(run_ids(capsys, "--db", DEMO_DB)) == 3
    assert main(["prune", "--older-than", "0s", "--db", DEMO_DB]) == 0
    assert "deleted 3 runs" in capsys.readouterr().out
    assert run_ids(capsys, "--db", DEMO_DB) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["show", "some-run"],
        ["report"],
        ["report", "--csv", "out.csv"],
        ["prune", "--older-than", "7d"],
        ["--db", "sqlite:///typo.db", "report"],
        ["runs", "--db", "sqlite:///sub/../typo.db", "--json"],
    ],
)
def test_read_commands_never_create_a_database(
    argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    name = "typo.db" if any("typo" in a for a in argv) else "baton.db"
    assert captured.err.strip() == (
        f"baton-nb: error: no database at {workdir / name} "
        "(run a workflow first, or pass --db / BATON_NB_DB)"
    )
    assert captured.out == "" and list(workdir.iterdir()) == []


def test_library_reads_stay_permissive(workdir: Path) -> None:
    """bn.runs() opens (and creates) the database like wf.run() does: see docs/cli.md."""
    assert anyio.run(bn.runs) == []
    assert (workdir / "baton.db").exists()


def test_unknown_run_id_exits_1(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(bn.runs)  # an empty database
    assert main(["show", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert main(["report", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_env_db_and_failed_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{workdir / 'env.db'}"
    monkeypatch.setenv("BATON_NB_DB", db)
    wf = bn.Workflow("breaks")

    @wf.step(max_attempts=1)
    async def boom(ctx: bn.Context) -> None:
        raise ValueError("no good")

    @wf.step(deps=["boom"])
    async def after(ctx: bn.Context) -> None:
        return None

    run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "failed"
    assert main(["show", run.id]) == 1  # BATON_NB_DB picked up; failed run -> 1
    out = capsys.readouterr().out
    assert "discarded" in out and "cancelled" in out and "ValueError: no good" in out
    assert run_ids(capsys, "--status", "failed") == [run.id]
    assert main(["report", run.id]) == 0
    assert "no LLM calls" in capsys.readouterr().out


def test_show_lists_the_attempts_of_retried_steps(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{workdir / 'retry.db'}"
    wf = bn.Workflow("retries", db=db)

    @wf.step(max_attempts=3, backoff=lambda attempt: 0.0)
    async def flaky(ctx: bn.Context) -> str:
        if ctx.attempt < 3:
            raise ConnectionError(f"timeout on try {ctx.attempt}")
        return "ok"

    run = anyio.run(lambda: wf.run(display=False))
    assert main(["show", run.id, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "attempts (retried steps):" in out
    assert "flaky #1  retryable" in out and "ConnectionError: timeout on try 1" in out
    assert "flaky #2  retryable" in out and "ConnectionError: timeout on try 2" in out
    assert "flaky #3  completed" in out


@pytest.mark.slow  # a real subprocess
def test_console_script_and_module(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "BATON_NB_DB"}
    script = Path(sys.executable).with_name("baton-nb")
    done = subprocess.run(
        [str(script), "demo", "--prompts", "1", "--csv", "one.csv"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (workdir / "one.csv").exists() and "cost CSV" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "baton_nb.cli", "prune", "--older-than", "soon"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "BATON_NB_DB"}


def _baton_nb(workdir: Path, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("baton-nb")
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [str(script), *argv], cwd=workdir, env=_env(), text=True, timeout=60, **kw
    )
    return done


@pytest.mark.slow  # a real subprocess
def test_bad_csv_path_in_a_real_process(workdir: Path) -> None:
    for path, reason in (("/nonexistent/x.csv", "does not exist"), ("/tmp", "is a directory")):
        done = _baton_nb(workdir, "demo", "--csv", path, capture_output=True)
        assert done.returncode == 2 and done.stdout == "", done
        assert done.stderr.startswith(f"baton-nb: error: cannot write the CSV to {path!r}")
        assert reason in done.stderr and len(done.stderr.splitlines()) == 1
    assert list(workdir.iterdir()) == []  # checked before the demo ran anything


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.slow  # a real subprocess
def test_full_stdout_is_a_short_error_not_a_traceback(workdir: Path) -> None:
    assert main(["demo", "--prompts", "1"]) == 0
    with open("/dev/full", "w") as full:
        done = _baton_nb(workdir, "runs", "--db", DEMO_DB, stdout=full, stderr=subprocess.PIPE)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "baton-nb: error: cannot write to standard output: No space left on device"
    )


@pytest.mark.slow  # a real subprocess
def test_closed_pipe_exits_quietly(workdir: Path) -> None:
    assert main(["demo", "--prompts", "1"]) == 0
    script = Path(sys.executable).with_name("baton-nb")
    proc = subprocess.Popen(
        [str(script), "report", "--json", "--db", DEMO_DB],
        cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the command writes
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert err == "", err


def test_run_ids_may_be_shortened(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{workdir / 'prefix.db'}"
    wf = bn.Workflow("prefixes", db=db)

    @wf.step()
    async def one(ctx: bn.Context) -> int:
        return 1

    for run_id in ("abc123", "abd456", "abd789"):
        anyio.run(lambda run_id=run_id: wf.run(run_id=run_id, display=False))
    capsys.readouterr()

    assert main(["show", "abc", "--db", db]) == 0
    assert "abc123" in capsys.readouterr().out
    assert main(["report", "abc1", "abd4", "--json", "--db", db]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["run_id"] for r in rows} <= {"abc123", "abd456"}

    assert main(["show", "abd", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "abd456" in err and "abd789" in err
    assert main(["show", "zz", "--db", db]) == 1
    assert "no run 'zz'" in capsys.readouterr().err
    assert main(["show", "a_c", "--db", db]) == 1  # LIKE wildcards are taken literally


def test_cache_command(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``baton-nb cache``: size, hits and savings of the response cache; --clear."""
    wf = bn.Workflow("cli-cache", db=DEMO_DB, cache=True)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model="mock/gpt-4o-mini", prompt="hi", temperature=0)).text

    async def twice() -> None:
        await wf.run(display=False)
        await wf.run(display=False)

    anyio.run(twice)
    capsys.readouterr()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "1 cached answer, " in out and "1 hit, $0.0000" in out and "oldest " in out
    assert main(["cache", "--clear", "--older-than", "7d"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 0 cached answers"
    assert main(["prune", "--cache-older-than", "0s", "--dry-run"]) == 0
    assert "workflow_cache 1" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 1 cached answer"
    assert main(["cache"]) == 0
    assert capsys.readouterr().out.startswith("0 cached answers, ")


def _finetune_prices(folder: Path, input_rate: object = "0.5") -> Path:
    path = folder / "p_ok.json"
    model = {"periods": [{"from": "2024-01-01", "input": input_rate, "output": "1.5"}]}
    path.write_text(json.dumps({"provider": "mock", "models": {"my-finetune": model}}))
    return path


def test_reprice_with_the_users_price_file(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """A run priced by the user's file (bn.configure(pricing=...)) keeps its cost when
    `baton-nb report --reprice` is given the same file (--pricing or $BATON_NB_PRICING);
    without it the cost is unknown, and the warning says how to give it."""
    request.addfinalizer(_registry.reset)  # the price file is the process's, not the next test's
    prices = _finetune_prices(workdir)
    bn.configure(pricing=str(prices))
    wf = bn.Workflow("finetuned", db=DEMO_DB)

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model="mock/my-finetune", prompt="hello there")).text

    run = anyio.run(lambda: wf.run(display=False))
    assert run.cost is not None and run.cost > 0
    stored = fmt_money(run.cost)

    def repriced(*argv: str) -> tuple[dict[str, Any], str]:
        _registry.reset()  # a new process: it knows only the files it is given
        _api._warned.clear()
        capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # shown (on stderr), not raised
            assert main(["report", run.id, "--reprice", "--json", *argv]) == 0
        out, err = capsys.readouterr()
        return json.loads(out), err

    alone, err = repriced()
    assert alone["rows"][0]["cost_usd"] is None and not alone["complete"]
    assert err.startswith("baton-nb: warning: no price known for model 'mock/my-finetune'")
    assert "With baton-nb, load a price file with --pricing my_prices.json" in err
    assert "Traceback" not in err and "anyio" not in err  # no library file and line

    with_file, err = repriced("--pricing", str(prices))
    assert with_file["total_cost_usd"] == stored and with_file["complete"], with_file
    assert with_file["rows"][0]["price_source"] == "user file p_ok.json"
    assert err == ""

    monkeypatch.setenv("BATON_NB_PRICING", str(prices))
    from_env, err = repriced()
    assert from_env["total_cost_usd"] == stored and err == ""


@pytest.mark.slow  # a real subprocess
def test_a_bad_price_file_in_a_real_process(workdir: Path) -> None:
    """A bad --pricing file: the error bn.configure gives (file, model, field), exit 2, no
    traceback; the same from $BATON_NB_PRICING, saying where it came from."""
    bad = _finetune_prices(workdir, input_rate=0.5)
    script = Path(sys.executable).with_name("baton-nb")
    for argv, env in (
        (["--pricing", str(bad), "price", "mock/my-finetune"], _env()),
        (["report", "--reprice"], {**_env(), "BATON_NB_PRICING": str(bad)}),
    ):
        done = subprocess.run(
            [str(script), *argv], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and done.stdout == "", done
        assert done.stderr.startswith(f"baton-nb: error: {bad}: model 'my-finetune', periods[0]")
        assert "'input': price must be a decimal string" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "BATON_NB_PRICING: fix or unset it" in done.stderr


@pytest.mark.parametrize("stale", ["missing", "malformed"])
def test_commands_that_never_price_ignore_a_stale_pricing_env(
    stale: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """$BATON_NB_PRICING left in a shell profile after its file moved (or broke) stops only
    the commands that price calls (report --reprice, price, demo, worker): runs, show,
    report, prune and cache show stored costs and work. A --pricing PATH given on the
    command line is checked by every command."""
    request.addfinalizer(_registry.reset)
    assert main(["demo", "--prompts", "1", "--csv", "demo.csv"]) == 0
    (run_id,) = run_ids(capsys)
    bad = workdir / "moved.json" if stale == "missing" else workdir / "broken.json"
    if stale == "malformed":
        bad.write_text('{"provider": "mock", "models": ')  # cut short: not JSON
    monkeypatch.setenv("BATON_NB_PRICING", str(bad))
    for argv in (
        ["runs"],
        ["show", run_id],
        ["report"],
        ["report", run_id, "--json"],
        ["prune", "--older-than", "30d"],
        ["cache"],
        ["cache", "--clear", "--older-than", "30d"],
    ):
        capsys.readouterr()
        assert main(argv) == 0, (argv, capsys.readouterr())
        out, err = capsys.readouterr()
        assert out and err == "", (argv, err)
    for argv in (["report", "--reprice"], ["price", "mock/gpt-4o-mini"], ["demo"], ["worker"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"baton-nb: error: {bad}") or f"file {bad}" in err, (argv, err)
        assert "the environment variable BATON_NB_PRICING: fix or unset it" in err, err
    monkeypatch.delenv("BATON_NB_PRICING")
    assert main(["runs", "--pricing", str(bad)]) == 2  # asked for on the command line
    err = capsys.readouterr().err
    assert str(bad) in err and "BATON_NB_PRICING" not in err, err
