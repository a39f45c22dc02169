"""``mock/<model>``: an offline provider with deterministic answers and exact counts.

The text depends only on the model and the messages, so a re-run gives the
same answer and two models give different ones. Usage is counted with the
same tokenizer as :func:`estimate_tokens`, and the call is priced as
``<model>`` (or ``price_as``), so costs look like the real thing.
"""

from __future__ import annotations

import hashlib
import json

import anyio

from baton_nb._usage import Usage

from ._config import Endpoint
from ._tokens import estimate_tokens, message_text
from ._types import LLMRequest
from ._wire import Parsed

__all__ = ["mock_complete", "mock_text"]

_OPENERS = (
    "In short",
    "Briefly",
    "To summarise",
    "The key point",
    "Put simply",
    "At a glance",
)
_BODIES = (
    'on "{topic}", it comes down to a few clear ideas: what it is, why it matters, what next.',
    'for "{topic}", the main factors are scope, cost and risk; weigh them in that order.',
    '"{topic}" is best approached step by step, checking each assumption against the data.',
    'the evidence on "{topic}" points one way, though two caveats deserve a closer look.',
    '"{topic}" has a simple core and a long tail of edge cases; start with the core.',
)


def _topic(request: LLMRequest) -> str:
    users = [m for m in request.messages if m.get("role") == "user"]
    text = message_text(users[-1].get("content")) if users else ""
    words = text.split()
    topic = " ".join(words[:8]).strip(" .,:;!?\"'")
    return (topic + (" …" if len(words) > 8 else "")) if topic else "the question"


def mock_text(model: str, request: LLMRequest) -> str:
    """Deterministic, model-flavoured answer to ``request`` (same input, same text)."""
    seed = json.dumps([model, list(request.messages)], sort_keys=True, default=str)
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()
    opener = _OPENERS[int(digest[:8], 16) % len(_OPENERS)]
    body = _BODIES[int(digest[8:16], 16) % len(_BODIES)].format(topic=_topic(request))
    text = f"{opener} ({model}, #{digest[:8]}): {body}"
    if request.max_tokens is not None:
        words = text.split(" ")
        while len(words) > 1 and estimate_tokens(" ".join(words)) > request.max_tokens:
            words.pop()
        text = " ".join(words)
    return text


async def mock_complete(endpoint: Endpoint, model: str, request: LLMRequest) -> Parsed:
    """Answer after ``endpoint.latency`` seconds, without any network."""
    if endpoint.latency > 0:
        await anyio.sleep(endpoint.latency)
    text = mock_text(model, request)
    usage = Usage(
        input_tokens=estimate_tokens(request.messages), output_tokens=estimate_tokens(text)
    )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
    raw = {
        "id": f"mock-{digest}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
    }
    return Parsed(text, usage, raw)
