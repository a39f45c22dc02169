"""The batch wire formats against recorded and documented payloads (tests/data/providers/
batch/, sources in SOURCES.md): statuses, results, request lines, limits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from baton_nb._states import BatchState
from baton_nb.llm import LLMRequest
from baton_nb.llm._batch import BatchLine, ItemOutcome, custom_id, jsonl
from baton_nb.llm._batch_anthropic import AnthropicBatches
from baton_nb.llm._batch_anthropic import parse_result as anthropic_result
from baton_nb.llm._batch_anthropic import parse_status as anthropic_status
from baton_nb.llm._batch_gemini import GeminiBatches
from baton_nb.llm._batch_gemini import parse_result as gemini_result
from baton_nb.llm._batch_gemini import parse_status as gemini_status
from baton_nb.llm._batch_openai import OpenAIBatches
from baton_nb.llm._batch_openai import parse_result as openai_result
from baton_nb.llm._batch_openai import parse_status as openai_status
from baton_nb.llm._config import Endpoint
from baton_nb.runtime._batch_jobs import chunks

DATA = Path(__file__).parent.parent / "data" / "providers" / "batch"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def lines(name: str) -> list[dict[str, Any]]:
    return jsonl("test", (DATA / name).read_text())


# ── OpenAI ────────────────────────────────────────────────────────────────────


def test_openai_batch_objects() -> None:
    created = openai_status(load("openai_batch_create.json"))
    assert (created.state, created.succeeded, created.failed) == (BatchState.SUBMITTED, 0, 0)
    done = openai_status(load("openai_batch_retrieve.json"))
    assert (done.state, done.succeeded, done.failed) == (BatchState.ENDED, 95, 5)
    assert done.ended and done.raw["output_file_id"] == "file-cvaTdG"
    listed = load("openai_batch_list.json")["data"]
    assert [openai_status(b).state for b in listed] == [BatchState.ENDED]
    for raw, state in [
        ("expired", BatchState.EXPIRED),
        ("cancelling", BatchState.CANCELLING),
        ("failed", BatchState.FAILED),
        ("finalizing", BatchState.RUNNING),
    ]:
        assert openai_status({"status": raw}).state is state


def test_openai_output_and_error_lines() -> None:
    api = OpenAIBatches()
    results = [openai_result(line) for line in lines("openai_batch_output.jsonl")]
    assert [(r.custom_id, r.outcome) for r in results] == [
        ("request-2", ItemOutcome.SUCCEEDED),
        ("request-1", ItemOutcome.SUCCEEDED),
    ]
    assert results[0].body is not None and api.parse(results[0].body).text == "Hello."
    [recorded] = [openai_result(line) for line in lines("openai_batch_result_recorded.jsonl")]
    assert recorded.body is not None
    parsed = api.parse(recorded.body)
    assert parsed.text == "2 + 2 equals 4."
    assert parsed.usage is not None and (parsed.usage.input_tokens, parsed.usage.output_tokens) == (
        24,
        8,
    )
    expired = [openai_result(line) for line in lines("openai_batch_expired.jsonl")]
    assert {r.outcome for r in expired} == {ItemOutcome.MISSING}
    refused = openai_result(
        {"custom_id": "x", "response": {"status_code": 400, "body": {"error": {"message": "no"}}}}
    )
    assert (refused.outcome, refused.status, refused.retryable) == (ItemOutcome.ERRORED, 400, False)
    assert refused.message is not None and "no" in refused.message
    busy = openai_result({"custom_id": "x", "response": {"status_code": 500, "body": {}}})
    assert busy.retryable


def test_openai_line_is_a_chat_completions_request() -> None:
    from tests.integration.test_llm_neutral import SCHEMAS, _assert_valid

    endpoint = Endpoint(
        "openai",
        "openai",
        "https://api.openai.com/v1",
        api_key="k",
        max_tokens_field="max_completion_tokens",
    )
    request = LLMRequest(
        "openai/gpt-4o-mini", ({"role": "user", "content": "hi"},), max_tokens=20, stream=True
    )
    line = OpenAIBatches().line(endpoint, "gpt-4o-mini", request, "bn-1")
    assert line.path == "/v1/chat/completions"
    assert set(line.body) == {"custom_id", "method", "url", "body"}
    assert line.body["url"] == "/v1/chat/completions" and line.body["method"] == "POST"
    body = line.body["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == 20
    assert "stream" not in body and "stream_options" not in body  # a batch does not stream
    _assert_valid(SCHEMAS["openai"](), body)
    assert line.size == len(json.dumps(line.body, separators=(",", ":")).encode()) + 1


# ── Anthropic ─────────────────────────────────────────────────────────────────


def test_anthropic_batch_objects_and_results() -> None:
    created = anthropic_status(load("anthropic_batch_create.json"))
    assert (created.state, created.succeeded) == (BatchState.RUNNING, 0)
    retrieved = anthropic_status(load("anthropic_batch_retrieve.json"))
    assert (retrieved.succeeded, retrieved.failed) == (50, 50)
    ended = anthropic_status({"processing_status": "ended", "cancel_initiated_at": None})
    assert ended.state is BatchState.ENDED
    cancelled = anthropic_status({"processing_status": "ended", "cancel_initiated_at": "x"})
    assert cancelled.state is BatchState.CANCELLED
    results = [anthropic_result(line) for line in lines("anthropic_batch_results.jsonl")]
    assert [r.outcome for r in results] == [ItemOutcome.SUCCEEDED] * 2
    assert results[0].body is not None
    parsed = AnthropicBatches().parse(results[0].body)
    assert parsed.text.startswith("Hello again!")
    assert parsed.usage is not None and parsed.usage.output_tokens == 36
    nested = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    refused = anthropic_result({"custom_id": "a", "result": {"type": "errored", "error": nested}})
    assert (refused.outcome, refused.status, refused.retryable) == (ItemOutcome.ERRORED, 400, False)
    flat = {"type": "overloaded_error", "message": "busy"}
    busy = anthropic_result({"custom_id": "a", "result": {"type": "errored", "error": flat}})
    assert (busy.status, busy.retryable) == (529, True)
    for kind in ("expired", "canceled"):
        gone = anthropic_result({"custom_id": "a", "result": {"type": kind}})
        assert gone.outcome is ItemOutcome.MISSING


def test_anthropic_line_is_a_messages_request() -> None:
    from tests.integration.test_llm_neutral import SCHEMAS, _assert_valid

    endpoint = Endpoint("anthropic", "anthropic", "https://api.anthropic.com", api_key="k")
    request = LLMRequest(
        "anthropic/claude-haiku-4-5", ({"role": "user", "content": "hi"},), stream=True
    )
    line = AnthropicBatches().line(endpoint, "claude-haiku-4-5", request, custom_id("s", 0, "h"))
    assert set(line.body) == {"custom_id", "params"}
    assert "stream" not in line.body["params"] and line.body["params"]["max_tokens"] > 0
    _assert_valid(SCHEMAS["anthropic"](), line.body["params"])


# ── Gemini ────────────────────────────────────────────────────────────────────


def test_gemini_operations_and_inlined_responses() -> None:
    pending = gemini_status(load("gemini_batch_pending.json"))
    assert pending.state is BatchState.SUBMITTED
    done = gemini_status(load("gemini_batch_succeeded.json"))
    assert (done.state, done.succeeded) == (BatchState.ENDED, 3)
    failed = gemini_status(
        {"metadata": {"state": "BATCH_STATE_RUNNING"}, "error": {"code": 3, "message": "bad input"}}
    )
    assert (failed.state, failed.error) == (BatchState.FAILED, "bad input")
    inlined = load("gemini_batch_succeeded.json")["response"]["inlinedResponses"]
    order = ["a", "b", "c"]  # these responses echo no metadata: matched by their place
    results = [gemini_result(item, order[n]) for n, item in enumerate(inlined["inlinedResponses"])]
    assert [r.custom_id for r in results] == order
    assert results[2].body is not None
    assert GeminiBatches().parse(results[2].body).text == "The capital of Brazil is **Brasília**."
    echoed = gemini_result({"response": {"candidates": []}, "metadata": {"key": "k1"}}, "other")
    assert echoed.custom_id == "k1"
    refused = gemini_result({"error": {"code": 3, "message": "invalid"}, "metadata": {"key": "k"}})
    assert (refused.outcome, refused.status, refused.retryable) == (ItemOutcome.ERRORED, 400, False)
    busy = gemini_result({"error": {"code": 14, "message": "unavailable"}})
    assert (busy.status, busy.retryable) == (503, True)


def test_gemini_line_is_a_generate_content_request() -> None:
    from tests.integration.test_llm_neutral import SCHEMAS, _assert_valid

    endpoint = Endpoint(
        "gemini", "gemini", "https://generativelanguage.googleapis.com", api_key="k"
    )
    request = LLMRequest(
        "gemini/gemini-2.5-flash", ({"role": "user", "content": "hi"},), max_tokens=9
    )
    line = GeminiBatches().line(endpoint, "gemini-2.5-flash", request, "bn-7")
    assert line.body["metadata"] == {"key": "bn-7"}
    assert line.body["request"]["generationConfig"]["maxOutputTokens"] == 9
    _assert_valid(SCHEMAS["gemini"](), line.body["request"])


# ── shared ────────────────────────────────────────────────────────────────────


def test_custom_ids_are_stable_unique_and_fit_every_provider() -> None:
    first = custom_id("label[0]", 0, "a" * 64)
    assert first == custom_id("label[0]", 0, "a" * 64)
    others = {
        custom_id("label[0]", 1, "a" * 64),
        custom_id("label[1]", 0, "a" * 64),
        custom_id("label[0]", 0, "b" * 64),
    }
    assert first not in others and len(others) == 3
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", first)  # Anthropic's rule, the strictest


@pytest.mark.parametrize(
    ("sizes", "max_requests", "max_bytes", "expected"),
    [
        ([10] * 10, 4, 10_000, [4, 4, 2]),  # by count
        ([10] * 10, None, 35, [3, 3, 3, 1]),  # by bytes
        ([50, 10, 10], None, 40, [1, 2]),  # a line alone over the limit still goes alone
        ([], 4, 100, []),
    ],
)
def test_batches_are_cut_by_the_providers_limits(
    sizes: list[int], max_requests: int | None, max_bytes: int, expected: list[int]
) -> None:
    items: list[Any] = [(n, BatchLine(str(n), {}, size)) for n, size in enumerate(sizes)]
    cut = list(chunks(items, max_requests, max_bytes))
    assert [len(c) for c in cut] == expected
    assert [item for chunk in cut for item in chunk] == items  # in order, none lost
