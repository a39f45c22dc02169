"""Provider batches (DESIGN §12) at the fake provider server: what is submitted, what is
paid, what a resumed run does. Every test counts the batches created and the requests
answered (paid) at the server."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import baton_nb as bn
from baton_nb._money import fmt_money
from baton_nb._states import BatchRequestState, BatchState
from baton_nb.store import Store
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.anyio

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
}


def classify(name: str, db: str, model: str, *, calls: int = 1, **step: Any) -> bn.Workflow:
    """A map over ``items`` whose children each make ``calls`` calls, batched."""
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"document {i}" for i in range(int(ctx.params.get("n", 6)))]

    @wf.step(map_over="items", batch=True, **step)
    async def label(ctx: bn.Context) -> str:
        text = ctx.item
        for _ in range(calls):
            answer = await ctx.complete(model=model, prompt=f"Label {text}", max_tokens=50)
            text = answer.text
        return text

    return wf


async def batches_of(db: str, run_id: str) -> list[Any]:
    async with await Store.open(db) as store:
        return await store.get_provider_batches(run_id)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_batched_map_is_one_batch_at_batch_prices(
    fake_providers: FakeProviderServer, sqlite_url: str, provider: str
) -> None:
    model = MODELS[provider]
    wf = classify(f"batched-{provider}", sqlite_url, model)
    run = await wf.run(params={"n": 6}, display=False)
    assert run.status == "completed", run.steps
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {provider: 1}
    assert [len(ids) for _, ids in stats["submitted"]] == [6]
    assert stats["answered"] == {provider: 6}
    assert all(r.startswith("batch answer: Label document") for r in run.results["label"])
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == 6 and all(c.pricing is not None and c.pricing.batch for c in paid)
    expected = sum(bn.price(model, c.usage, batch=True) for c in paid)
    assert run.cost == expected
    standard = sum(bn.price(model, c.usage) for c in paid)
    assert expected < standard
    [batch] = await batches_of(sqlite_url, run.id)
    assert (batch.state, batch.request_count, batch.succeeded) == (BatchState.DONE, 6, 6)
    assert batch.cost == expected and batch.saved == standard - expected
    # the live run's batch shows its costs as the report does (0.007, never 0.00700)
    [live] = run.batches.values()
    for amount in (live.cost, live.standard_cost, live.saved, batch.saved):
        assert amount is not None and format(amount, "f") == fmt_money(amount), amount
    assert (live.cost, live.standard_cost) == (batch.cost, batch.standard_cost)


def batch_requests(server: FakeProviderServer) -> list[Any]:
    return [r for r in server.requests if r.shape == "batch"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_batches_are_sent_in_each_providers_format(
    fake_providers: FakeProviderServer, sqlite_url: str, provider: str
) -> None:
    from tests.integration.test_llm_neutral import SCHEMAS, _assert_valid

    run = await classify(f"format-{provider}", sqlite_url, MODELS[provider]).run(
        params={"n": 3}, display=False
    )
    assert run.status == "completed"
    [batch] = await batches_of(sqlite_url, run.id)
    sent = batch_requests(fake_providers)
    posts = [r for r in sent if r.method == "POST"]
    if provider == "openai":
        upload, create = posts
        assert (
            upload.path == "/v1/files" and "multipart/form-data" in upload.headers["content-type"]
        )
        assert create.path == "/v1/batches"
        assert create.json["endpoint"] == "/v1/chat/completions"
        assert create.json["completion_window"] == "24h"
        assert create.json["metadata"] == {"baton_nb_batch": batch.key}  # found again by it
        file_id = create.json["input_file_id"]
        lines = [json.loads(x) for x in fake_providers.batches.files[file_id].splitlines()]
        assert [set(x) for x in lines] == [{"custom_id", "method", "url", "body"}] * 3
        for line in lines:
            _assert_valid(SCHEMAS["openai"](), line["body"])
        assert any(r.path.endswith("/content") for r in sent)
        assert all(r.headers["authorization"].startswith("Bearer ") for r in sent)
    elif provider == "anthropic":
        [create] = posts
        assert create.path == "/v1/messages/batches"
        assert create.headers["anthropic-version"] and create.headers["x-api-key"]
        for item in create.json["requests"]:
            assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", item["custom_id"])
            _assert_valid(SCHEMAS["anthropic"](), item["params"])
        assert any(r.path.endswith("/results") for r in sent)
    else:
        [create] = posts
        assert create.path == "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        assert create.headers["x-goog-api-key"]
        spec = create.json["batch"]
        assert spec["displayName"] == batch.key  # found again by it
        for item in spec["inputConfig"]["requests"]["requests"]:
            _assert_valid(SCHEMAS["gemini"](), item["request"])
            assert item["metadata"]["key"].startswith("bn-")
    assert not any(r.shape != "batch" for r in fake_providers.requests)  # no direct call


async def test_a_step_making_two_calls_gathers_each_round(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    wf = classify("two-rounds", sqlite_url, MODELS["openai"], calls=2)
    run = await wf.run(params={"n": 5}, display=False)
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {"openai": 2} and stats["answered"] == {"openai": 10}
    first, second = (set(ids) for _, ids in stats["submitted"])
    assert len(first) == len(second) == 5 and not first & second
    assert [run.steps[f"label[{i}]"].attempt for i in range(5)] == [1] * 5
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == 10 and {c.call_index for c in paid} == {0, 1}
    assert all(r.startswith("batch answer: Label batch answer:") for r in run.results["label"])


async def test_a_models_fanout_sends_one_batch_per_model(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    wf = bn.Workflow("fanout", db=sqlite_url)

    @wf.step(models=[MODELS["openai"], MODELS["anthropic"]], batch=True)
    async def answer(ctx: bn.Context) -> str:
        return (await ctx.complete(prompt="Name a colour")).text

    run = await wf.run(display=False)
    assert run.status == "completed"
    assert fake_providers.batches.stats()["creates"] == {"openai": 1, "anthropic": 1}
    assert set(run.results["answer"]) == {MODELS["openai"], MODELS["anthropic"]}
    assert {b.model for b in await batches_of(sqlite_url, run.id)} == set(run.results["answer"])


async def test_big_maps_are_split_by_the_providers_limits(
    fake_providers: FakeProviderServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baton_nb.llm._batch_openai import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_requests", 4)
    run = await classify("split", sqlite_url, MODELS["openai"]).run(params={"n": 10}, display=False)
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    assert [len(ids) for _, ids in stats["submitted"]] == [4, 4, 2]
    assert stats["answered"] == {"openai": 10}
    assert len({i for _, ids in stats["submitted"] for i in ids}) == 10  # none twice


async def test_refused_requests_fail_their_child_and_are_asked_again_by_its_next_attempt(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.fail_every = 3  # requests 3 and 6 of a batch: a 400
    wf = classify("refused", sqlite_url, MODELS["openai"], max_attempts=2, backoff=lambda n: 0)
    run = await wf.run(params={"n": 6}, display=False)
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {"openai": 2} and stats["answered"] == {"openai": 6}
    refused = set(stats["submitted"][1][1])
    assert len(refused) == 2 and refused < set(stats["submitted"][0][1])
    assert sorted(s.attempt for n, s in run.steps.items() if n.startswith("label[")) == [
        1,
        1,
        1,
        1,
        2,
        2,
    ]
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == 6  # what was answered is what was paid
    requests = await _requests_of(sqlite_url, run.id)
    assert {r.state for r in requests} == {BatchRequestState.ANSWERED}
    assert sorted(r.tries for r in requests) == [1, 1, 1, 1, 2, 2]


async def test_a_refused_request_fails_its_child_alone(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.fail_every = 3
    wf = classify("refused-once", sqlite_url, MODELS["anthropic"], max_attempts=1)
    run = await wf.run(params={"n": 6}, display=False)
    assert run.status == "failed"
    assert run.steps["label[2]"].state == "discarded"
    assert "invalid_request_error: bad request" in (run.steps["label[2]"].error or "")
    # the answered siblings were not asked again (whether they finished before the map
    # failed is the scheduler's business)
    assert fake_providers.batches.stats()["creates"] == {"anthropic": 1}
    assert len([c for c in run.calls if not c.replayed]) == 4


async def test_requests_a_batch_could_not_answer_are_asked_again_alone(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.error_500_every = 3  # a 5xx inside the batch: worth asking again
    run = await classify("retry-5xx", sqlite_url, MODELS["gemini"]).run(
        params={"n": 6}, display=False
    )
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    first, second = stats["submitted"]
    assert len(first[1]) == 6 and len(second[1]) == 2 and set(second[1]) < set(first[1])
    assert stats["answered"] == {"gemini": 6}
    assert all(s.attempt == 1 for n, s in run.steps.items() if n.startswith("label["))


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_an_expired_batch_resubmits_only_what_is_missing(
    fake_providers: FakeProviderServer, sqlite_url: str, provider: str
) -> None:
    fake_providers.batches.expire_after = 4  # the 5th and 6th requests of a batch expire
    run = await classify(f"expiry-{provider}", sqlite_url, MODELS[provider]).run(
        params={"n": 6}, display=False
    )
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    assert [len(ids) for _, ids in stats["submitted"]] == [6, 2]
    assert set(stats["submitted"][1][1]) == set(stats["submitted"][0][1][4:])
    assert stats["answered"] == {provider: 6}
    assert len([c for c in run.calls if not c.replayed]) == 6
    expired, done = await batches_of(sqlite_url, run.id)
    assert (expired.state, expired.succeeded, expired.failed) == (BatchState.EXPIRED, 4, 2)
    assert (done.state, done.succeeded) == (BatchState.DONE, 2)


async def test_a_slow_batch_is_polled_and_its_progress_announced(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.polls_to_finish = 5
    seen: list[tuple[str, int]] = []
    wf = classify("slow", sqlite_url, MODELS["openai"])

    def listen(event: object) -> None:
        if isinstance(event, bn.BatchUpdated):
            seen.append((event.state, event.succeeded))

    remove = bn.events.add_listener(bn.topic_all(), listen)
    try:
        run = await wf.run(params={"n": 4}, display=False)
    finally:
        remove()
    assert run.status == "completed"
    states = [state for state, _ in seen]
    assert states[0] == "prepared" and states[-1] == "done"
    assert "submitted" in states and "running" in states
    assert seen[-1] == ("done", 4)
    assert fake_providers.batches.stats()["polls"] >= 6


async def test_a_create_whose_answer_was_lost_is_found_not_sent_again(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.drop_create = True  # made, but the answer never comes back
    run = await classify("lost-answer", sqlite_url, MODELS["openai"]).run(
        params={"n": 3}, display=False
    )
    assert run.status == "completed"
    assert fake_providers.batches.stats()["creates"] == {"openai": 1}
    [batch] = await batches_of(sqlite_url, run.id)
    assert batch.remote_id in fake_providers.batches.stats()["batches"]


async def _requests_of(db: str, run_id: str) -> list[Any]:
    async with await Store.open(db) as store:
        return await store.get_batch_requests(run_id)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_batch_submitted_whose_id_was_never_stored_is_found_on_resume(
    fake_providers: FakeProviderServer,
    db_url: str,
    unique: str,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies between the provider's answer and storing the id (here: storing it
    fails): the resumed run finds the batch by the key it was sent with, submits nothing."""
    from baton_nb.store import SqlStore

    real = SqlStore.update_provider_batch

    async def dies_once(self: Any, batch: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(SqlStore, "update_provider_batch", real)
        raise bn.StorageError("the process died here")

    monkeypatch.setattr(SqlStore, "update_provider_batch", dies_once)
    wf = classify(f"lost-id-{provider}-{unique}", db_url, MODELS[provider])
    run_id = f"lost-id-{provider}-{unique}"
    with pytest.raises(bn.StorageError, match="died here"):
        await wf.run(params={"n": 4}, run_id=run_id, display=False)
    [batch] = await batches_of(db_url, run_id)
    assert (batch.state, batch.remote_id) == (BatchState.PREPARED, None)
    assert fake_providers.batches.stats()["creates"] == {provider: 1}

    run = await wf.run(run_id=run_id, display=False)
    assert run.status == "completed"
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {provider: 1} and stats["answered"] == {provider: 4}
    [batch] = await batches_of(db_url, run_id)
    assert batch.state is BatchState.DONE
    assert batch.remote_id.removeprefix("batches/") in stats["batches"]


async def test_run_cancel_cancels_the_remote_batch_and_a_resume_asks_only_the_rest(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    from baton_nb.runtime import active_run

    fake_providers.batches.hold = True  # a batch that takes hours
    wf = classify("cancelled", sqlite_url, MODELS["openai"])
    running: list[str] = []

    def listen(event: object) -> None:
        if isinstance(event, bn.BatchUpdated) and event.state == "running":
            running.append(event.workflow_id)

    remove = bn.events.add_listener(bn.topic_all(), listen)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: wf.run(params={"n": 6}, display=False))
            with anyio.fail_after(20):
                while not running:
                    await anyio.sleep(0.01)
            live = active_run(running[0])
            assert live is not None
            live.cancel()  # what the widget's button does
    finally:
        remove()
    run = wf.last_run
    assert run is not None and run.status == "cancelled"
    cancels = [r for r in batch_requests(fake_providers) if r.path.endswith("/cancel")]
    assert len(cancels) == 1
    [batch] = await batches_of(sqlite_url, run.id)
    assert batch.state is BatchState.CANCELLING

    fake_providers.batches.hold = False
    again = await wf.run(run_id=run.id, display=False)
    assert again.status == "completed"
    stats = fake_providers.batches.stats()
    first, second = (ids for _, ids in stats["submitted"])
    assert len(first) == 6 and set(second) == set(first[3:])  # a cancelled batch answers half
    assert stats["answered"] == {"openai": 6}
    assert len([c for c in again.calls if not c.replayed]) == 6
    states = [b.state for b in await batches_of(sqlite_url, run.id)]
    assert states == [BatchState.CANCELLED, BatchState.DONE]


async def test_a_provider_without_a_batch_api_is_a_clear_error(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    run = await classify("no-batch-api", sqlite_url, "ollama/llama3.2", max_attempts=1).run(
        params={"n": 2}, display=False
    )
    assert run.status == "failed"
    error = run.steps["label[0]"].error or ""
    assert "provider 'ollama' has no batch API" in error and "drop batch=True" in error
    assert fake_providers.requests == []  # nothing was sent


async def test_batch_true_needs_a_fanout() -> None:
    wf = bn.Workflow("bad-batch")
    with pytest.raises(bn.ConfigurationError, match="batch=True needs map_over= or models="):
        wf.add("alone", lambda ctx: 1, batch=True)
    with pytest.raises(bn.ConfigurationError, match="batch must be True or False"):
        wf.add("odd", lambda ctx: 1, models=["mock/x"], batch="yes")


async def test_the_widget_shows_each_batch_live_and_after_a_reopen(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    """The header's batch lines while the batch runs, and the same from the database the
    next day (``bn.Run.load``, the saved snapshot)."""
    from baton_nb.widget import DagWidget, _state
    from baton_nb.widget._static import static_html

    fake_providers.batches.polls_to_finish = 4
    widgets: list[DagWidget] = []
    lines: list[dict[str, Any]] = []

    def listen(event: object) -> None:
        if isinstance(event, bn.BatchUpdated) and widgets:
            lines.extend(_state.header(widgets[0].run, cancellable=True, cancelling=False,
                                       source="live")["batches"])  # fmt: skip

    def on_run(event: object) -> None:
        if isinstance(event, bn.StepUpdated) and not widgets:
            from baton_nb.runtime import active_run

            live = active_run(event.workflow_id)
            if live is not None:
                widgets.append(DagWidget(live))

    remove = [bn.events.add_listener(bn.topic_all(), f) for f in (on_run, listen)]
    try:
        run = await classify("widget", sqlite_url, MODELS["openai"]).run(
            params={"n": 4}, display=False
        )
    finally:
        for r in remove:
            r()
    assert run.status == "completed"
    states = [line["st"] for line in lines]
    assert states[0] == "prepared" and "running" in states and states[-1] == "done"
    running = next(line for line in lines if line["st"] == "running")
    assert (running["n"], running["m"], running["d"]) == (4, MODELS["openai"], 0.5)
    assert running["sv"] is None  # nothing answered yet: the discount is what it saves
    live = widgets[0].header["batches"]
    [done] = live
    assert (done["st"], done["ok"], done["n"]) == ("done", 4, 4)
    assert Decimal(done["sv"]) > 0 and Decimal(done["c"]) == run.cost

    reopened = await bn.Run.load(run.id, db=sqlite_url)
    header = _state.header(reopened, cancellable=False, cancelling=False, source="stored")
    assert header["batches"] == live
    html = static_html(reopened)
    assert "provider batch" in html and "4 of 4" in html


def test_batch_polling_is_configured_in_seconds() -> None:
    from baton_nb.llm._config import BatchPolling, batch_polling, reset_configuration

    try:
        bn.configure(batch_poll=(2, 30))
        assert batch_polling() == BatchPolling(initial=2.0, maximum=30.0)
        delays = batch_polling().delays()
        assert [delays() for _ in range(4)] == [2.0, 3.0, 4.5, 6.75]
        with pytest.raises(bn.ConfigurationError, match=r"batch_poll must be \(initial, maximum\)"):
            bn.configure(batch_poll=5)  # type: ignore[arg-type]
        with pytest.raises(bn.ConfigurationError, match="maximum must be >= initial"):
            bn.configure(batch_poll=(10, 1))
        assert batch_polling().initial == 2.0  # a refused value changes nothing
    finally:
        reset_configuration()


class Verdict(BaseModel):
    label: str


def structured(name: str, db: str, **step: Any) -> bn.Workflow:
    wf = bn.Workflow(name, db=db)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return ["good", "bad"]

    @wf.step(map_over="items", batch=True, **step)
    async def judge(ctx: bn.Context) -> str:
        answer = await ctx.complete(
            model=MODELS["openai"], prompt=f"Judge {ctx.item}", response_format=Verdict
        )
        assert isinstance(answer.parsed, Verdict)
        return answer.parsed.label

    return wf


async def test_structured_answers_come_back_parsed(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.answer_text = '{"label": "positive"}'
    run = await structured("structured", sqlite_url).run(display=False)
    assert run.status == "completed" and run.results["judge"] == ["positive", "positive"]
    [create] = [r for r in batch_requests(fake_providers) if r.path == "/v1/batches"]
    lines = fake_providers.batches.files[create.json["input_file_id"]].splitlines()
    assert json.loads(lines[0])["body"]["response_format"]["type"] == "json_schema"


async def test_an_answer_that_fails_its_schema_is_paid_not_stored_and_asked_again(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    fake_providers.batches.answer_text = "not JSON at all"
    wf = structured("invalid", sqlite_url, max_attempts=2, backoff=lambda n: 0)
    run = await wf.run(display=False)
    assert run.status == "failed"
    stats = fake_providers.batches.stats()
    assert stats["creates"] == {"openai": 2} and stats["answered"] == {"openai": 4}
    paid = [c for c in run.calls if not c.replayed]
    assert len(paid) == 4  # each answer was paid for, as a direct call's would be
    error = run.steps["judge[0]"].error or ""
    assert "OutputValidationError" in error and run.steps["judge[0]"].attempt == 2
    async with await Store.open(sqlite_url) as store:
        assert await store.get_completions(run.id, "judge[0]") == {}  # not stored: asked again


async def test_a_results_file_that_fails_to_download_once_is_read_again(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    from tests.fakes.provider_server import Reply

    # upload, create, two status reads, then the output file: a 503 first
    fake_providers.script(Reply(), Reply(), Reply(), Reply(), Reply(status=503))
    run = await classify("download-503", sqlite_url, MODELS["openai"]).run(
        params={"n": 1}, display=False
    )
    assert run.status == "completed"
    contents = [r for r in batch_requests(fake_providers) if r.path.endswith("/content")]
    assert len(contents) == 2
    assert fake_providers.batches.stats()["creates"] == {"openai": 1}


async def test_a_batched_step_under_the_cache_pays_only_what_the_cache_does_not_answer(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Workflow(cache=True) with a batch=True map: the batch's answers go to the response
    cache as they are stored, and the next run's calls ask the cache before parking: the
    items answered before cost $0 (cached, with what they saved), only the new ones go to
    a batch (SQLite and Postgres)."""
    model = MODELS["openai"]

    def workflow(name: str) -> bn.Workflow:
        wf = bn.Workflow(name, db=db_url, cache=True)

        @wf.step()
        async def items(ctx: bn.Context) -> list[str]:
            return [f"document {i}" for i in range(int(ctx.params["n"]))]

        @wf.step(map_over="items", batch=True)
        async def label(ctx: bn.Context) -> str:
            return (await ctx.complete(model=model, prompt=f"Label {ctx.item}", max_tokens=50)).text

        return wf

    first = await workflow(f"cached-batch-{unique}").run(params={"n": 4}, display=False)
    assert first.status == "completed", first.steps
    stats = fake_providers.batches.stats()
    assert [len(ids) for _, ids in stats["submitted"]] == [4]
    second = await workflow(f"cached-batch-again-{unique}").run(params={"n": 6}, display=False)
    assert second.status == "completed", second.steps
    assert second.results["label"][:4] == first.results["label"]
    stats = fake_providers.batches.stats()
    assert [len(ids) for _, ids in stats["submitted"]] == [4, 2]  # only the 2 new items
    report = second.report()
    assert (report.cached_calls, report.calls) == (4, 2)
    assert report.saved == first.cost and second.cost == report.total
    assert report.total == sum(c.cost for c in second.calls if not c.replayed and not c.cached)
    third = await workflow(f"cached-batch-third-{unique}").run(params={"n": 6}, display=False)
    assert third.status == "completed" and third.cost == 0
    assert len(fake_providers.batches.stats()["submitted"]) == 2  # no batch at all


async def test_a_batched_step_under_a_budget_is_said_at_run_start(
    fake_providers: FakeProviderServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Provider batches bypass the budgets (docs/spend_less.md, Limits): a run with a
    budget says so for each batched step as it starts; one without, or with the cache
    only (batched calls are answered from it), says nothing."""

    def workflow(name: str, **options: Any) -> bn.Workflow:
        wf = bn.Workflow(name, db=sqlite_url, **options)

        @wf.step()
        async def items(ctx: bn.Context) -> list[str]:
            return ["a", "b"]

        @wf.step(map_over="items", batch=True)
        async def label(ctx: bn.Context) -> str:
            return (await ctx.complete(model=MODELS["openai"], prompt=f"Label {ctx.item}")).text

        return wf

    with caplog.at_level("WARNING", logger="baton_nb.runtime"):
        await workflow("budget-batch", budget="5").run(display=False)
        await workflow("cached-batch", cache=True).run(display=False)
        await workflow("plain-batch").run(display=False)
    said = [r.getMessage() for r in caplog.records if "batch=True" in r.getMessage()]
    assert said == [
        "workflow 'budget-batch': step 'label' is batch=True: its calls are not held to "
        "the budget (docs/spend_less.md, Limits)"
    ]


async def test_the_budget_line_says_what_batches_cost_apart(sqlite_url: str) -> None:
    """Batched calls are not held to the budget (docs/spend_less.md, Limits): the budget
    line says what they cost apart, the same in ``spend.text()``, the report, the text
    progress line and the widget's header, live and loaded. It used to read ``$0 spent
    of $1`` under ``Cost: $0.000211625``."""
    from baton_nb._runview import spend_state
    from baton_nb.widget import _state
    from baton_nb.widget._progress import spend_texts

    wf = bn.Workflow("budget-line-batch", db=sqlite_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[str]:
        return [f"review {i}" for i in range(4)]

    @wf.step(map_over="items", batch=True)
    async def senti(ctx: bn.Context) -> str:
        prompt = f"Sentiment? {ctx.item}"
        return (await ctx.complete(model="mock/gpt-4o-mini", prompt=prompt, max_tokens=20)).text

    run = await wf.run(display=False, budget="1")
    assert run.status == "completed" and run.cost > 0
    line = (
        f"$0 of $1 spent by calls held to the budget; ${fmt_money(run.cost)} in provider "
        "batches, not held to it"
    )
    loaded = await bn.Run.load(run.id, db=sqlite_url)
    for view in (run, loaded):
        state = spend_state(view)
        assert state is not None and state.text() == line
        assert f"Budget of run {run.id}: {line}" in str(view.report())
        assert spend_texts(view)[0] == f"budget: {line}"
        header = _state.header(view, cancellable=False, cancelling=False, source="stored")
        assert header["spend"]["bt"] == fmt_money(run.cost) and header["spend"]["s"] == "0"
    assert run.spend is not None and run.spend.batched == 0  # the live budget, unchanged


async def test_the_mock_batch_reports_what_the_server_refuses_as_that_requests_error(
    sqlite_url: str,
) -> None:
    """A request the provider's server refuses with a 400 (here a temperature outside
    OpenAI's 0-2): a direct mock call raises it; in a mock batch it is that request's error
    in the batch's results, as a provider's batch reports it. Its child is discarded with the
    provider's words, the others are answered (the run used to raise the 400 out of
    ``wf.run()`` and end cancelled, every sibling lost)."""
    wf = bn.Workflow("mock-batch-refused", db=sqlite_url)

    @wf.step()
    async def items(ctx: bn.Context) -> list[float]:
        return [0.5, 3.0, 1.0]

    @wf.step(map_over="items", batch=True, max_attempts=1)
    async def label(ctx: bn.Context) -> str:
        answer = await ctx.complete(
            model="mock/gpt-4o-mini", prompt="Label it", max_tokens=20, temperature=ctx.item
        )
        return answer.text

    run = await wf.run(display=False)
    assert run.status == "failed"
    states = {name: run.steps[name].state for name in ("label[0]", "label[1]", "label[2]")}
    assert states == {"label[0]": "completed", "label[1]": "discarded", "label[2]": "completed"}
    error = run.steps["label[1]"].error or ""
    assert "400" in error and "invalid temperature 3" in error


async def test_reports_say_batched_calls_were_paid_at_batch_rates_and_read_back(
    fake_providers: FakeProviderServer, db_url: str, unique: str
) -> None:
    """Each batched child's row reads calls 1, replayed 1 (the CSV keeps its columns and
    values): the headline and the note under the table say what that is, a call paid once
    in a provider batch and its answer read back by the step, the same from the run's
    calls and from the database's aggregates (SQLite and Postgres)."""
    model = MODELS["openai"]
    run = await classify(f"batch-words-{unique}", db_url, model).run(params={"n": 4}, display=False)
    assert run.status == "completed", run.steps
    stored = await bn.report(db=db_url, run_ids=[run.id])
    for report in (run.report(), stored):
        assert (report.calls, report.replayed_calls) == (4, 4)
        head, *rest = str(report).splitlines()
        assert "4 calls (4 of them in provider batches, at batch rates)" in head, head
        assert "4 batch answers read back by their steps (paid once, in the calls)" in head
        assert "replayed (not charged again)" not in head  # no other replays
        assert (
            "replayed: answers read from the store, never charged again; among them, 4 batch "
            "answers read back by their steps (each paid once, in calls, at batch rates)"
        ) in rest
        assert "4 batch answers read back by their steps are among them" in report._repr_html_()
        rows = report.to_records()
        assert [(r["calls"], r["replayed_calls"]) for r in rows] == [(1, 1)] * 4
