"""The secrets check on a response body as received (``Scrubber.json_encoded``'s
``received``): the same verdict and the same value as the check of the value's compact
encoding, and a stored text that decodes to the same value (issue 16, ninth round)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from baton_nb.llm._redact import _OUTSIDE_STRINGS, _TRIGGERS, Scrubber, _inside_strings
from baton_nb.llm._types import compact_json

KEY = "sk-test-0000000000000000000000"


def test_no_trigger_can_be_found_outside_a_string() -> None:
    outside = {c.lower() for c in _OUTSIDE_STRINGS}
    for trigger in _TRIGGERS:
        assert '"' not in trigger and not set(trigger) <= outside
    # every character the compact encoding writes outside strings is in the set
    value = [1, -2.5e-300, 1e300, float("inf"), float("-inf"), float("nan"), True, False, None]
    text = compact_json({"a": value, "b": {}, "c": []})
    assert set(text.replace('"a"', "").replace('"b"', "").replace('"c"', "")) <= _OUTSIDE_STRINGS


@pytest.mark.parametrize(
    ("secret", "inside"),
    [(KEY, True), ("1234567890", False), ("true,false", False), ('a"b', False), ("a\\b", False)],
)
def test_which_keys_allow_the_text_as_received(secret: str, inside: bool) -> None:
    assert _inside_strings(secret) is inside
    scrub = Scrubber(frozenset({secret}))
    body = '{"a": 1}'
    assert (scrub.json_encoded(json.loads(body), body)[1] == body) is inside


BODIES = [
    '{"id": "x", "choices": [{"message": {"role": "assistant", "content": "hi"}}]}',
    '{\n  "a" : 1.50E0 ,\n  "b": [ -0, 1e999, 10000000000000000000001 ],\n  "c": null }',
    '{"dup": "first", "dup": "second", "t": true, "f": false}',  # the last one wins
    '{"ünï": "ç\u2028€ 𝄞", "n": NaN}',
    '{"escaped": "a\\"b\\\\c\\n\\u00e9"}',  # \u: the compact encoding is checked
    '{"answer": "line one\\nline \\"two\\"\\t\\\\ end"}',  # short escapes: as received
    '{"url": "a\\/b"}',  # \/: the compact encoding is checked
    '{"echo": "' + KEY + '\\n"}',
    '{"h": "x\\nAuthorization: Bearer abcdefgh"}',
    '{"echo": "' + KEY + '"}',
    '{"dup": "' + KEY + '", "dup": "clean"}',  # a key in a value dropped: checked again
    '{"h": "Authorization: Bearer abcdefgh"}',
    '{"k": "key=abc", "AIza": 1}',
    '{"plain": "apikey without shape"}',
    '{"x": "sk-' + "a" * 20 + '"}',
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("secrets", [frozenset(), frozenset({KEY}), frozenset({KEY, "tok9"})])
def test_the_body_as_received_gives_what_its_compact_encoding_gives(
    body: str, secrets: frozenset[str]
) -> None:
    scrub = Scrubber(secrets)
    value = json.loads(body)
    before = scrub.json_encoded(value)
    after = scrub.json_encoded(value, body)
    assert json.dumps(after[0]) == json.dumps(before[0])  # the same value (NaN: as text)
    assert (after[1] is None) == (before[1] is None)
    if after[1] is not None:
        assert after[1] in (body, before[1])
        assert json.dumps(json.loads(after[1])) == json.dumps(json.loads(before[1]))
        # escaped as the compact encoding never does (\u, \/): that encoding is stored
        assert ("\\u" not in body and "\\/" not in body) or after[1] == before[1]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pieces = ["a", "sk-", "Bearer ", "authoriz", "ation", "key=", KEY[:10], KEY[10:], "é", " "]
    pieces += ["\n", '"', "\\", "/", "\t", "\x01", "\x7f", "\u2028"]  # escaped or not
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(4)))
    if kind == 1:
        return rng.choice([0, -7, 2**70, 1.5, -2.5e-8, True, False, None])
    if kind in (2, 3):
        return rng.choice(["sk", "-", KEY, "x"])
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_value(rng, 3): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_random_bodies_give_the_same_verdict() -> None:
    rng = random.Random(16)
    scrub = Scrubber(frozenset({KEY}))
    received = 0
    for _ in range(3000):
        value = {"v": _random_value(rng)}
        plain = json.dumps(value, ensure_ascii=False)
        for body in (
            plain,
            json.dumps(value, ensure_ascii=False, indent=rng.choice([1, 2])),
            json.dumps(value, ensure_ascii=False, separators=(" ,", " : ")),
            json.dumps(value),  # ensure_ascii: \u escapes
            plain.replace("/", "\\/"),  # the slashes escaped, as some servers write them
        ):
            decoded = json.loads(body)
            before = scrub.json_encoded(decoded)
            after = scrub.json_encoded(decoded, body)
            assert after[0] == before[0]
            assert (after[1] is None) == (before[1] is None)
            if after[1] is not None:
                assert json.loads(after[1]) == json.loads(before[1]) == decoded
                if after[1] == body:
                    received += 1
    assert received > 3000  # most bodies stored as received, escapes or not


def _nine_searches(text: str) -> bool:
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


def test_the_trigger_search_finds_what_nine_searches_find() -> None:
    from baton_nb.llm._redact import _SEARCHED, _has_shape

    assert {t for s, ts in _SEARCHED for t in (ts or (s,))} == set(_TRIGGERS)
    assert all(s in t for s, ts in _SEARCHED for t in ts)
    rng = random.Random(7)
    pieces = ["k-", "K-", "s", "R", "p", "=", "key", "KEY", "access_token", "auth", "orization",
              "BEARER", "Aiza", "api-", "Key", "\u212a-", "İ", " ", "x"]  # fmt: skip
    texts = [*_TRIGGERS, "", "plain", "sk", "k=", "token="]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(8))) for _ in range(5000)]
    for text in texts:
        assert _has_shape(text) is _nine_searches(text), text


_ENDPOINT: Any = SimpleNamespace(name="openai")  # all the body's decoding reads of it


@pytest.mark.parametrize(
    "content",
    [b'{"a": 1}', b'{"a": 1} \n\t\r', b'{"a": [1, {"b": "\\u00e9"}]}\n', b'{"a": "\xc3\xa9"}'],
)
def test_a_body_decodes_as_json_loads_decodes_it(content: bytes) -> None:
    from baton_nb.llm._transport import _json_body_text

    data, text = _json_body_text(_ENDPOINT, content)
    assert data == json.loads(content) and text == content.decode()


@pytest.mark.parametrize(
    "content", [b"{", b'{"a": 1} x', b'{"a": 1}{}', b'{"a": }', b"{}\x00", b'{"a": 1}\x0b']
)
def test_a_body_that_is_not_one_json_object_is_refused(content: bytes) -> None:
    from baton_nb._errors import ProviderError
    from baton_nb.llm._transport import _json_body_text

    with pytest.raises(ValueError):
        json.loads(content)
    with pytest.raises(ProviderError, match="not a JSON object"):
        _json_body_text(_ENDPOINT, content)


def test_an_answer_with_newlines_and_quotes_is_stored_as_received() -> None:
    """An answer's text nearly always has escapes (its newlines, quotes): JSON's short
    escapes are the compact encoding's own, so the body is checked and stored as received;
    a \\u or \\/ escape (written otherwise by the compact encoding) is not."""
    scrub = Scrubber(frozenset({KEY}))
    body = '{\n  "content": "Line one.\\nShe said \\"yes\\".\\tDone \\\\ end",\n  "n": 1\n}'
    assert scrub.json_encoded(json.loads(body), body) == (json.loads(body), body)
    for escaped in ('{"c": "caf\\u00e9"}', '{"c": "a\\/b"}'):
        value = json.loads(escaped)
        assert scrub.json_encoded(value, escaped) == (value, compact_json(value))
    with_key = '{"c": "see\\n' + KEY + '"}'
    value = json.loads(with_key)
    assert KEY not in str(scrub.json_encoded(value, with_key))
