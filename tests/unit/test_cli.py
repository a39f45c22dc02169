"""``baton-nb`` argument handling: usage errors exit 2 with a clear message, before any I/O."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import baton_nb as bn
from baton_nb.cli import build_parser, main
from baton_nb.cli._main import prices_calls, sqlite_file
from baton_nb.pricing import _api, _registry, lookup


@pytest.fixture
def fresh_pricing() -> Iterator[None]:
    """The price files a command loads are the process's: forgotten after the test."""
    _registry.reset()
    _api._warned.clear()
    yield
    _registry.reset()
    _api._warned.clear()


def _price_file(folder: Path, name: str, input_rate: object = "0.5") -> Path:
    path = folder / name
    model = {"periods": [{"from": "2024-01-01", "input": input_rate, "output": "1.5"}]}
    path.write_text(json.dumps({"provider": "mock", "models": {"my-finetune": model}}))
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--since", "yesterday"], "--since: invalid time 'yesterday'"),
        (["runs", "--status", "done"], "invalid choice: 'done'"),
        (["runs", "--limit", "-3"], "expected a whole number"),
        (["prune", "--older-than", "7"], "invalid duration '7'"),
        (["prune"], "prune needs --older-than"),
        (["report", "--csv", "x.csv", "--json"], "not allowed with argument"),
        (["show"], "the following arguments are required: RUN_ID"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["demo", "--prompts", "99"], "--prompts must be between 1 and 10"),
        (["runs", "--db", "mysql://x/y"], "unsupported db URL"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "runs", "show", "report", "prune", "price", "Exit codes"):
        assert command in out


def test_db_is_accepted_before_and_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["--db", "sqlite:///a.db", "runs"]).db == "sqlite:///a.db"
    assert parser.parse_args(["runs", "--db", "sqlite:///b.db"]).db == "sqlite:///b.db"
    assert getattr(parser.parse_args(["runs"]), "db", None) is None


def test_pricing_is_accepted_before_and_after_every_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["--pricing", "a.json", "report"]).pricing == "a.json"
    assert parser.parse_args(["price", "x/y", "--pricing", "b.json"]).pricing == "b.json"
    for command in (["demo"], ["runs"], ["show", "abc"], ["worker"], ["cache"]):
        assert parser.parse_args([*command, "--pricing", "c.json"]).pricing == "c.json"
    assert getattr(parser.parse_args(["price", "x/y"]), "pricing", None) is None


@pytest.mark.usefixtures("fresh_pricing")
@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_price_reads_the_price_file_of_pricing_or_the_env(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``baton-nb price`` checks a user's price file: --pricing (before or after the
    command) or $BATON_NB_PRICING loads it as bn.configure(pricing=...) does."""
    path = str(_price_file(tmp_path, "p_ok.json"))
    argv = ["price", "mock/my-finetune", "--input-tokens", "1000", "--output-tokens", "100"]
    if where == "before":
        argv = ["--pricing", path, *argv]
    elif where == "after":
        argv = [*argv, "--pricing", path]
    else:
        monkeypatch.setenv("BATON_NB_PRICING", path)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "source: user file p_ok.json" in out
    assert "a call of 1,000 input tokens + 100 output tokens: $0.00065" in out  # 0.5 + 0.15


@pytest.mark.usefixtures("fresh_pricing")
@pytest.mark.parametrize("where", ["before", "after", "env"])
@pytest.mark.parametrize(
    "command", [["price", "mock/my-finetune"], ["report", "--reprice"], ["demo"], ["worker"]]
)
def test_a_bad_price_file_is_a_usage_error_naming_file_model_and_field(
    where: str,
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The error bn.configure(pricing=...) raises, one line, exit 2, before any work;
    nothing of the file is loaded."""
    monkeypatch.chdir(tmp_path)
    path = str(_price_file(tmp_path, "p_bad.json", input_rate=0.5))  # a float: refused
    with pytest.raises(bn.ConfigurationError) as raised:
        bn.configure(pricing=path)
    argv = {"before": ["--pricing", path, *command], "after": [*command, "--pricing", path]}
    if where == "env":
        monkeypatch.setenv("BATON_NB_PRICING", path)
    assert main(argv.get(where, command)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"baton-nb: error: {raised.value}"), err
    assert "p_bad.json: model 'my-finetune', periods[0], 'input': price must be" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if where == "env":
        assert "the environment variable BATON_NB_PRICING: fix or unset it" in err
    assert lookup("mock/my-finetune") is None
    assert list(tmp_path.iterdir()) == [tmp_path / "p_bad.json"]  # no database opened


@pytest.mark.usefixtures("fresh_pricing")
def test_a_missing_price_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["price", "openai/gpt-4o", "--pricing", "/nonexistent/prices.json"]) == 2
    err = capsys.readouterr().err
    assert "price file /nonexistent/prices.json not found" in err and "Traceback" not in err


# What each command does with prices (a command line each): a new command must be put on
# one side or the other.
PRICING = {"price x/y": True, "demo": True, "worker": True, "report --reprice": True,
           "report": False, "runs": False, "show RUN": False,
           "prune --older-than 30d": False, "cache": False, "workers": False}  # fmt: skip


def test_only_the_commands_that_price_read_the_pricing_env() -> None:
    """$BATON_NB_PRICING is loaded by the commands that price calls only (prices_calls)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {c.split()[0] for c in PRICING}
    for command, prices in PRICING.items():
        assert prices_calls(parser.parse_args(command.split())) is prices, command


@pytest.mark.usefixtures("fresh_pricing")
@pytest.mark.parametrize("command", list(PRICING))
def test_a_missing_price_file_given_with_pricing_exits_2_for_every_command(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--pricing PATH on the command line is checked whatever the command (the user asked
    for it), before anything else: no database is opened."""
    monkeypatch.chdir(tmp_path)
    assert main([*command.split(), "--pricing", "/nonexistent/prices.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("baton-nb: error: price file /nonexistent/prices.json not found")
    assert "BATON_NB_PRICING" not in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("fresh_pricing")
@pytest.mark.parametrize("command", [c for c, prices in PRICING.items() if not prices])
def test_a_stale_pricing_env_does_not_stop_commands_that_never_price(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """$BATON_NB_PRICING naming a file that moved: a command that never prices goes on to
    its own work (here the database, missing: exit 1; workers: not Postgres), with no word
    about the price file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATON_NB_PRICING", "/nonexistent/prices.json")
    code = main([*command.split(), "--db", "sqlite:///d.db"])
    err = capsys.readouterr().err
    if command == "workers":
        assert code == 2 and err.startswith("baton-nb: error: workers need Postgres"), err
    else:
        assert code == 1 and err.startswith(f"baton-nb: error: no database at {tmp_path}"), err
    assert "prices.json" not in err and len(err.splitlines()) == 1, err


def test_price_of_a_known_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["price", "openai/gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert "input" in out and "0.15" in out and "0.6" in out


def test_price_of_a_mock_model_and_a_call(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["price", "mock/gpt-4o-mini", "--input-tokens", "1000", "--output-tokens", "100"]
    assert main(argv) == 0
    assert "$0.00021" in capsys.readouterr().out


def test_price_of_an_unknown_model_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["price", "nobody/nothing-9"]) == 1
    err = capsys.readouterr().err
    assert "no price known for 'nobody/nothing-9'" in err and "pricing.md" in err
    assert "pass it with --pricing my_prices.json (or BATON_NB_PRICING" in err
    assert "bn.configure(pricing=" in err


@pytest.mark.usefixtures("fresh_pricing")
def test_price_of_a_model_the_price_file_lacks_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _price_file(tmp_path, "p_ok.json")
    assert main(["price", "mock/other-finetune", "--pricing", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"no price known for 'mock/other-finetune' (the price file {path} has none" in err


def test_price_of_an_unknown_mock_model_advises_price_as(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["price", "mock/my-private-model"]) == 1
    err = capsys.readouterr().err
    assert "price_as='openai/gpt-4o-mini'" in err
    assert "add 'my-private-model' under provider 'mock' to a price file" in err
    assert "Name it as provider/model" not in err


def test_price_shows_source_match_and_every_rate(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["price", "anthropic/claude-sonnet-4-20250514", "--input-tokens", "250000",
            "--cached-tokens", "50000", "--cache-write-tokens", "11",
            "--cache-write-1h-tokens", "13", "--output-tokens", "1000"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "anthropic/claude-sonnet-4-20250514: anthropic/claude-sonnet-4-0" in out
    assert "matched by an alias" in out
    assert "source: baton_nb override" in out
    for line in ("cache write 5 m       3.75      1.875", "cache write 1 h          6          3"):
        assert line in out
    assert "prompts over 200,000 tokens (the whole call)" in out
    assert "web searches, per 1,000: $10" in out
    assert "note: Anthropic charges Claude Sonnet 4 prompts over 200k" in out
    # 199,976 plain x 6 + 50,000 x 0.60 + 11 x 7.50 + 13 x 12 + 1,000 x 22.50, per 1M tokens
    assert "11 cache writes 5 m, 13 cache writes 1 h) + 1,000 output tokens: $1.2525945" in out


def test_price_at_a_date_and_in_batch(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["price", "openai/gpt-4o", "--at", "2024-09-01", "--batch", "--input-tokens", "1000000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "prices valid from 2024-05-13 until 2024-10-02" in out
    assert "(batch): $2.5" in out
    assert main(["price", "openai/gpt-5.5"]) == 0
    out = capsys.readouterr().out
    assert "matched by its own id" in out and "source: genai-prices 0." in out


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATON_NB_DB", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--csv", "/nonexistent/dir/x.csv"], "folder '/nonexistent/dir' does not exist"),
        (["report", "--csv", "{tmp}"], "it is a directory"),
        (["demo", "--csv", "/nonexistent/x.csv"], "folder '/nonexistent' does not exist"),
        (["demo", "--csv", "{tmp}"], "it is a directory"),
    ],
)
def test_bad_csv_path_exits_2_before_any_work(
    argv: list[str], message: str, empty_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{tmp}", str(empty_cwd)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "cannot write the CSV to" in err
    path = argv[-1]
    assert repr(path) in err
    assert list(empty_cwd.iterdir()) == []  # no database, no run: checked first


def test_read_only_csv_file_exits_2(empty_cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = empty_cwd / "locked.csv"
    target.write_text("", encoding="utf-8")
    target.chmod(0o444)
    try:
        import os

        if os.access(target, os.W_OK):  # root ignores file modes
            pytest.skip("running as root: a read-only file is still writable")
        assert main(["demo", "--csv", str(target)]) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        target.chmod(0o644)


def test_demo_help_names_the_common_default_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "else sqlite:///baton.db" in out  # the same database as every other command
    assert "default: baton_demo_costs.csv" in out
    assert main(["runs", "--help"]) == 0
    assert "sqlite:///baton.db" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///runs.db", "runs.db"),
        ("sqlite:////abs/runs.db", "/abs/runs.db"),
        ("sqlite+aiosqlite:///x/y.db?timeout=5", "x/y.db"),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_sqlite_file_of_a_url(url: str, path: str | None) -> None:
    assert sqlite_file(url) == path


def test_the_worker_imports_from_its_working_directory_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker finds ``pipeline.py`` where it was started, but a local ``getpass.py`` or
    ``configparser.py`` there does not shadow the standard library (asyncpg imports them
    late: the worker crashed as it connected)."""
    import importlib.machinery
    import sys

    from baton_nb.cli._workers import importable_here

    for name in ("pipeline", "getpass", "configparser"):
        (tmp_path / f"{name}.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    importable_here()
    assert sys.path[-1] == str(tmp_path)
    found = importlib.machinery.PathFinder.find_spec("pipeline", sys.path)
    assert found is not None and found.origin == str(tmp_path / "pipeline.py")
    for name in ("getpass", "configparser"):
        spec = importlib.machinery.PathFinder.find_spec(name, sys.path)
        assert spec is not None and spec.origin is not None
        assert not spec.origin.startswith(str(tmp_path))


def test_a_worker_refused_module_workflow_names_the_mistake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline:wff`` (a typo of the workflow's name) says which workflows the module has,
    not "got NoneType"; ``pipeline.py:wf`` and ``src/pipeline:wf`` (a file's path where the
    module's name goes) say what to write."""
    import sys

    from baton_nb._errors import ConfigurationError
    from baton_nb.cli._workers import load_workflow

    (tmp_path / "tester_pipeline_mod.py").write_text(
        "import baton_nb as bn\nwf = bn.Workflow('p', db='memory://p')\nother = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tester_pipeline_mod", raising=False)
    assert load_workflow("tester_pipeline_mod:wf").name == "p"
    with pytest.raises(ConfigurationError) as typo:
        load_workflow("tester_pipeline_mod:wff")
    assert "has no attribute 'wff'" in str(typo.value)
    assert "did you mean tester_pipeline_mod:wf?" in str(typo.value)
    with pytest.raises(ConfigurationError) as far:
        load_workflow("tester_pipeline_mod:pipeline")
    assert "its workflows: tester_pipeline_mod:wf" in str(far.value)
    with pytest.raises(ConfigurationError, match=r"got NoneType"):
        load_workflow("tester_pipeline_mod:other")  # there, but not a workflow
    for ref in (
        "tester_pipeline_mod.py:wf",
        "src/tester_pipeline_mod.py:wf",
        "src/tester_pipeline_mod:wf",
    ):
        with pytest.raises(ConfigurationError) as path:
            load_workflow(ref)
        assert "names a file" in str(path.value)
        assert "tester_pipeline_mod:wf" in str(path.value)


def test_workers_marks_a_worker_whose_process_is_gone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker killed with kill -9 says no goodbye: its row stays until its heartbeat is
    old. ``baton-nb workers`` marks it gone when its pid no longer runs on this host."""
    import asyncio
    import socket
    import subprocess
    import sys
    import uuid
    from datetime import datetime, timezone

    from baton_nb.store import open_worker_store
    from baton_nb.store._worker_rows import WorkerRow
    from tests.conftest import POSTGRES_URL, _postgres_up

    if not _postgres_up():
        pytest.fail("Postgres is not running on 127.0.0.1:5432")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(done.stdout)
    worker_id = f"test-gone-{uuid.uuid4().hex[:8]}"

    async def beat(remove: bool) -> None:
        async with await open_worker_store(POSTGRES_URL) as store:
            if remove:
                await store.remove_worker(worker_id)
                return
            now = datetime.now(timezone.utc)
            row = WorkerRow(worker_id, socket.gethostname(), dead_pid, ["m:wf"], now, now)
            await store.beat(row)

    asyncio.run(beat(remove=False))
    try:
        assert main(["workers", "--db", POSTGRES_URL]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if worker_id in x)
        assert f"(gone: no process {dead_pid} on this host" in line
        assert main(["workers", "--db", POSTGRES_URL, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert next(r for r in rows if r["id"] == worker_id)["gone"] is True
    finally:
        asyncio.run(beat(remove=True))
