"""The text progress line on a stream that is not a terminal (a log file, a pipe): whole
lines, no carriage returns, one per tenth of the steps completed, the final one once."""

from __future__ import annotations

import io
import re
from pathlib import Path

import anyio
import pytest

import baton_nb as bn
import baton_nb.widget as widget_pkg
from baton_nb.cli import main
from baton_nb.widget import TextProgress


def test_demo_progress_into_a_log_is_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``baton-nb demo > log 2>&1``: each run's final line once, nothing rewritten."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATON_NB_DB", raising=False)
    assert main(["demo", "--prompts", "2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n")
    finals = [line for line in err.splitlines() if line.endswith("· completed")]
    assert len(finals) == 2 and all("4/4 completed" in line for line in finals)
    assert all(line.startswith("[baton-demo]") for line in err.splitlines())


def test_a_map_writes_a_line_per_tenth_completed_then_the_final_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = bn.Workflow("lines", db=f"sqlite:///{tmp_path / 'lines.db'}")

    @wf.step()
    async def items(ctx: bn.Context) -> list[int]:
        return list(range(40))

    @wf.step(map_over="items")
    async def work(ctx: bn.Context) -> int:
        await anyio.sleep(0)
        return int(ctx.item)

    streams: list[io.StringIO] = []

    def progress(run: bn.Run) -> TextProgress:
        streams.append(io.StringIO())
        return TextProgress(run, stream=streams[-1], interval=0)

    monkeypatch.setattr(widget_pkg, "TextProgress", progress)
    run = anyio.run(lambda: wf.run(display="text", concurrency=1))
    assert run.status == "completed"
    [stream] = streams
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert "| 41/41 completed" in lines[-1] and lines[-1].endswith("· completed")
    assert sum(line.endswith("· completed") for line in lines) == 1  # the final line, once
    done = [int(m.group(1)) for m in (re.search(r"\| (\d+)/41 completed", x) for x in lines) if m]
    assert len(done) == len(lines) <= 11
    tenths = [n * 10 // 41 for n in done[:-1]]
    assert tenths == sorted(set(tenths)) and all(0 < t < 10 for t in tenths)
