"""JSON Schema as each provider wants it, and validation of structured answers.

The transforms follow the official SDKs, so a schema reaches each API the way its own
client would send it:

- OpenAI strict mode (``openai_strict_schema``): openai-python's
  ``lib/_pydantic.py::_ensure_strict_json_schema`` — every object closed
  (``additionalProperties: false``) with all its properties required, ``None`` defaults
  dropped, single-entry ``allOf`` flattened, ``$ref`` with siblings inlined.
- Anthropic (``anthropic_schema``): anthropic-sdk-python's ``lib/_parse/_transform.py``
  — objects closed, ``oneOf`` as ``anyOf``, constraints the API does not take folded
  into the description (the answer is still validated against the full schema here).
- Gemini (``gemini_schema``): google-genai's ``_transformers.process_schema`` — ``$defs``
  inlined, ``null`` unions as ``nullable``, upper-case types, string ``const`` as
  ``enum``, ``propertyOrdering``, ``additionalProperties: false`` dropped (Gemini emits
  only declared properties; the Developer API refuses the keyword); a keyword the Gemini
  ``Schema`` has no field for is an error (the SDK's ``Schema`` model forbids extra fields
  too).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from typing import Any

from baton_nb._errors import ConfigurationError

__all__ = [
    "anthropic_schema",
    "check_schema",
    "gemini_schema",
    "openai_strict_schema",
    "validate_json",
]

# ---------------------------------------------------------------- OpenAI strict


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ConfigurationError(f"only local $refs ('#/...') are supported, got {ref!r}")
    node: Any = root
    for key in ref[2:].split("/"):
        node = node[key]
    return node


def _strict(node: Any, root: Mapping[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    for defs_key in ("$defs", "definitions"):
        defs = node.get(defs_key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                defs[name] = _strict(sub, root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        node["properties"] = {k: _strict(v, root) for k, v in properties.items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root) for v in node["anyOf"]]
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) == 1:
            node.update(_strict(all_of[0], root))
            node.pop("allOf")
        else:
            node["allOf"] = [_strict(v, root) for v in all_of]
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        resolved = _resolve(root, ref)
        node.update({**resolved, **node})
        node.pop("$ref")
        return _strict(node, root)
    return node


def openai_strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` made valid for OpenAI ``strict: true`` (see module doc)."""
    root = copy.deepcopy(dict(schema))
    return dict(_strict(root, root))


# ---------------------------------------------------------------- Anthropic

_ANTHROPIC_STRING_FORMATS = {
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
}


def anthropic_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as Anthropic structured outputs take it (see module doc)."""
    rest = dict(schema)
    out: dict[str, Any] = {}
    defs = rest.pop("$defs", None)
    if isinstance(defs, Mapping):
        out["$defs"] = {name: anthropic_schema(sub) for name, sub in defs.items()}
    ref = rest.pop("$ref", None)
    if ref is not None:
        out["$ref"] = ref
        return out
    kind = rest.pop("type", None)
    any_of = rest.pop("anyOf", None)
    one_of = rest.pop("oneOf", None)
    all_of = rest.pop("allOf", None)
    if isinstance(any_of, list) or isinstance(one_of, list):
        out["anyOf"] = [anthropic_schema(v) for v in (any_of if any_of is not None else one_of)]
    elif isinstance(all_of, list):
        out["allOf"] = [anthropic_schema(v) for v in all_of]
    elif kind is None:
        raise ConfigurationError("a JSON Schema for Anthropic needs 'type', 'anyOf' or 'allOf'")
    else:
        out["type"] = kind
    for key in ("enum", "description", "title"):
        if key in rest:
            out[key] = rest.pop(key)
    if kind == "object":
        properties = rest.pop("properties", {}) or {}
        out["properties"] = {k: anthropic_schema(v) for k, v in properties.items()}
        rest.pop("additionalProperties", None)
        out["additionalProperties"] = False
        if "required" in rest:
            out["required"] = rest.pop("required")
    elif kind == "string" and rest.get("format") in _ANTHROPIC_STRING_FORMATS:
        out["format"] = rest.pop("format")
    elif kind == "array":
        if "items" in rest:
            out["items"] = anthropic_schema(rest.pop("items"))
        if rest.get("minItems") in (0, 1):
            out["minItems"] = rest.pop("minItems")
    if rest:
        extra = "{" + ", ".join(f"{k}: {v}" for k, v in rest.items()) + "}"
        description = out.get("description")
        out["description"] = (description + "\n\n" if description is not None else "") + extra
    return out


# ---------------------------------------------------------------- Gemini

# The fields of google-genai's ``types.Schema`` (REST names).
_GEMINI_KEYS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}


def _gemini(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str, depth: int
) -> dict[str, Any]:
    if depth > 32:
        raise ConfigurationError(
            f"gemini responseSchema cannot express the recursive schema at {path} "
            "($defs are inlined)"
        )
    out = dict(node)
    ref = out.pop("$ref", None)
    if isinstance(ref, str):
        target = defs.get(ref.split("/")[-1])
        if not isinstance(target, Mapping):
            raise ConfigurationError(f"{path}: $ref {ref!r} does not resolve in $defs")
        out = {**target, **out}
    out.pop("$defs", None)
    out.pop("definitions", None)
    if out.get("type") == "null":
        out.pop("type")
        out["nullable"] = True
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        variants = [v for v in any_of if not (isinstance(v, Mapping) and v.get("type") == "null")]
        if len(variants) < len(any_of):
            out["nullable"] = True
        if len(variants) == 1:
            out.pop("anyOf")
            inner = _gemini(variants[0], defs, path, depth + 1)
            return {**inner, **{k: v for k, v in out.items() if k != "anyOf"}}
        out["anyOf"] = [_gemini(v, defs, f"{path}.anyOf", depth + 1) for v in variants]
    if "const" in out:
        const = out.pop("const")
        if not isinstance(const, str):
            raise ConfigurationError(f"{path}: gemini responseSchema takes only string constants")
        out["enum"] = [const]
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if out.get("additionalProperties") is False:
        # Gemini generates only the declared properties; the Developer API takes no
        # additionalProperties (google-genai refuses it outside Vertex AI)
        out.pop("additionalProperties")
    elif "additionalProperties" in out:
        raise ConfigurationError(
            f"{path}: gemini's Schema cannot allow additional properties (free-form maps); "
            "declare the properties instead"
        )
    unknown = sorted(set(out) - _GEMINI_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{path}: gemini's Schema has no field for JSON Schema keyword(s) "
            f"{', '.join(unknown)}; remove them from the schema for Gemini"
        )
    properties = out.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {
            k: _gemini(v, defs, f"{path}.{k}", depth + 1) for k, v in properties.items()
        }
        if len(properties) > 1 and "propertyOrdering" not in out:
            out["propertyOrdering"] = list(properties)
    if isinstance(out.get("items"), Mapping):
        out["items"] = _gemini(out["items"], defs, f"{path}[]", depth + 1)
    return out


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as a Gemini ``Schema`` (OpenAPI subset; see module doc)."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    return _gemini(schema, defs, "schema", 0)


# ---------------------------------------------------------------- validation


_CHECKED: dict[str, None] = {}  # schemas found valid (their canonical JSON), newest last
_CHECKED_MAX = 256
_CHECKED_LOCK = threading.Lock()  # requests may be built in threads
_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")


def check_schema(schema: Mapping[str, Any], where: str = "response_format") -> None:
    """``ConfigurationError`` naming the bad part, unless ``schema`` is a valid JSON Schema
    (of the draft its ``$schema`` names, else the latest). Checked once per schema: a
    request built again with the same schema is not checked again."""
    schema = dict(schema)  # any Mapping at the top, as the request keeps it (a dict)
    try:
        key = json.dumps(schema, sort_keys=True, default=repr)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: the JSON Schema is not JSON ({exc})") from None
    if key in _CHECKED:
        return
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        part = f"at {path!r}" if path else "at its root"
        if exc.absolute_path and exc.absolute_path[-1] == "type":
            part += f" (a type is one of: {', '.join(_JSON_TYPES)})"
        raise ConfigurationError(
            f"{where}: the JSON Schema is invalid {part}: {exc.message}. Fix that part "
            f"(the schema must be valid {validator.__name__.removesuffix('Validator')} "
            "JSON Schema), or pass a pydantic model class instead"
        ) from None
    with _CHECKED_LOCK:
        if len(_CHECKED) >= _CHECKED_MAX:  # the oldest out
            del _CHECKED[next(iter(_CHECKED))]
        _CHECKED[key] = None


def validate_json(
    text: str, schema: Mapping[str, Any] | None, model_class: type[Any] | None
) -> Any:
    """The validated value of a JSON answer; ``ValueError`` saying what is wrong otherwise."""
    if model_class is not None:
        from pydantic import ValidationError

        try:
            return model_class.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(value, dict(schema))
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ValueError(f"at {where}: {exc.message}") from None
    return value
