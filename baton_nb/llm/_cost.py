"""Cost of a call: the price tables, or the cost a trusted server reports for it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio.to_thread

from baton_nb._usage import Usage

__all__ = ["compute_cost", "cost_now", "load_pricing", "pricing_loaded"]

_pricing: Any = None


def _load_pricing() -> Any:
    from baton_nb import pricing

    pricing.known_models()  # reads the overrides and imports genai-prices, once
    return pricing


async def load_pricing() -> None:
    """Load the price tables (the first use reads files and imports a 1.6 MB module: in a
    worker thread, not on the event loop)."""
    global _pricing
    if _pricing is None:
        _pricing = await anyio.to_thread.run_sync(_load_pricing)


def pricing_loaded() -> bool:
    """Whether the price tables are loaded (then :func:`cost_now` prices a call)."""
    return _pricing is not None


async def compute_cost(
    pricing_model: str,
    usage: Usage,
    *,
    called_as: str,
    reported: Decimal | None = None,
    reported_by: str | None = None,
    batch: bool = False,
) -> tuple[Decimal | None, Any]:
    """USD cost and how it was priced (a `baton_nb.pricing.CallPricing`); the cost is
    ``None`` when the model's price is unknown (never a silent 0).

    ``pricing_model`` is the name looked up in the price tables; ``called_as`` the
    ``provider/model`` of the call, which the unknown-price warning names. ``reported``
    is a cost the caller decided to trust (OpenRouter's, or a server configured with
    ``reported_cost=True``, and no ``price_as=``): it wins over the tables. ``batch``: a
    provider batch call, priced at the model's batch rates.
    """
    if _pricing is None:
        await load_pricing()
    return cost_now(
        pricing_model,
        usage,
        called_as=called_as,
        reported=reported,
        reported_by=reported_by,
        batch=batch,
    )


def cost_now(
    pricing_model: str,
    usage: Usage,
    *,
    called_as: str,
    reported: Decimal | None = None,
    reported_by: str | None = None,
    batch: bool = False,
) -> tuple[Decimal | None, Any]:
    """:func:`compute_cost` once the price tables are loaded (:func:`pricing_loaded`), without
    a coroutine."""
    pricing = _pricing
    assert pricing is not None, "the price tables are loaded by compute_cost"
    if reported is not None:
        source = f"reported by {reported_by}" if reported_by else "reported by the provider"
        return reported, pricing.CallPricing(pricing_model, source, None, None)
    cost, how = pricing.price_call(pricing_model, usage, called_as=called_as, batch=batch)
    return cost, how
