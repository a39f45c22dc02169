"""A budgeted call's worst case (DESIGN §11): what it is reserved at before it is sent.

The prompt's tokens (tiktoken over the text of the body the adapter sends, media removed,
plus a margin for other tokenizers; images at their documented most), the output cap of
that body times the choices asked for, at the model's rates (``llm/_ceiling.py``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._usage import Usage
from ._node import Node

if TYPE_CHECKING:
    from ..llm import LLMRequest

PROMPT_MARGIN = 1.2  # tokenizers other than tiktoken's count up to ~20 % more


async def worst_case(node: Node, request: LLMRequest, allow_unpriced: bool) -> tuple[Decimal, str]:
    """The most ``request`` can cost and what it counted (for the refusal's words), or
    ``ConfigurationError`` when that is unknown. Its output side is read from the body
    the adapter builds: what is sent is what is reserved."""
    from ..llm._ceiling import ceiling
    from ..llm._complete import pricing_model
    from ..llm._config import resolve_endpoint
    from ..llm._cost import compute_cost
    from ..llm._tokens import aestimate_tokens
    from ..llm._types import split_model
    from ._context import CALLED_AS

    provider, model = split_model(request.model)
    endpoint = resolve_endpoint(provider)
    name = pricing_model(endpoint, model, request)
    most = ceiling(endpoint, model, request, name)  # from the body that will be sent
    output = most.total_output
    if output is None:
        raise ConfigurationError(
            f"step {node.name!r}: under a budget a call needs max_tokens= (its worst "
            f"case is reserved before it is sent): {CALLED_AS.get()}(..., "
            f"model={request.model!r}, max_tokens=...)"
        )
    if most.unbounded:
        raise ConfigurationError(
            f"step {node.name!r}: under a budget a call's worst case is reserved before "
            f"it is sent, and this call of {request.model} holds "
            f"{', '.join(dict.fromkeys(most.unbounded))}, whose cost has no bound known "
            f"before sending: it was not sent. Run it in a workflow without a budget, "
            f"or send what it holds as text or images (a PDF's pages as images, the "
            f"content inline instead of stored at the provider, only function tools: "
            f"a search made by your own code, its results sent as text)"
        )
    # The body that will be sent, media removed: its text (the system parts, tools and
    # extra= fields included); the images at their documented most.
    counted_text = most.text if most.text is not None else request.messages
    prompt = await aestimate_tokens(counted_text) + most.image_tokens + most.tool_tokens
    prompt = math.ceil(prompt * PROMPT_MARGIN) + 8
    # A prompt-cache write (Anthropic cache_control) bills the prompt at the write rate
    written = prompt if most.cache_write else 0
    usage = Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_write_tokens=written,
        cache_write_1h_tokens=written if most.cache_write == "1h" else 0,
    )
    cost, _ = await compute_cost(name, usage, called_as=request.model)
    counted = f"{prompt:,} input tokens, {most.describe()}"
    if cost is not None:
        return cost, counted
    if allow_unpriced:
        return Decimal(0), counted
    raise ConfigurationError(
        f"step {node.name!r}: {request.model} has no known price, so under a budget "
        f"its calls are refused before sending (its cost could not be counted). Give "
        f"price_as='provider/model', a price file (bn.configure(pricing=...)), or "
        f"allow it: bn.Workflow(..., allow_unpriced=True) (its calls then count as $0)"
    )
