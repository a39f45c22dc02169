"""Cost of a call: the provider's own figure if it reports one, else the price tables."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import anyio.to_thread

from baton_nb._usage import Usage

__all__ = ["compute_cost"]

logger = logging.getLogger("baton_nb.llm")

_pricing: Any = None
_unavailable = False


def _load_pricing() -> Any:
    global _pricing, _unavailable
    try:
        from baton_nb import pricing
    except ImportError as exc:  # pragma: no cover - pricing ships with baton_nb
        if not _unavailable:
            logger.warning("baton_nb.pricing unavailable (%s); costs are unknown (None)", exc)
        _unavailable = True
        return None
    pricing.known_models()  # loads the shipped tables once
    _pricing = pricing
    return pricing


async def compute_cost(
    pricing_model: str,
    usage: Usage,
    *,
    reported: Decimal | None = None,
    cache_write_ttl: str = "5m",
    called_as: str | None = None,
) -> Decimal | None:
    """USD cost; ``None`` when the model's price is unknown (never a silent 0).

    ``pricing_model`` is the name looked up in the price tables; ``called_as`` the
    ``provider/model`` of the call, which the unknown-price warning names.
    """
    if reported is not None:
        return reported
    pricing = _pricing
    if pricing is None:
        if _unavailable:
            return None
        pricing = await anyio.to_thread.run_sync(_load_pricing)
        if pricing is None:
            return None
    cost: Decimal | None = pricing.price_call(
        pricing_model,
        usage,
        called_as=called_as or pricing_model,
        cache_write_ttl=cache_write_ttl,
    )
    return cost
