"""Prices -> exact USD cost of LLM calls.

Prices come from the user's files (``bn.configure(pricing=...)``), then baton_nb's shipped
overrides (the JSON files of the top-level ``pricing/`` folder, in the wheel as
``baton_nb/_pricing_data``), then the genai-prices package. Formats and matching rules are
in docs/pricing.md.

    >>> from baton_nb import Usage
    >>> from baton_nb.pricing import price
    >>> price("openai/gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100))
    Decimal('0.00021')
"""

from __future__ import annotations

from ._api import (
    UnknownPriceWarning,
    configure_pricing,
    known_models,
    lookup,
    near_priced,
    price,
    price_call,
)
from ._parse import load_price_file
from ._types import CallPricing, ModelPrice, PriceFile, Rates, Tier

__all__ = [
    "CallPricing",
    "ModelPrice",
    "PriceFile",
    "Rates",
    "Tier",
    "UnknownPriceWarning",
    "configure_pricing",
    "known_models",
    "load_price_file",
    "lookup",
    "near_priced",
    "price",
    "price_call",
]
