"""The most a request can be billed for, read from the request body that will be sent.

A budget reserves a call's worst case before sending it (``runtime/_spend.py``). The output
side is taken from the body the provider's adapter builds, the one ``complete()`` sends,
so it cannot drift from the adapters: the output cap as sent (Anthropic's default
``max_tokens`` plus a thinking budget included) times the number of choices asked for
(OpenAI's ``n``, Gemini's ``candidateCount``, from ``extra=``). The prompt side is that
body's text, media payloads removed (system parts, tools and ``extra=`` fields included: a
safe upper bound), each image part at the most its provider documents for one image, and
the parts no bound is known for before sending (a PDF, audio, video, content stored at the
provider) named, for the budget to refuse the call. A ``cache_control`` breakpoint notes
the prompt-cache write Anthropic bills at a higher rate. Budgeted calls only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import Endpoint
from ._mock import IMAGE_TOKENS as MOCK_IMAGE_TOKENS  # what the mock bills per image
from ._types import LLMRequest

__all__ = ["Ceiling", "ceiling", "image_parts", "image_tokens"]

# Tokens one image can be billed at, at most (the documented worst case: a size is not
# read from the image; detail "high", which "auto" may pick).
#
# OpenAI, "Images and vision", Calculating costs
# (https://platform.openai.com/docs/guides/images-vision#calculating-costs):
# - tile models: fitted in 2048x2048, then the short side scaled to 768, 512-px tiles:
#   at most 4 x 2 = 8 tiles; tokens = base + 8 x per tile;
# - patch models: 32-px patches capped at 1,536, times the model's multiplier.
_OPENAI_TILES = {  # model: (base, per tile)
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o1-pro": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
    "gpt-5-chat-latest": (70, 140),
    "computer-use-preview": (65, 129),
}
_OPENAI_PATCHES = {  # model: multiplier of the 1,536 patches
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
}
OPENAI_IMAGE_MAX = {
    **{m: base + 8 * tile for m, (base, tile) in _OPENAI_TILES.items()},
    **{m: math.ceil(1536 * k) for m, k in _OPENAI_PATCHES.items()},
}
# Anthropic, "Vision" (https://docs.claude.com/en/docs/build-with-claude/vision): an image
# costs about width x height / 750 tokens, and one over ~1,600 tokens (or 1,568 px on its
# long edge) is first scaled down: ~1,600 at most (the prompt's 20 % margin covers "~").
ANTHROPIC_IMAGE_MAX = 1600
# Gemini, "Media resolution" and "Image understanding"
# (https://ai.google.dev/gemini-api/docs/media-resolution): Gemini 3 counts an image at
# 1,120 tokens by default and 2,240 at most (ultra high, per part); Gemini 2.x counts 258
# tokens per 768-px tile. Counted: nine tiles (2,322), above both.
GEMINI_IMAGE_MAX = 9 * 258


def image_tokens(kind: str, price_name: str, configured: int | None = None) -> int:
    """The most one image costs in prompt tokens, for an endpoint of ``kind`` calling the
    model priced as ``price_name`` (an OpenAI-compatible router's ``anthropic/claude-...``
    counts as Anthropic's). ``configured``: the endpoint's own figure (``image_tokens=``),
    for a model of no known accounting; for a known model the larger of it and the
    documented figure (a configured figure never lowers a documented one). A model of no
    known accounting, none configured, counts at the largest figure."""
    known = _known_image_tokens(kind, price_name)
    if configured is not None:
        return configured if known is None else max(configured, known)
    if known is not None:
        return known
    return max(ANTHROPIC_IMAGE_MAX, GEMINI_IMAGE_MAX, *OPENAI_IMAGE_MAX.values())


def _known_image_tokens(kind: str, price_name: str) -> int | None:
    """The documented most of one image for the model, None for a model not known."""
    if kind == "mock":
        return MOCK_IMAGE_TOKENS
    name = price_name.rsplit("/", 1)[-1].lower()
    if kind == "anthropic" or name.startswith("claude"):
        return ANTHROPIC_IMAGE_MAX
    if kind == "gemini" or name.startswith("gemini"):
        return GEMINI_IMAGE_MAX
    if name.startswith("chatgpt-4o"):  # ChatGPT's GPT-4o
        name = "gpt-4o" + name.removeprefix("chatgpt-4o")
    figure = _openai_image_max(name)
    if figure is None:
        # A dotted version (gpt-5.1, gpt-5.2-mini) counts as its family (gpt-5, gpt-5-mini),
        # and never under the patch accounting of the newer GPT-5 models (at most 1,536
        # patches x 1.2, "Images and vision", Calculating costs): whichever is larger.
        family = _DOTTED.sub(r"\1", name)
        known = _openai_image_max(family) if family != name else None
        if known is not None:
            return max(known, GPT5_PATCH_MAX)
    return figure


_DOTTED = re.compile(r"^(gpt-\d+)\.\d+")  # gpt-5.1-mini -> gpt-5-mini
GPT5_PATCH_MAX = math.ceil(1536 * 1.2)
# detail "original" (newer GPT-5 models): up to 10,000 patches x 1.2, whatever the model
ORIGINAL_DETAIL_MAX = 12_000


_SIZE = re.compile(r"-(mini|nano)(?=-|$)")


def _openai_image_max(name: str) -> int | None:
    known = [m for m in OPENAI_IMAGE_MAX if name == m or name.startswith(m + "-")]
    if not known:
        return None
    best = max(known, key=len)  # the longest: gpt-4o-mini-2024-07-18 is gpt-4o-mini's
    figure = OPENAI_IMAGE_MAX[best]
    size = _SIZE.search(name, len(best))
    if size is not None:
        # A -mini / -nano variant not listed (gpt-5-codex-mini) counts as its family's
        # patch model of that size (gpt-5-mini), else the largest of that size: the
        # small models use patches, at a multiplier above the tile figure's equivalent.
        suffix = "-" + size.group(1)
        sized = [m for m in _OPENAI_PATCHES if m.endswith(suffix)]
        family = [m for m in sized if m.startswith(best + "-")]
        figure = max(figure, *(OPENAI_IMAGE_MAX[m] for m in family or sized))
    return figure


def image_parts(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many image parts the messages hold."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, Mapping) and part.get("type") == "image_url"
    )


# Request parts whose prompt tokens no bound is documented for before sending (a PDF's
# pages, audio or video by their length, content stored at the provider): refused under
# a budget, named by what the body calls them.
_UNBOUNDED_TYPES = {
    "file": "a file part (OpenAI 'file': a PDF's pages)",
    "input_file": "a file part (Responses 'input_file')",
    "input_audio": "an audio part ('input_audio')",
    "document": "a document block (Anthropic 'document': a PDF's pages)",
    "video_url": "a video part ('video_url')",
    "audio_url": "an audio part ('audio_url')",
    "input_video": "a video part ('input_video')",
}
# A data: URL of any type but an image (a video, audio, a PDF): its length is not a bound.
# Looked for in the fields that hold a URL or a part's data only: message text may start
# with "data:" and is text, counted.
_DATA_URL = re.compile(r"data:(?!image/)[\w.+-]+/[\w.+-]+[;,]", re.IGNORECASE)
_URL_KEYS = {
    "url", "image_url", "file_url", "audio_url", "video_url", "file_data", "uri", "fileUri",
}  # fmt: skip
# Tools the request may hold: plain function tools (their definitions are text, counted);
# any other (a server-side tool: web search, code execution, file search...) adds per-use
# fees and result tokens no bound is known for before sending.
_PLAIN_TOOL_TYPES = {None, "function", "custom"}
# Anthropic's client tools (run by the caller, as a function tool is: no per-use fee, no
# result the provider adds), by versioned type: the input tokens their definition adds,
# documented by Anthropic (platform.claude.com/docs, "Bash tool": 245 input tokens; "Text
# editor tool": 700; "Computer use tool": 735 per tool definition plus a system prompt
# overhead of 466-499, counted at 499). The body's text counts the short entry sent only.
_CLIENT_TOOLS = re.compile(r"(bash|text_editor|computer)_\d{8}")
CLIENT_TOOL_TOKENS = {"bash": 245, "text_editor": 700, "computer": 735 + 499}
_PLAIN_GEMINI_TOOL_KEYS = {"functionDeclarations", "function_declarations"}
_UNBOUNDED_KEYS = {  # top-level fields that bring in content stored at the provider
    "cachedContent": "Gemini 'cachedContent' (content cached at Google)",
    "previous_response_id": "Responses 'previous_response_id' (an earlier conversation)",
    "conversation": "Responses 'conversation' (a stored conversation)",
    "web_search_options": "OpenAI 'web_search_options' (a search run by the provider: "
    "per-use fees and result tokens)",
}


@dataclass
class _Found:
    images: int = 0
    originals: int = 0  # of which asked at detail "original"
    unbounded: list[str] = field(default_factory=list)
    cache_write: str | None = None  # None, "5m" or "1h": the longest lifetime asked
    tool_tokens: int = 0  # the documented overhead of Anthropic's client tools


def _strip(value: Any, found: _Found) -> Any:
    """``value`` without its media payloads: image parts counted, parts whose cost is
    unbounded named, the prompt-cache breakpoints' lifetimes noted."""
    if isinstance(value, list):
        return [_strip(v, found) for v in value]
    if not isinstance(value, Mapping):
        return value
    control = value.get("cache_control")
    if isinstance(control, Mapping) and found.cache_write != "1h":  # Anthropic's
        found.cache_write = "1h" if control.get("ttl") == "1h" else "5m"
    kind = value.get("type")
    if (kind == "image_url" and "image_url" in value) or kind == "input_image":
        found.images += 1  # OpenAI chat, Responses
        image = value.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else value.get("image_url")
        if isinstance(url, str) and _data_url(url, found):  # not an image, whatever its part
            found.images -= 1
            return {}
        detail = image.get("detail") if isinstance(image, Mapping) else value.get("detail")
        if detail == "original":
            found.originals += 1
        return {}
    if kind == "image" and "source" in value:  # Anthropic
        found.images += 1
        return {}
    if isinstance(kind, str) and kind in _UNBOUNDED_TYPES:
        found.unbounded.append(_UNBOUNDED_TYPES[kind])
        return {}
    for media in ("inlineData", "fileData"):  # Gemini
        data = value.get(media)
        if isinstance(data, Mapping):
            mime = str(data.get("mimeType") or "")
            if mime.startswith("image/"):
                found.images += 1
            else:
                found.unbounded.append(f"a Gemini {media} part of type {mime or 'unknown'!r}")
            return {}
    return {
        k: "" if k in _URL_KEYS and isinstance(v, str) and _data_url(v, found) else _strip(v, found)
        for k, v in value.items()
    }


def _data_url(value: str, found: _Found) -> bool:
    """Whether ``value`` (a URL field's) is a data: URL that is not an image (named)."""
    if value[:5].lower() != "data:" or not _DATA_URL.match(value):
        return False
    found.unbounded.append(f"a data: URL of type {value[5:].split(';')[0][:60]!r}")
    return True


def prompt_of(body: Mapping[str, Any]) -> tuple[str, _Found]:
    """The text of a request body to count tokens of (all of it, JSON included: a safe
    upper bound of the prompt's text, its tools and system parts), what it holds besides."""
    found = _Found()
    stripped = _strip(body, found)
    for key, what in _UNBOUNDED_KEYS.items():
        value = body.get(key)
        if value or isinstance(value, Mapping):  # web_search_options={} asks a search
            found.unbounded.append(what)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        client = _CLIENT_TOOLS.fullmatch(kind) if isinstance(kind, str) else None
        if client is not None:  # run by the caller: its documented definition tokens
            found.tool_tokens += CLIENT_TOOL_TOKENS[client.group(1)]
            continue
        server_tool = _server_tool(tool)
        if server_tool is not None:
            found.unbounded.append(server_tool)
    text = json.dumps(stripped, ensure_ascii=False, separators=(",", ":"), default=str)
    return text, found


def _server_tool(tool: Any) -> str | None:
    """How a tool entry that is not a plain function tool is named (None for one that
    is): OpenAI / Responses / Anthropic by ``type``, Gemini by its key."""
    if not isinstance(tool, Mapping):
        return None
    kind = tool.get("type")
    if "type" in tool and kind not in _PLAIN_TOOL_TYPES:
        return f"a server-side tool ({str(kind)[:60]!r}: per-use fees and result tokens)"
    if "type" not in tool and "name" not in tool and "function" not in tool:  # Gemini's
        other = sorted(str(k) for k in tool if k not in _PLAIN_GEMINI_TOOL_KEYS)
        if other:
            return f"a server-side tool ({other[0][:60]!r}: per-use fees and result tokens)"
    return None


@dataclass(frozen=True)
class Ceiling:
    """A request's billable maximum: its output cap, its images, the text to count."""

    images: int  # image parts
    image_tokens: int  # their prompt tokens, at most
    output_tokens: int | None  # per choice, as sent; None: the request sets no cap
    choices: int  # answers billed (n / candidateCount)
    # The body's text (media removed) to count the prompt's tokens of; None: count the
    # messages (the mock, which bills their text).
    text: str | None = None
    unbounded: tuple[str, ...] = ()  # parts whose cost cannot be bounded before sending
    cache_write: str | None = None  # a prompt-cache write asked ("5m" / "1h")
    tool_tokens: int = 0  # Anthropic's client tools' documented definition tokens

    @property
    def total_output(self) -> int | None:
        return None if self.output_tokens is None else self.output_tokens * self.choices

    def describe(self) -> str:
        """``'3 x 1,000 output tokens, 1 image at 1,600 input tokens'``-style words."""
        out = f"{self.output_tokens:,} output tokens"
        if self.choices > 1:
            out = f"{self.choices} choices x {out}"
        if self.images:
            each = self.image_tokens // self.images
            out += f", {self.images} image{'s' if self.images > 1 else ''} at {each:,} tokens"
        if self.cache_write:
            out += f", the prompt at the {self.cache_write} cache-write rate"
        return out


def ceiling(endpoint: Endpoint, model: str, request: LLMRequest, price_name: str) -> Ceiling:
    """The output cap and choices of the body ``complete()`` sends for ``request``
    (``UnsupportedFeature`` as sending would), its text and its images at their documented
    most."""
    per_image = image_tokens(endpoint.kind, price_name, endpoint.image_tokens)
    if endpoint.kind == "mock":  # answers once, cut at max_tokens
        images = image_parts(request.messages)
        return Ceiling(images, images * per_image, request.max_tokens, 1)
    from ._complete import adapter_for

    body = adapter_for(endpoint).build(endpoint, model, request).body
    output, choices = _output_of(endpoint, body)
    text, found = prompt_of(body)
    return Ceiling(
        found.images,
        found.images * per_image + found.originals * max(0, ORIGINAL_DETAIL_MAX - per_image),
        output,
        choices,
        text,
        tuple(found.unbounded),
        found.cache_write,
        found.tool_tokens,
    )


def _count(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(0, math.ceil(value))


def _output_of(endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[int | None, int]:
    """The output tokens one answer may be billed for, and how many answers."""
    kind = endpoint.kind
    if kind == "anthropic":  # max_tokens includes the thinking budget
        return _count(body.get("max_tokens"), None), 1
    if kind == "responses":  # max_output_tokens includes the reasoning tokens
        return _count(body.get("max_output_tokens"), None), 1
    if kind == "gemini":
        config = body.get("generationConfig")
        config = config if isinstance(config, Mapping) else {}
        output = _count(config.get("maxOutputTokens"), None)
        # maxOutputTokens holds the thinking too (the adapter refuses a cap at or under
        # a thinking budget; docs/providers.md): the cap alone bounds a candidate, dynamic
        # thinking (-1) included. None sent: no bound (refused under a budget).
        return output, _count(config.get("candidateCount"), 1) or 1
    # OpenAI chat completions: max_completion_tokens (or the older max_tokens, the field
    # some compatible servers take) includes the reasoning tokens; both sent: the larger
    fields = {endpoint.max_tokens_field, "max_completion_tokens", "max_tokens"}
    caps = [_count(body.get(f), None) for f in fields]
    output = max((c for c in caps if c is not None), default=None)
    return output, _count(body.get("n"), 1) or 1
