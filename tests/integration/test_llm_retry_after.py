"""Retry-After across step attempts and calls, checked at the fake server.

The server records when each request arrived (its monotonic clock); each test compares
those gaps with the Retry-After the server sent. No timing of the test's own.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import baton_nb as bn
from baton_nb.llm import LLMRequest, complete
from baton_nb.llm._config import RetrySettings, set_retry_settings
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply

pytestmark = pytest.mark.anyio

MSGS = ({"role": "user", "content": "hi"},)
MODEL = "openai/gpt-4o-mini"
# A Gemini 429/503 body: google.rpc.Status with a google.rpc.RetryInfo detail, as the
# Gemini API returns it (error model: https://cloud.google.com/apis/design/errors;
# RetryInfo.retryDelay is a google.protobuf.Duration, "58s" in JSON).
GEMINI_RETRY_BODY: dict[str, Any] = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more", "url": "https://ai.google.dev/"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.4s"},
        ],
    }
}


def retries(max_retries: int, max_wait: float = 5.0) -> None:
    set_retry_settings(
        RetrySettings(
            max_retries=max_retries, backoff_base=0.01, backoff_cap=0.01, max_wait=max_wait
        )
    )


def gaps(requests: list[RecordedRequest]) -> list[float]:
    times = [r.received_at for r in requests]
    return [b - a for a, b in itertools.pairwise(times)]


def one_call_workflow(db: str, model: str = MODEL, backoff: float = 0.01) -> bn.Workflow:
    wf = bn.Workflow("retry-after", db=db)

    @wf.step(max_attempts=3, backoff=lambda attempt: backoff)
    async def ask(ctx: bn.Context) -> str:
        reply = await ctx.complete(model=model, messages=list(MSGS))
        return reply.text

    return wf


async def test_the_step_next_attempt_waits_the_retry_after(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    retries(max_retries=1)  # two requests per call, then the step attempt fails
    fake_providers.script(*[Reply(status=429, headers={"retry-after": "0.5"})] * 2)
    run = await one_call_workflow(sqlite_url).run(display=False)
    assert run.status == "completed" and run.steps["ask"].attempt == 2
    seen = fake_providers.requests
    assert len(seen) == 3
    in_call, next_attempt = gaps(seen)
    assert in_call >= 0.5  # the in-call retry honoured it, as before
    assert next_attempt >= 0.5  # and so does the step's next attempt (was ~0.01 s)


async def test_the_step_backoff_applies_when_longer(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    retries(max_retries=0)
    fake_providers.script(Reply(status=429, headers={"retry-after": "0.1"}))
    run = await one_call_workflow(sqlite_url, backoff=0.6).run(display=False)
    assert run.status == "completed"
    assert gaps(fake_providers.requests)[0] >= 0.6


async def test_a_body_retry_hint_on_503_counts_like_retry_after(
    fake_providers: FakeProviderServer, sqlite_url: str
) -> None:
    retries(max_retries=0)  # the call gives up at once: the step attempt carries the hint
    fake_providers.script(Reply(status=503, body=GEMINI_RETRY_BODY))
    run = await one_call_workflow(sqlite_url, model="gemini/gemini-2.5-flash").run(display=False)
    assert run.status == "completed" and run.steps["ask"].attempt == 2
    assert gaps(fake_providers.requests)[0] >= 0.4


async def test_the_provider_error_carries_the_hint(fake_providers: FakeProviderServer) -> None:
    retries(max_retries=1)
    fake_providers.script(*[Reply(status=429, headers={"retry-after": "0.3"})] * 2)
    with pytest.raises(bn.ProviderError) as info:
        await complete(LLMRequest(MODEL, MSGS))
    assert info.value.status == 429 and info.value.retryable
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.3


async def test_later_calls_to_the_provider_wait_too(fake_providers: FakeProviderServer) -> None:
    """The limiter learns the Retry-After: a new call does not go before it has passed."""
    retries(max_retries=0)
    fake_providers.script(Reply(status=429, headers={"retry-after": "0.5"}))
    with pytest.raises(bn.ProviderError):
        await complete(LLMRequest(MODEL, MSGS))
    await complete(LLMRequest(MODEL, MSGS))  # another call, right away
    assert gaps(fake_providers.requests)[0] >= 0.5
    # another provider is not held back by it
    fake_providers.reset()
    await complete(LLMRequest("anthropic/claude-haiku-4-5", MSGS))
    assert len(fake_providers.requests) == 1


async def test_a_retry_after_beyond_max_wait_is_left_to_the_step(
    fake_providers: FakeProviderServer, sqlite_url: str, tmp_path: Path
) -> None:
    """Longer than an in-call wait may last: the call stops at once (no early re-send)
    and the step's next attempt waits it out."""
    retries(max_retries=3, max_wait=0.2)
    fake_providers.script(Reply(status=429, headers={"retry-after": "0.6"}))
    run = await one_call_workflow(sqlite_url).run(display=False)
    assert run.status == "completed" and run.steps["ask"].attempt == 2
    seen = fake_providers.requests
    assert len(seen) == 2  # no in-call re-send inside the 0.6 s
    assert gaps(seen)[0] >= 0.6
