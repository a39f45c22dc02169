"""``baton-nb`` argument handling: usage errors exit 2 with a clear message, before any I/O."""

from __future__ import annotations

import pytest

from baton_nb.cli import build_parser, main


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
