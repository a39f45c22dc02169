"""The provider-neutral request pieces: messages, images, tools, tool choice, output format,
reasoning. The shape is OpenAI Chat Completions' (what users know); each adapter translates
it. Everything is checked and normalised here, once, before any adapter sees it.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from baton_nb._errors import ConfigurationError, UnsupportedFeature, describe_error

from ._schema import check_schema

__all__ = [
    "EFFORT_BUDGETS",
    "DataURL",
    "OutputKind",
    "Reasoning",
    "ResponseFormat",
    "Tool",
    "ToolChoice",
    "ToolChoiceMode",
    "arguments_model",
    "freeze_messages",
    "function_tool",
    "parse_data_url",
    "prompt_messages",
    "to_reasoning",
    "to_response_format",
    "to_tool_choice",
    "to_tools",
    "unsupported",
]

ROLES = ("system", "developer", "user", "assistant", "tool")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# A reasoning effort as a thinking budget (tokens) for providers that take a budget
# (Anthropic, Gemini). Anthropic's minimum is 1024; low/medium/high follow LiteLLM's
# mapping of reasoning_effort (1024 / 2048 / 4096). "none" turns thinking off.
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 16384}
SUMMARIES = ("auto", "concise", "detailed")
# ``data:`` in any case, as URL schemes are (RFC 3986); matched on the stripped value
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^,;]*)*),(?P<data>.*)$", re.S | re.I
)
# A URL's scheme (https:, data:, file:, gs:...); one letter is a Windows drive (C:\pic.png)
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:")
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def unsupported(provider: str, model: str, feature: str, hint: str = "") -> UnsupportedFeature:
    """The error for what a provider cannot do, raised before anything is sent."""
    return UnsupportedFeature(provider, model, feature, hint)


# ------------------------------------------------------------------ images


@dataclass(frozen=True)
class DataURL:
    """A base64 ``data:`` URL split into its media type and payload."""

    media_type: str
    data: str


def parse_data_url(url: str) -> DataURL | None:
    """``data:image/png;base64,...`` (``DATA:`` too, around spaces) as a :class:`DataURL`;
    ``None`` for any other URL."""
    match = _DATA_URL.match(url.strip())  # (the same string, not a copy, without spaces)
    if match is None:
        return None
    if ";base64" not in match.group("params").lower():
        raise ConfigurationError(
            f"image data URLs must be base64-encoded ('data:{match.group('mime')};base64,...')"
        )
    return DataURL(match.group("mime").lower(), match.group("data"))


def _sniff(data: bytes) -> str:
    for magic, media_type in _SIGNATURES:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ConfigurationError(
        "image bytes are not PNG, JPEG, GIF or WebP; pass a data URL with its type instead: "
        "{'type': 'image_url', 'image_url': {'url': 'data:<media type>;base64,<data>'}}"
    )


def _image_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    if isinstance(image, (str, bytes, bytearray)):
        image = {"url": image}
    if not isinstance(image, Mapping) or "url" not in image:
        raise ConfigurationError(
            f"{where}: an image part is {{'type': 'image_url', 'image_url': {{'url': ...}}}} "
            "(an https URL, a data URL, or bytes)"
        )
    url = image["url"]
    if isinstance(url, (bytes, bytearray)):
        url = f"data:{_sniff(bytes(url))};base64,{base64.b64encode(bytes(url)).decode('ascii')}"
    if not isinstance(url, str) or not url or url.isspace():
        raise ConfigurationError(f"{where}: image_url.url must be a URL string or bytes")
    # a malformed data URL fails here, not at the provider; any other URL is sent as it is
    # (https://, and what some providers read: file:// for a local server, gs:// for Gemini)
    if parse_data_url(url) is None:
        scheme = _SCHEME.match(url)
        if scheme is None or len(scheme.group().strip()) == 2:  # no scheme, or "C:"
            raise ConfigurationError(_not_a_url(url, where, scheme))
    return {**part, "type": "image_url", "image_url": {**image, "url": url}}


def _not_a_url(url: str, where: str, drive: re.Match[str] | None) -> str:
    """Why an image URL is refused: it has no scheme (a file path, a Windows one with its
    drive letter), so it names nothing a provider could fetch."""
    why = "it has no scheme (https:, data:...)"
    if drive is not None:
        why = f"{drive.group().strip()} is a Windows drive, not a URL scheme"
    return (
        f"{where}: image_url.url {url!r:.80} is not a URL: {why}, and a file path is not a "
        "URL. Pass the image's bytes instead ({'url': pathlib.Path(path).read_bytes()}: "
        "PNG, JPEG, GIF or WebP, sent as a data URL), a 'data:<media type>;base64,...' URL, "
        "or a URL the provider can fetch (https://...)"
    )


def _content(content: Any, where: str) -> Any:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, Sequence) or isinstance(content, (bytes, bytearray)):
        raise ConfigurationError(f"{where}: content must be a string or a list of parts")
    parts: list[Any] = []
    for i, part in enumerate(content):
        here = f"{where}[{i}]"
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise ConfigurationError(f"{here}: a content part is a dict with a 'type'")
        elif part["type"] == "image_url":
            parts.append(_image_part(part, here))
        else:
            parts.append(dict(part))
    return parts


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not call.get("id") or not function.get("name"):
        raise ConfigurationError(
            f"{where}: a tool call is {{'id': ..., 'type': 'function', "
            "'function': {'name': ..., 'arguments': '<JSON>'}}"
        )
    arguments = function.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {**call, "type": "function", "function": {**function, "arguments": arguments}}


def _not_a_message(message: Any, where: str, why: str = "") -> ConfigurationError:
    hint = why
    if isinstance(message, str):  # messages=["hi"]: text where a message goes
        hint = (
            "; a string is not a message: for one user message pass prompt='...' "
            "instead of messages=, or write {'role': 'user', 'content': '...'}"
        )
    return ConfigurationError(
        f"{where} must be a dict with 'role' and 'content', got {message!r:.80}{hint}"
    )


def _as_message(message: Any, where: str) -> Mapping[str, Any]:
    """A message given as another object than a mapping, as a dict: a pydantic model (the
    OpenAI SDK's ``ChatCompletionMessage``) by its ``model_dump(exclude_none=True)``,
    anything else by ``dict()`` (pairs: ``[("role", "user"), ("content", "hi")]``)."""
    if isinstance(message, (str, bytes, bytearray)):  # text where a message goes
        raise _not_a_message(message, where)
    dump = getattr(message, "model_dump", None)
    try:
        converted = dump(exclude_none=True) if callable(dump) else dict(message)
    except (TypeError, ValueError) as exc:
        how = "its model_dump()" if callable(dump) else "dict()"
        raise _not_a_message(
            message, where, f" ({how} cannot make a dict of it: {describe_error(exc)})"
        ) from exc
    if not isinstance(converted, Mapping):
        raise _not_a_message(
            message, where, f" (its model_dump() gave a {type(converted).__name__})"
        )
    return converted


def _message(message: Any, i: int) -> dict[str, Any]:
    where = f"messages[{i}]"
    # type() first: isinstance against the Mapping ABC costs ~0.5 us, a dict is the usual case
    if type(message) is not dict and not isinstance(message, Mapping):
        message = _as_message(message, where)
    if "role" not in message:
        raise _not_a_message(message, where)
    role = message["role"]
    if role not in ROLES:
        raise ConfigurationError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    out = dict(message)
    content = message.get("content")
    if content is not None and not isinstance(content, str):  # text: nothing to check
        out["content"] = _content(content, f"{where}.content")
    else:
        out["content"] = content
    if message.get("tool_calls"):
        if role != "assistant":
            raise ConfigurationError(f"{where}: only assistant messages carry tool_calls")
        out["tool_calls"] = [
            _tool_call(call, f"{where}.tool_calls[{j}]")
            for j, call in enumerate(message["tool_calls"])
        ]
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise ConfigurationError(
            f"{where}: a tool result needs 'tool_call_id' (the id of the call it answers)"
        )
    return out


def freeze_messages(messages: Any) -> tuple[dict[str, Any], ...]:
    """Checked copies of OpenAI-shaped messages; image bytes become data URLs. Any iterable
    of messages is taken (a generator, ``dict.values()``...), and a message that is not a
    mapping is converted (``_as_message``: a pydantic model such as the OpenAI SDK's
    ``ChatCompletionMessage``, pairs)."""
    # the usual types first, without the ABC checks
    if type(messages) is not list and type(messages) is not tuple:
        messages = _message_list(messages)
    return tuple([_message(message, i) for i, message in enumerate(messages)])


def _message_list(messages: Any) -> Any:
    """Messages given as another object than a list or a tuple: a sequence as it is, any
    other iterable (a generator, ``map(...)``, ``dict.values()``) as a list of its items;
    a string (the prompt given positionally), bytes, a single message (a dict) or what is
    not iterable is an error saying what to pass."""
    text_or_one = isinstance(messages, (str, bytes, bytearray, Mapping))
    if not text_or_one and isinstance(messages, Iterable):
        return messages if isinstance(messages, Sequence) else list(messages)
    hint = ""
    if isinstance(messages, str):  # ctx.complete("Say hi"): the prompt given positionally
        hint = (
            f" ({messages!r:.40}); the first positional argument is messages=: for one "
            "user message pass the text as prompt='...', a keyword argument"
        )
    elif isinstance(messages, Mapping) and "role" in messages:  # one message, no list
        hint = f" ({messages!r:.60}); a single message goes in a list: messages=[{{...}}]"
    elif isinstance(messages, Mapping):
        hint = "; for a dict whose values are messages pass list(messages.values())"
    raise ConfigurationError(
        "messages must be a list of {'role': ..., 'content': ...} dicts, "
        f"got {type(messages).__name__}{hint}"
    )


def prompt_messages(where: str, prompt: Any, messages: Any) -> Any:
    """The messages of a call given ``prompt=`` (one user message) or ``messages=``;
    both, or neither, is an error (one would be silently dropped)."""
    if messages is None:
        if prompt is None:
            raise ConfigurationError(f"{where} needs messages=[...] or prompt='...'")
        return [{"role": "user", "content": prompt}]
    if prompt is not None:
        raise ConfigurationError(
            f"{where} takes prompt= or messages=, not both (prompt= would be dropped): "
            "pass prompt='...' alone, or add it to messages=[..., {'role': 'user', "
            "'content': ...}]"
        )
    return messages


# ------------------------------------------------------------------ tools


@dataclass(frozen=True)
class Tool:
    """A function the model may call: name, description, JSON Schema of its arguments."""

    name: str
    description: str | None
    parameters: Mapping[str, Any]
    strict: bool | None = None

    def to_openai(self) -> dict[str, Any]:
        """The Chat Completions form ``{"type": "function", "function": {...}}``."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


def arguments_model(fn: Callable[..., Any]) -> type[Any]:
    """A pydantic model of ``fn``'s parameters (``ctx``, ``*args``, ``**kwargs`` left out)."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn, eval_str=True).parameters.items():
        if name in ("self", "ctx") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    model: type[Any] = create_model(fn.__name__, **fields)
    return model


def function_tool(fn: Callable[..., Any]) -> Tool:
    """A :class:`Tool` from a Python function: its name, docstring and typed parameters."""
    schema = arguments_model(fn).model_json_schema()
    schema.pop("title", None)
    doc = inspect.getdoc(fn)
    return Tool(fn.__name__, doc.strip() if doc else None, schema)


def _tool(tool: Any, i: int) -> Tool:
    if isinstance(tool, Tool):
        return tool
    if callable(tool) and not isinstance(tool, Mapping):
        return function_tool(tool)
    spec = tool.get("function") if isinstance(tool, Mapping) and "function" in tool else tool
    if isinstance(tool, Mapping) and tool.get("type", "function") != "function":
        raise ConfigurationError(
            f"tools[{i}]: only function tools are provider-neutral, got type {tool['type']!r}; "
            "pass provider-specific tools in the provider's own shape through extra"
        )
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigurationError(
            f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
            "'description': ..., 'parameters': <JSON Schema>}}}} or a Python function"
        )
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise ConfigurationError(f"tools[{i}].parameters must be a JSON Schema object")
    strict = spec.get("strict")
    description = spec.get("description")
    return Tool(
        spec["name"],
        None if description is None else str(description),
        dict(parameters),
        None if strict is None else bool(strict),
    )


def to_tools(tools: Any) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigurationError("tools must be a list of tool definitions or Python functions")
    found = tuple(_tool(tool, i) for i, tool in enumerate(tools))
    names = [t.name for t in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return found


class ToolChoiceMode(str, Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    FUNCTION = "function"


@dataclass(frozen=True)
class ToolChoice:
    """``auto`` | ``none`` | ``required`` | one named function."""

    mode: ToolChoiceMode
    name: str | None = None

    def to_openai(self) -> Any:
        if self.mode is ToolChoiceMode.FUNCTION:
            return {"type": "function", "function": {"name": self.name}}
        return self.mode.value


def to_tool_choice(choice: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, ToolChoice):
        found = choice
    elif isinstance(choice, str) and choice in ("auto", "none", "required"):
        found = ToolChoice(ToolChoiceMode(choice))
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if not isinstance(name, str):
            raise ConfigurationError(
                "tool_choice for one function is {'type': 'function', 'function': {'name': ...}}"
            )
        found = ToolChoice(ToolChoiceMode.FUNCTION, name)
    else:
        raise ConfigurationError(
            "tool_choice must be 'auto', 'none', 'required' or "
            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
        )
    if found.mode is not ToolChoiceMode.NONE and not tools:
        raise ConfigurationError(f"tool_choice={found.to_openai()!r} needs tools=[...]")
    if found.name is not None and found.name not in {t.name for t in tools}:
        raise ConfigurationError(f"tool_choice names {found.name!r}, which is not in tools")
    return found


# ------------------------------------------------------------------ output format


class OutputKind(str, Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True)
class ResponseFormat:
    """What the answer must be. ``model_class`` (a pydantic model) validates ``parsed``."""

    kind: OutputKind
    name: str = "response"
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None
    model_class: type[Any] | None = field(default=None, compare=False)

    def json_schema(self) -> dict[str, Any]:
        """OpenAI's ``json_schema`` object (``name``, ``description``?, ``schema``,
        ``strict``?): nested in Chat Completions' ``response_format``, flat in the
        Responses API's ``text.format``."""
        spec: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            spec["description"] = self.description
        spec["schema"] = dict(self.schema or {})
        if self.strict is not None:
            spec["strict"] = self.strict
        return spec

    def key(self) -> dict[str, Any]:
        """What the request hash covers (the schema, not the class object)."""
        return {
            "kind": self.kind.value,
            "name": self.name,
            "schema": None if self.schema is None else dict(self.schema),
            "strict": self.strict,
            "description": self.description,
        }


def _pydantic_class(value: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic comes with sqlmodel
        return False
    return inspect.isclass(value) and issubclass(value, BaseModel)


def to_response_format(value: Any) -> ResponseFormat | None:
    """A pydantic model class, an OpenAI ``response_format`` dict, or a bare JSON Schema."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    if _pydantic_class(value):
        from ._schema import openai_strict_schema

        return ResponseFormat(
            OutputKind.JSON_SCHEMA,
            name=value.__name__,
            schema=openai_strict_schema(value.model_json_schema()),
            strict=True,
            model_class=value,
        )
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "response_format must be a pydantic model class, a JSON Schema dict, or "
            "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': ...}}"
        )
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(OutputKind(kind))
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ConfigurationError(
                "response_format {'type': 'json_schema'} needs "
                "'json_schema': {'name': ..., 'schema': {...}}"
            )
        check_schema(spec["schema"], "response_format json_schema.schema")
        strict = spec.get("strict")
        return ResponseFormat(
            OutputKind.JSON_SCHEMA,
            name=str(spec.get("name") or "response"),
            schema=dict(spec["schema"]),
            strict=None if strict is None else bool(strict),
            description=spec.get("description"),
        )
    if "properties" in value or kind in ("object", "array") or "$defs" in value:
        check_schema(value)
        return ResponseFormat(OutputKind.JSON_SCHEMA, schema=dict(value))
    raise ConfigurationError(
        f"response_format type {kind!r} is unknown; use a pydantic model, a JSON Schema, "
        "or type 'json_schema' | 'json_object' | 'text'"
    )


# ------------------------------------------------------------------ reasoning


@dataclass(frozen=True)
class Reasoning:
    """How much the model should think: an effort, a token budget, or both; and whether
    to return a summary of its reasoning."""

    effort: str | None = None
    budget_tokens: int | None = None
    summary: str | None = None

    def __post_init__(self) -> None:
        if self.effort is not None and self.effort not in EFFORTS:
            raise ConfigurationError(
                f"reasoning effort must be one of {', '.join(EFFORTS)}, got {self.effort!r}"
            )
        if self.budget_tokens is not None and (
            not isinstance(self.budget_tokens, int)
            or isinstance(self.budget_tokens, bool)
            or self.budget_tokens < 0
        ):
            raise ConfigurationError(
                f"reasoning budget_tokens must be an int >= 0, got {self.budget_tokens!r}"
            )
        if self.summary is not None and self.summary not in SUMMARIES:
            raise ConfigurationError(
                f"reasoning summary must be one of {', '.join(SUMMARIES)}, got {self.summary!r}"
            )

    def key(self) -> dict[str, Any]:
        return {"effort": self.effort, "budget_tokens": self.budget_tokens, "summary": self.summary}

    def thinking_budget(self) -> int | None:
        """Tokens to think with, for providers that take a budget (Anthropic, Gemini):
        ``budget_tokens``, else the effort's budget (0 for ``"none"``); ``None`` when
        neither is set (a summary asked for alone)."""
        if self.budget_tokens is not None:
            return self.budget_tokens
        if self.effort is None:
            return None
        return 0 if self.effort == "none" else EFFORT_BUDGETS[self.effort]


def to_reasoning(value: Any) -> Reasoning | None:
    """``"low"`` (an effort), ``2048`` (a budget), or a dict / :class:`Reasoning`."""
    if value is None or isinstance(value, Reasoning):
        return value
    if isinstance(value, str):
        return Reasoning(effort=value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Reasoning(budget_tokens=value)
    if isinstance(value, Mapping):
        unknown = set(value) - {"effort", "budget_tokens", "summary"}
        if unknown:
            raise ConfigurationError(
                f"reasoning takes effort, budget_tokens and summary; unknown: {sorted(unknown)}"
            )
        return Reasoning(value.get("effort"), value.get("budget_tokens"), value.get("summary"))
    raise ConfigurationError(
        "reasoning must be an effort ('low' | 'medium' | 'high' ...), a token budget (int), "
        f"or {{'effort': ..., 'budget_tokens': ..., 'summary': ...}}, got {value!r}"
    )
