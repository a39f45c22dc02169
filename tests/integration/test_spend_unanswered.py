"""What a budget's worst-case charge for attempts with no answer looks like afterwards
(reports, repricing, CSV, step totals), what a cancel after an error status is charged,
and which request parts a budget counts rather than refuses: against the fake provider
server, on SQLite and Postgres (``db_url``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb._money import fmt_money
from baton_nb.cli._commands import report_json
from baton_nb.cli._show import render_run
from baton_nb.store import UNANSWERED
from tests.fakes.provider_server import FakeProviderServer, FakeUsage, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o"
CLAUDE = "anthropic/claude-sonnet-4-5"
OUT = 1000


def _one_call(name: str, db_url: str, model: str = MODEL, **kwargs: Any) -> bn.Workflow:
    wf = bn.Workflow(name, db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        return (await ctx.complete(model=model, max_tokens=OUT, **kwargs)).text

    return wf


async def test_an_attempt_with_no_answer_is_a_charge_not_a_call(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A timed-out attempt, then an answer: the timed-out one is charged at its worst
    case, on a line of its own. Repricing keeps that charge (it has no tokens to price
    again); it is no call: not in the calls, their latency or their estimates."""
    await _charge_not_call(fake_providers, db_url, unique)


async def test_an_attempt_with_no_answer_is_a_charge_not_a_call_in_memory(
    fake_providers: FakeProviderServer, unique: str
) -> None:
    await _charge_not_call(fake_providers, f"memory://lost-{unique}", unique)


async def _charge_not_call(fake_providers: FakeProviderServer, db_url: str, unique: str) -> None:
    fake_providers.usage = FakeUsage(input=10, output=OUT)
    fake_providers.script(Reply(delay=0.6), Reply(delay=0))
    wf = _one_call(f"lost-{unique}", db_url, prompt="hi", timeout=0.2)
    run = await wf.run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    lost, call = sorted(run.calls, key=lambda c: not c.is_unanswered)
    assert lost.is_unanswered and not call.is_unanswered
    assert lost.cost is not None and lost.cost > 0 and call.cost is not None
    total = call.cost + lost.cost
    assert run.spend is not None and run.spend.spent == total
    step = run.steps["ask"]
    assert step.calls == 1 and step.cost == total and step.latency_ms == call.latency_ms

    stored = await bn.Run.load(run.id, db=db_url)  # the marker is stored (price_source)
    assert sorted(c.is_unanswered for c in stored.calls) == [False, True]
    for report in (
        run.report(),
        run.report(reprice=True),
        stored.report(reprice=True),
        await bn.report(db=db_url, workflow=wf.name),
    ):
        totals = report.totals()
        assert report.total == total
        assert report.calls == 1 and totals.estimated_calls == 0
        assert totals.mean_latency_ms == pytest.approx(call.latency_ms)
        assert totals.unanswered == lost.cost
        (record,) = report.to_records()
        assert record["calls"] == 1 and record["cost_usd"] == total
        assert record["unanswered_usd"] == lost.cost
        assert UNANSWERED not in record["price_source"]
        assert "no answer, counted at the worst case" in str(report)
    (listed,) = await bn.runs(db=db_url, workflow=wf.name)
    assert listed.calls == 1 and listed.cost == total
    # the CLI's views of it: `report --json` has the charge beside the total, `show` says it
    shown = render_run(stored)
    assert f"(${fmt_money(lost.cost)} of it no answer, counted at the worst case)" in shown
    data = report_json(await bn.report(db=db_url, workflow=wf.name))
    assert data["unanswered_usd"] == fmt_money(lost.cost)
    assert data["total_cost_usd"] == fmt_money(total)


async def test_a_cancel_after_an_error_status_is_charged_nothing(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """A 429 is the provider's answer (unbilled); the call given up on during the backoff
    has nothing in flight: it is charged nothing."""
    fake_providers.script(*[Reply(status=429, headers={"retry-after": "2"}) for _ in range(2)])
    wf = bn.Workflow(f"cancel-429-{unique}", db=db_url)

    @wf.step(max_attempts=1)
    async def ask(ctx: bn.Context) -> str:
        with anyio.move_on_after(0.5):
            await ctx.complete(model=MODEL, prompt="hi", max_tokens=OUT)
        return "gave up"

    run = await wf.run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1
    assert run.spend is not None and run.spend.spent == 0 and run.spend.reserved == 0
    assert run.calls == []


def _counted(run: bn.Run) -> int:
    assert run.status == "cancelled" and run.spend is not None
    reason = run.spend.reason or ""
    return int(reason.split(" input tokens")[0].rsplit("(", 1)[-1].replace(",", ""))


@pytest.mark.parametrize(
    ("tool", "tokens"),
    [
        ({"type": "bash_20250124", "name": "bash"}, 245),
        ({"type": "text_editor_20250429", "name": "str_replace_based_edit_tool"}, 700),
        (
            {
                "type": "computer_20250124",
                "name": "computer",
                "display_width_px": 1024,
                "display_height_px": 768,
            },
            735 + 499,
        ),
    ],
    ids=["bash", "text-editor", "computer"],
)
async def test_anthropic_client_tools_are_counted_not_refused(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    tool: dict[str, Any],
    tokens: int,
) -> None:
    """Anthropic's bash, text editor and computer tools are run by the caller (no per-use
    fee): sent under a budget, their documented definition tokens counted."""
    kwargs: dict[str, Any] = {"prompt": "hi"}
    tiny = "0.000001"  # refused: the reason says what was counted
    plain = await _one_call(f"plain-{unique}", db_url, CLAUDE, **kwargs).run(
        budget=tiny, display=False
    )
    wf = _one_call(f"tool-{unique}", db_url, CLAUDE, extra={"tools": [tool]}, **kwargs)
    refused = await wf.run(budget=tiny, display=False)
    assert _counted(refused) - _counted(plain) >= tokens
    fake_providers.usage = FakeUsage(input=300, output=10)
    run = await wf.run(budget="1", display=False, params={"again": 1})
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1


async def test_text_that_starts_with_data_is_text(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Only a URL field holds a data: URL: a message whose text starts with
    ``data:text/csv,`` is text, counted and sent under a budget."""
    fake_providers.usage = FakeUsage(input=20, output=10)
    messages = [{"role": "user", "content": "data:text/csv,a,b\n1,2"}]
    run = await _one_call(f"csv-{unique}", db_url, messages=messages).run(budget="1", display=False)
    assert run.status == "completed", run.failed_steps
    assert fake_providers.request_count == 1
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    part = {"type": "image_url", "image_url": {"url": pdf}}
    content = [{"type": "text", "text": "read"}, part]
    refused = await _one_call(
        f"pdf-{unique}", db_url, messages=[{"role": "user", "content": content}]
    ).run(budget="1", display=False)
    assert refused.status == "failed" and fake_providers.request_count == 1
    assert "a data: URL of type 'application/pdf'" in str(refused.steps["ask"].error)
