"""Pieces of a call's path made cheaper in issue 16's ninth round: the same values as
the code they replaced."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest
from multidict import CIMultiDict

from baton_nb._usage import Usage
from baton_nb.llm import Completion
from baton_nb.llm._aiohttp import Answer
from baton_nb.llm._transport import _has_cookies
from baton_nb.pricing import CallPricing
from baton_nb.store._rows import CallRecord


@pytest.mark.parametrize(
    "raw",
    [
        (),
        ((b"Content-Type", b"application/json"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b")),
        ((b"X-\xc3\xa9", b"v"), (b"Content-Encoding", b"gzip")),  # a name not ASCII
        ((b"content-encoding", b"\xff"), (b"CONTENT-ENCODING", b"br")),
    ],
)
def test_a_header_is_the_first_one_the_headers_give(raw: tuple[tuple[bytes, bytes], ...]) -> None:
    decoded = CIMultiDict(
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in raw
    )
    for name in ("set-cookie", "content-encoding", "content-type", "x-é", "missing"):
        answer = Answer(200, "OK", raw, b"")
        if name.isascii():
            assert answer.first(name) == decoded.get(name)
            assert answer.first(name) == decoded.get(name)  # read again from the names kept
        assert answer.headers.get(name) == decoded.get(name)


def test_usage_to_dict_is_every_field_by_name() -> None:
    usage = Usage(1, 2, 3, 4, 1, 2, 5)
    assert usage.to_dict() == {f.name: getattr(usage, f.name) for f in fields(Usage)}
    assert list(usage.to_dict()) == [f.name for f in fields(Usage)]


def test_a_call_record_holds_the_completions_fields() -> None:
    pricing = CallPricing("openai/x", "genai-prices", "x", Decimal("0.01"))
    completion = Completion(
        text="t", model="openai/x", provider="openai", usage=Usage(3, 0, 0, 4),
        cost=Decimal("0.5"), latency_ms=2.5, raw={}, estimated=True, replayed=True,
        pricing=pricing, cached=True, saved=Decimal("0.25"),
    )  # fmt: skip
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    record = CallRecord.from_completion("r", "s", 2, 3, completion, now)
    assert asdict(record) == asdict(
        CallRecord(
            run_id="r",
            step="s",
            model="openai/x",
            provider="openai",
            attempt=2,
            call_index=3,
            usage=completion.usage,
            cost=Decimal("0.5"),
            latency_ms=2.5,
            replayed=True,
            estimated=True,
            created_at=now,
            pricing=pricing,
            id=None,
            cached=True,
            saved=Decimal("0.25"),
        )
    )


def test_has_cookies_says_what_the_jar_holds() -> None:
    client = httpx.AsyncClient()
    assert _has_cookies(client) is bool(client.cookies) is False
    client.cookies.set("a", "b", domain="example.com")
    assert _has_cookies(client) is bool(client.cookies) is True
    client.cookies.clear()
    assert not client.cookies and not _has_cookies(client)
