"""An answer's body is checked and stored as received (not encoded again) when it has no
escapes: the stored answer, its replay and every reader of it give the same values as
the body decoded (issue 16, ninth round; ``Scrubber.json_encoded``)."""

from __future__ import annotations

import json

import pytest

import baton_nb as bn
from baton_nb.llm import Completion
from tests.fakes.provider_server import FakeProviderServer, Reply

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-4o-mini"

# pretty-printed, numbers written as the compact encoding would not, a key given twice,
# text the encoder would not escape
_BODY = """{
  "id" : "chatcmpl-1",  "object": "chat.completion", "created": 1.7E9,
  "model": "gpt-4o-mini",
  "choices": [ { "index": 0, "finish_reason": "stop",
      "message": { "role": "assistant", "content": "ünï € 𝄞 \u2028 done" } } ],
  "usage": { "prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12 },
  "extra": [ 1.50, -0.0, 100000000000000000000001, null, true ],
  "extra": "the last one wins"
}"""
_ESCAPED = _BODY.replace(" done", ' \\"quoted\\" done')  # the compact encoding stored


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("body", [_BODY, _ESCAPED], ids=["as-received", "escaped"])
async def test_the_stored_answer_replays_the_values_received(
    fake_providers: FakeProviderServer, db_url: str, unique: str, body: str
) -> None:
    fake_providers.script(Reply(body=body))
    wf = bn.Workflow(f"body-received-{unique}", db=db_url)
    seen: list[Completion] = []

    @wf.step(max_attempts=2, backoff=lambda a: 0.0)
    async def ask(ctx: bn.Context) -> str:
        c = await ctx.complete(model=MODEL, prompt="go")
        seen.append(c)
        if ctx.attempt == 1:
            raise RuntimeError("crash after the paid call")
        return c.text

    run = await wf.run(display=False)
    assert run.status == "completed" and fake_providers.request_count == 1
    fresh, replayed = seen
    assert replayed.replayed and not fresh.replayed
    decoded = json.loads(body)
    assert fresh.raw == decoded and replayed.raw == decoded
    assert decoded["extra"] == "the last one wins"
    assert replayed.text == fresh.text == decoded["choices"][0]["message"]["content"]
    for name in ("usage", "cost", "finish_reason", "message", "tool_calls", "pricing"):
        assert getattr(replayed, name) == getattr(fresh, name), name
    # what a stored completion reads back as: the values received, whatever the text
    stored = fresh.to_json()
    again = Completion.from_json(stored)
    assert again.raw == decoded and again == fresh
    if "\\" not in body:
        assert f'"raw":{body},' in stored  # written as received
    # the run loaded again reads the same call
    loaded = await bn.Run.load(run.id, db=db_url)
    assert [c.replayed for c in loaded.calls] == [False, True]
    assert loaded.cost == run.cost
