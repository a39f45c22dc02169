"""Retry-After parsing, backoff bounds, status classes."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from baton_nb.llm._config import RetrySettings
from baton_nb.llm._retry import (
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    retry_hint_from_body,
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = parse_retry_after({"retry-after": when})
    assert got is not None and 27 <= got <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_backoff_is_jittered_and_capped() -> None:
    settings = RetrySettings(backoff_base=0.5, backoff_cap=8.0)
    for attempt in range(10):
        ceiling = min(8.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff_delay(attempt, settings) <= ceiling


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, True),
        (500, True),
        (503, True),
        (529, True),
        (408, True),
        (409, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry


def test_should_retry_header_overrides() -> None:
    assert is_retryable_status(500, {"x-should-retry": "false"}) is False
    assert is_retryable_status(400, {"x-should-retry": "true"}) is True


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "58s"}, 58.0),
        ({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}, 0.5),
        ({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}, None),
        ({"@type": "type.googleapis.com/google.rpc.Help", "retryDelay": "5s"}, None),
    ],
)
def test_retry_hint_from_body_from_a_google_error_body(
    detail: dict[str, str], expected: float | None
) -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [detail]}}
    assert retry_hint_from_body(json.dumps(body).encode()) == expected


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"error": "x"}', b'{"error": {}}'])
def test_retry_hint_from_body_without_one(body: bytes) -> None:
    assert retry_hint_from_body(body) is None
