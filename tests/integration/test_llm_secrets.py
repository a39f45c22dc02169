"""API keys never appear in reprs, errors, raw responses, logs or the database files."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pytest

import baton_nb as bn
from baton_nb._errors import ProviderError
from baton_nb.llm import LLMRequest, complete, configure, redact_secrets
from baton_nb.llm._config import resolve_endpoint
from baton_nb.store import Store
from tests.fakes.plugin import DUMMY_KEYS
from tests.fakes.provider_server import FakeProviderServer, Reply

MSGS = ({"role": "user", "content": "hi"},)
MODELS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _assert_clean(text: str) -> None:
    for key in DUMMY_KEYS.values():
        assert key not in text


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_keys_echoed_in_responses_are_redacted(
    fake_providers: FakeProviderServer,
    model: str,
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = DUMMY_KEYS[model.split("/")[0]]
    fake_providers.text = f"the key is {key}"
    fake_providers.script(Reply(status=500, message=f"bad key {key}"))
    with caplog.at_level(logging.DEBUG):
        c = await complete(LLMRequest(model, MSGS, stream=stream))
    _assert_clean(repr(c) + c.to_json() + caplog.text)
    assert "[REDACTED]" in str(c.raw)
    assert c.text == "the key is [REDACTED]"
    # the request really carried the key
    assert key in str(fake_providers.requests[-1].headers)


@pytest.mark.anyio
@pytest.mark.parametrize("model", MODELS)
async def test_errors_and_tracebacks_hold_no_key(
    fake_providers: FakeProviderServer, model: str
) -> None:
    configure(max_retries=0)
    key = DUMMY_KEYS[model.split("/")[0]]
    fake_providers.script(Reply(status=503, message=f"key={key} Authorization: Bearer {key}"))
    with pytest.raises(ProviderError) as info:
        await complete(LLMRequest(model, MSGS))
    err = info.value
    _assert_clean(str(err) + repr(err) + "".join(traceback.format_exception(err)))
    assert err.__cause__ is None and err.__context__ is None


@pytest.mark.anyio
async def test_transport_errors_hold_no_key(fake_providers: FakeProviderServer) -> None:
    configure(
        max_retries=0,
        providers={"dead": {"base_url": "http://127.0.0.1:9/v1", "api_key": "dead-secret-key-1"}},
    )
    with pytest.raises(ProviderError) as info:
        await complete(LLMRequest("dead/m", MSGS))
    err = info.value
    text = str(err) + repr(err) + "".join(traceback.format_exception(err))
    assert "dead-secret-key-1" not in text
    assert err.__cause__ is None and err.__context__ is None


def test_endpoint_and_request_reprs_hold_no_key(fake_providers: FakeProviderServer) -> None:
    for name in ("openai", "anthropic", "gemini", "openrouter"):
        _assert_clean(repr(resolve_endpoint(name)))
    _assert_clean(repr(LLMRequest("openai/gpt-4o", MSGS)))


@pytest.mark.anyio
async def test_key_shaped_content_in_answers_is_kept(fake_providers: FakeProviderServer) -> None:
    # key-shaped, built here so that no key-shaped literal sits in the repository
    code = 'httpx.get(url, headers={"x-api-key": "YOUR_KEY"}) # sk-' + "abcdefghijklm" * 2
    fake_providers.text = code
    c = await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    assert c.text == code


def test_redact_secrets_knows_configured_keys(fake_providers: FakeProviderServer) -> None:
    text = " ".join(DUMMY_KEYS.values())
    _assert_clean(redact_secrets(text))


def _db_files(folder: Path) -> dict[str, bytes]:
    """The bytes of ``secret.db`` and its ``-wal`` / ``-shm`` files, as they are now."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("secret.db*"))}


def _assert_no_key_bytes(files: dict[str, bytes], when: str) -> None:
    for name, data in files.items():
        for provider, key in DUMMY_KEYS.items():
            assert key.encode() not in data, f"{provider} key found in {name} ({when})"


@pytest.mark.anyio
async def test_debug_capture_and_no_secret_on_disk(
    fake_providers: FakeProviderServer, tmp_path: Path
) -> None:
    """debug=True over OpenAI (Authorization: Bearer), Anthropic (x-api-key) and Gemini
    (x-goog-api-key): answers and provider errors echo every key; none of them reaches the
    database (main file, WAL or shared memory) while the run is open or after it, nor the
    results, errors, captured context or events."""
    url = f"sqlite:///{tmp_path / 'secret.db'}"
    everything = " ".join(DUMMY_KEYS.values())
    fake_providers.text = f"echo: {everything}"
    during: dict[str, bytes] = {}
    events: list[object] = []
    remove = bn.events.add_listener(bn.topic_all(), events.append)
    wf = bn.Workflow("secrets", db=url, debug=True)

    @wf.step(models=MODELS)
    async def ask(ctx: bn.Context) -> str:
        ctx.log("about to ask", size=3)
        answer = await ctx.complete(
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            temperature=0,
        )
        return answer.text

    @wf.step(models=MODELS, deps=["ask"], max_attempts=1)
    async def refused(ctx: bn.Context) -> str:
        fake_providers.script(Reply(status=400, message=f"invalid key: {everything}"))
        return (await ctx.complete(prompt="again")).text

    @wf.step(deps=["ask", "refused"], ignore_discarded=True)
    async def look(ctx: bn.Context) -> bool:
        during.update(_db_files(tmp_path))  # the run is still open: WAL not checkpointed
        return True

    try:
        run = await wf.run(display=False)
    finally:
        remove()
    after = _db_files(tmp_path)

    # the test looked where the secrets could be
    assert run.steps["look"].state == "completed", run.steps["look"]
    assert during.get("secret.db-wal"), f"no WAL while the run was open: {sorted(during)}"
    _assert_no_key_bytes(during, "while the run was open")
    _assert_no_key_bytes(after, "after the run")

    # every request really carried its provider's key, and Gemini's never in the URL
    sent = {r.shape: r for r in fake_providers.requests}
    assert sent["openai"].headers["authorization"] == f"Bearer {DUMMY_KEYS['openai']}"
    assert sent["anthropic"].headers["x-api-key"] == DUMMY_KEYS["anthropic"]
    assert sent["gemini"].headers["x-goog-api-key"] == DUMMY_KEYS["gemini"]
    for request in fake_providers.requests:
        assert "key" not in request.query and DUMMY_KEYS["gemini"] not in request.path

    # what the run shows: results, errors, captured context, stored context, events
    children = [f"{step}[{m}]" for step in ("ask", "refused") for m in MODELS]
    loaded = await bn.Run.load(run.id, db=url)
    for model in MODELS:
        context = run.context(f"ask[{model}]")
        assert [e["kind"] for e in context] == ["log", "request", "response"], context
        assert "be brief" in json.dumps(context[1]["data"])
        assert context[2]["message"] == run.results["ask"][model]
        assert [e["kind"] for e in loaded.context(f"ask[{model}]")] == [
            "log",
            "request",
            "response",
        ]
    for model in MODELS:
        assert run.results["ask"][model] == "echo: " + " ".join(["[REDACTED]"] * len(DUMMY_KEYS))
        error = run.steps[f"refused[{model}]"].error or ""
        assert "invalid key" in error and "[REDACTED]" in error, error
    shown = [
        repr(run.results),
        repr({n: (s.state, s.error) for n, s in run.steps.items()}),
        *(repr(run.context(n)) for n in children),
        *(repr(loaded.context(n)) for n in children),
        repr(loaded.results),
        repr([(s.error, s.name) for s in loaded.steps.values()]),
        *(repr(e) for e in events),
    ]
    assert any("about to ask" in text for text in shown)
    _assert_clean("\n".join(shown))
    async with await Store.open(url) as store:
        logs = await store.get_debug_logs(run.id)
    assert len(logs) >= 3 * len(MODELS)  # log, request, response of each ask child
    _assert_clean(repr(logs))


def test_a_steps_error_text_holds_no_key(
    fake_providers: FakeProviderServer, tmp_path: Path, db_url: str
) -> None:
    """``step.error`` (shown by show, the widget and report) is redacted before it is stored
    or published, with ``debug=False`` too: live, loaded back, and in the attempts' history."""
    import anyio

    wf = bn.Workflow("leaky", db=db_url)
    key = DUMMY_KEYS["together"]

    @wf.step(max_attempts=2, backoff=lambda attempt: 0.0)
    async def leak(ctx: bn.Context) -> None:
        raise RuntimeError(f"bad key {key}")

    @wf.step()
    async def drop(ctx: bn.Context) -> None:
        raise bn.Discard(f"gave up: Authorization: Bearer {key}")

    run = anyio.run(lambda: wf.run(display=False))
    loaded = anyio.run(lambda: bn.Run.load(run.id, db=db_url))
    for r in (run, loaded):
        assert r.steps["leak"].error == "RuntimeError: bad key [REDACTED]"
        assert r.steps["drop"].error is not None and "[REDACTED]" in r.steps["drop"].error
        _assert_clean(repr(r.steps) + str([a.error for a in r.steps["leak"].attempts]))


@pytest.mark.parametrize("where", ["map_key", "backoff"])
def test_errors_of_map_key_and_backoff_hold_no_key(
    fake_providers: FakeProviderServer, tmp_path: Path, where: str
) -> None:
    """The step errors the scheduler writes itself (a ``map_key`` or ``backoff`` that
    raised) are redacted as the step's own are."""
    import anyio

    key = DUMMY_KEYS["together"]

    def boom(*_: object) -> float:
        raise RuntimeError(f"bad key {key}")

    wf = bn.Workflow(f"leak-{where}", db=f"sqlite:///{tmp_path / 'r.db'}")
    if where == "map_key":

        @wf.step()
        async def items(ctx: bn.Context) -> list[str]:
            return ["a"]

        @wf.step(map_over="items", map_key=boom)
        async def s(ctx: bn.Context) -> int:
            return 1
    else:

        @wf.step(max_attempts=2, backoff=boom)
        async def s(ctx: bn.Context) -> int:
            raise ValueError("first")

    run = anyio.run(lambda: wf.run(display=False))
    error = run.steps["s"].error
    assert error is not None and "[REDACTED]" in error and key not in error, error
