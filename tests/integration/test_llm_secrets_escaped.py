"""A configured key holding a '"', a '\\' or a control character is written escaped in JSON
(``\\"``, ``\\\\``, ``\\n``, ``\\u0001``): the secrets check finds it there too, in answers
as received, in stored completions and in captured debug context."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import baton_nb as bn
from baton_nb.llm import LLMRequest, complete, configure
from baton_nb.llm._redact import REDACTED, Scrubber, json_escaped
from baton_nb.llm._types import compact_json
from tests.fakes.plugin import provider_config
from tests.fakes.provider_server import FakeProviderServer

SECRETS = [
    'sk-quo"ted-0123456789abcdef',
    "sk-back\\slash-0123456789abcdef",
    "sk-new\nline-0123456789abcdef",
    "sk-tab\tand\rcr-0123456789abcdef",
    "sk-ctl\x01char-0123456789abcdef",
    'every"\\\n\x1f-0123456789',
]
MSGS = ({"role": "user", "content": "hi"},)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _assert_clean(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text and json_escaped(secret) not in text


@pytest.fixture
def keyed(fake_providers: FakeProviderServer, request: pytest.FixtureRequest) -> str:
    """A provider configured with the secret (never called: a key a header cannot carry,
    as a control character, is a configured secret all the same)."""
    secret: str = request.param
    configure(
        providers={
            **provider_config(fake_providers.base_url),
            "other": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": secret},
        }
    )
    return secret


@pytest.mark.anyio
@pytest.mark.parametrize("keyed", SECRETS, indirect=True)
@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_escaped_key_echoed_in_an_answer_is_redacted(
    fake_providers: FakeProviderServer, keyed: str, model: str, stream: bool
) -> None:
    fake_providers.text = f"the key is {keyed}!"
    c = await complete(LLMRequest(model, MSGS, stream=stream))
    assert c.text == f"the key is {REDACTED}!"
    stored = c.to_json()
    _assert_clean(keyed, stored, repr(c), *_strings(c.raw), *_strings(c.message))
    assert REDACTED in str(c.raw)
    # what the replay store keeps decodes to the same answer, redacted
    assert bn.Completion.from_json(stored).text == c.text


@pytest.mark.anyio
@pytest.mark.parametrize("keyed", SECRETS[:3], indirect=True)
async def test_a_plain_answer_beside_an_escaped_key_is_kept(
    fake_providers: FakeProviderServer, keyed: str
) -> None:
    fake_providers.text = 'nothing "secret" here\\ at all\n'
    c = await complete(LLMRequest("openai/gpt-4o-mini", MSGS))
    assert c.text == 'nothing "secret" here\\ at all\n'
    assert REDACTED not in c.to_json()


@pytest.mark.parametrize("keyed", SECRETS[:3], indirect=True)
def test_debug_context_holds_no_escaped_key(
    fake_providers: FakeProviderServer, keyed: str, tmp_path: Path
) -> None:
    db = tmp_path / "debug.db"
    wf = bn.Workflow("escaped", db=f"sqlite:///{db}", debug=True)
    fake_providers.text = f"echo {keyed}"

    @wf.step()
    async def ask(ctx: bn.Context) -> str:
        c = await ctx.complete(model="openai/gpt-4o-mini", prompt=f"repeat {keyed}")
        return str(c.text)

    run = anyio.run(lambda: wf.run(display=False))
    assert run.status == "completed" and run.results["ask"] == f"echo {REDACTED}"
    captured = run.context("ask")
    assert captured  # the request and the response were captured
    text = json.dumps(captured, ensure_ascii=False, default=str)
    _assert_clean(keyed, text, *_strings(captured))
    data = db.read_bytes()
    assert keyed.encode() not in data and json_escaped(keyed).encode() not in data


# ── the scrubber itself ────────────────────────────────────────────────────────


@pytest.mark.parametrize("secret", SECRETS)
def test_json_encoded_finds_the_escaped_key_with_or_without_the_received_text(
    secret: str,
) -> None:
    scrub = Scrubber(frozenset({secret}))
    value = {"a": [f"x{secret}y", 1], f"k{secret}": None}
    for received in (None, compact_json(value), json.dumps(value, ensure_ascii=False)):
        out, kept = scrub.json_encoded(value, received)
        assert kept is None  # redacted: nothing kept to store as is
        assert out == {"a": [f"x{REDACTED}y", 1], f"k{REDACTED}": None}


@pytest.mark.parametrize("secret", SECRETS)
def test_keys_json_keeps_the_text_json(secret: str) -> None:
    scrub = Scrubber(frozenset({secret}))
    value = {"tool": {"args": f'{{"key": "{secret}"}}', "n": f"{secret}{secret}"}}
    flat = json.dumps(value, ensure_ascii=False)
    assert json.loads(scrub.keys_json(flat)) == {
        "tool": {"args": f'{{"key": "{REDACTED}"}}', "n": REDACTED * 2}
    }
    # in plain text, the key is found as it is and as JSON writes it
    assert scrub.keys(f"a {secret} b {json_escaped(secret)}") == f"a {REDACTED} b {REDACTED}"


@pytest.mark.parametrize("secret", SECRETS)
def test_a_keys_repr_inside_json_text_is_found(secret: str) -> None:
    """A traceback in the debug context holds the key's repr (its control characters
    escaped), and the JSON holding the traceback escapes that again: found there too."""
    scrub = Scrubber(frozenset({secret}))
    flat = json.dumps({"traceback": f"KeyError: {secret!r}", "raw": secret}, ensure_ascii=False)
    out = json.loads(scrub.json_text(flat))
    assert out["raw"] == REDACTED
    for form in (secret, json_escaped(secret), repr(secret)[1:-1]):
        assert form not in out["traceback"]
    if '"' not in secret and "'" not in secret:  # repr then writes the key as JSON does
        assert out["traceback"] == f"KeyError: '{REDACTED}'"


def test_keys_with_nothing_to_escape_share_one_pattern() -> None:
    """The common case: no key needs escaping, so JSON text is searched with the same
    pattern as before (no second search a call)."""
    scrub = Scrubber(frozenset({"sk-plain-0123456789abcdef", "AIzaSyA-plain"}))
    assert scrub._json_secrets is scrub._secrets
    assert Scrubber(frozenset({'a"b-0123'}))._json_secrets is not None
