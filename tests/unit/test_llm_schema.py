"""JSON Schema as each provider takes it, structured-answer validation, and the mock's
deterministic tools and JSON answers."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

import anyio
import pytest
from pydantic import BaseModel

from baton_nb import ConfigurationError, UnsupportedFeature
from baton_nb.llm import LLMRequest
from baton_nb.llm._config import resolve_endpoint
from baton_nb.llm._mock import mock_complete
from baton_nb.llm._schema import (
    anthropic_schema,
    check_schema,
    gemini_schema,
    openai_strict_schema,
    validate_json,
)


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    name: str
    age: int | None = None
    home: Address | None = None
    kind: Literal["staff"] = "staff"


def test_openai_strict_schema_follows_openai_python() -> None:
    schema = openai_strict_schema(Person.model_json_schema())
    assert schema["required"] == ["name", "age", "home", "kind"]
    assert schema["additionalProperties"] is False
    assert "default" not in schema["properties"]["age"]  # a None default is dropped
    assert schema["$defs"]["Address"]["additionalProperties"] is False
    home = schema["properties"]["home"]
    assert home["anyOf"] == [{"$ref": "#/$defs/Address"}, {"type": "null"}]


def test_openai_strict_schema_inlines_a_ref_with_siblings() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A", "description": "the a"}},
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    a = openai_strict_schema(schema)["properties"]["a"]
    assert a == {
        "type": "object",
        "properties": {"x": {"type": "string"}},
        "description": "the a",
        "additionalProperties": False,
        "required": ["x"],
    }


def test_anthropic_schema_folds_unsupported_constraints_into_the_description() -> None:
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 3, "description": "A code"},
            "n": {"oneOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "additionalProperties": True,
    }
    out = anthropic_schema(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["code"] == {
        "type": "string",
        "description": "A code\n\n{minLength: 3}",
    }
    assert out["properties"]["n"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_gemini_schema_follows_google_genai() -> None:
    out = gemini_schema(openai_strict_schema(Person.model_json_schema()))
    assert out["type"] == "OBJECT" and "additionalProperties" not in out
    assert out["propertyOrdering"] == ["name", "age", "home", "kind"]
    assert out["properties"]["age"] == {"type": "INTEGER", "nullable": True, "title": "Age"}
    home = out["properties"]["home"]
    assert home["nullable"] is True and home["type"] == "OBJECT"
    assert set(home["properties"]) == {"street", "city"}  # $defs inlined
    assert out["properties"]["kind"]["enum"] == ["staff"]


def test_gemini_schema_refuses_what_it_cannot_express() -> None:
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(ConfigurationError, match="recursive"):
        gemini_schema(recursive)
    with pytest.raises(ConfigurationError, match="free-form maps"):
        gemini_schema({"type": "object", "additionalProperties": {"type": "string"}})
    with pytest.raises(ConfigurationError, match="only string constants"):
        gemini_schema({"type": "integer", "const": 3})


def test_validate_json_names_what_is_wrong() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    assert validate_json("[1, 2]", schema, None) == [1, 2]
    with pytest.raises(ValueError, match="at 1: 'x' is not of type 'integer'"):
        validate_json('[1, "x"]', schema, None)
    with pytest.raises(ValueError, match="not valid JSON"):
        validate_json("[1,", schema, None)
    assert validate_json('{"street": "a", "city": "b"}', None, Address) == Address(
        street="a", city="b"
    )
    with pytest.raises(ValueError, match="city"):
        validate_json('{"street": "a"}', None, Address)


# ------------------------------------------------------------------ the mock


def _mock(request: LLMRequest):  # type: ignore[no-untyped-def]
    endpoint = resolve_endpoint("mock")
    return anyio.run(lambda: mock_complete(endpoint, request.model_name, request))


def test_mock_answers_json_that_fits_the_schema() -> None:
    prompt = "Extract: Ada Lovelace, 36, lives at 12 Marylebone Street in London."
    request = LLMRequest(
        "mock/claude-haiku-4-5", [{"role": "user", "content": prompt}], response_format=Person
    )
    first, again = _mock(request), _mock(request)
    person = Person.model_validate_json(first.text)
    assert first.text == again.text  # deterministic
    assert person.name in {"Ada Lovelace", "Marylebone Street", "London"}
    assert first.finish_reason == "stop"


def test_mock_calls_each_tool_once_then_answers() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "a",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {"name": "b", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    history: list[dict[str, object]] = [{"role": "user", "content": "Look up Lisbon."}]
    names = []
    for _ in range(3):
        parsed = _mock(LLMRequest("mock/gpt-4o-mini", history, tools=tools))
        history.append(parsed.message)
        for call in parsed.tool_calls:
            names.append(call.name)
            history.append(
                {"role": "tool", "tool_call_id": call.id, "content": f"{call.name} done"}
            )
    assert names == ["a", "b"]
    assert parsed.finish_reason == "stop" and "a done; b done" in parsed.text


def test_mock_refuses_what_the_named_provider_refuses() -> None:
    request = LLMRequest(
        "mock/claude-haiku-4-5",
        [{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
    )
    with pytest.raises(
        UnsupportedFeature, match="mock/claude-haiku-4-5 does not support JSON mode"
    ):
        _mock(request)


def test_a_broken_schema_is_refused_when_the_request_is_built() -> None:
    """Checked once against its draft's meta-schema: the error names the bad part."""
    good = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    check_schema(good)
    LLMRequest(model="mock/x", messages=({"role": "user", "content": "hi"},), response_format=good)
    check_schema(MappingProxyType(good))  # any Mapping at the top, as the request takes it
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    check_schema(draft7)
    bad7 = {**draft7, "properties": {"a": {"minLength": "2"}}}
    with pytest.raises(
        ConfigurationError, match=r"at 'properties/a/minLength'.*Draft7 JSON Schema"
    ):
        check_schema(bad7)
    with pytest.raises(ConfigurationError, match=r"at 'properties': 'a' is not of type 'object'"):
        LLMRequest(
            model="mock/x",
            messages=({"role": "user", "content": "hi"},),
            response_format={"type": "object", "properties": "a"},
        )
    with pytest.raises(ConfigurationError, match=r"at 'minProperties': -1 is less than"):
        check_schema({"type": "object", "minProperties": -1})
    with pytest.raises(ConfigurationError, match="not JSON"):
        check_schema({"type": "object", 1: {}})
