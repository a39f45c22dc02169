"""The request, completion and limit value types, and the request hash used for replay."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from baton_nb._errors import ConfigurationError
from baton_nb._usage import Usage
from baton_nb.pricing._types import CallPricing

__all__ = ["Completion", "LLMRequest", "Limit", "request_hash", "split_model"]


def split_model(model: str) -> tuple[str, str]:
    """Split ``"provider/model"`` into ``(provider, model)`` at the first slash.

    ``"openrouter/meta-llama/llama-3.3-70b-instruct"`` gives
    ``("openrouter", "meta-llama/llama-3.3-70b-instruct")``.
    """
    if not isinstance(model, str):
        raise ConfigurationError(f"model must be a string like 'openai/gpt-4o-mini', got {model!r}")
    provider, sep, name = model.partition("/")
    if not sep or not provider.strip() or not name.strip():
        raise ConfigurationError(
            f"model must be written 'provider/model' (e.g. 'openai/gpt-4o-mini', "
            f"'anthropic/claude-haiku-4-5', 'mock/gpt-4o-mini'), got {model!r}"
        )
    return provider.strip().lower(), name.strip()


def _freeze_messages(messages: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    frozen: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ConfigurationError(
                f"messages[{i}] must be a dict with 'role' and 'content', got {message!r:.80}"
            )
        frozen.append(dict(message))
    return tuple(frozen)


@dataclass(frozen=True)
class LLMRequest:
    """One chat-completion call, provider-neutral.

    ``extra`` is merged as-is into the provider's JSON body (provider-native
    names: ``top_p``, ``stop``, ``response_format``, Anthropic ``thinking``,
    Gemini ``generationConfig`` …).
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    timeout: float | None = None
    price_as: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        split_model(self.model)
        object.__setattr__(self, "messages", _freeze_messages(self.messages))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra or {})))
        if self.temperature is not None:
            object.__setattr__(self, "temperature", float(self.temperature))
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise ConfigurationError(f"max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {self.timeout!r}")

    @property
    def provider(self) -> str:
        return split_model(self.model)[0]

    @property
    def model_name(self) -> str:
        return split_model(self.model)[1]


def request_hash(request: LLMRequest) -> str:
    """sha256 hex of the canonical JSON of what determines the answer.

    Covers model, messages, temperature, max_tokens, price_as and extra; not
    ``stream`` nor ``timeout`` (they change how, not what, is asked).
    """
    payload = {
        "model": request.model,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "price_as": request.price_as,
        "extra": dict(request.extra),
    }
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"LLMRequest messages and extra must be JSON-serialisable: {exc}"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Limit:
    """Per-provider limits, shared by every run in the process.

    ``concurrency``: requests in flight; ``rpm``: requests per minute;
    ``tpm``: tokens per minute (estimated before the call, corrected after).
    """

    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise ConfigurationError(
                    f"Limit.{name} must be a positive int or None, got {value!r}"
                )


@dataclass(frozen=True)
class Completion:
    """The answer to one :class:`LLMRequest`.

    ``model`` is the requested ``provider/model`` string; ``provider`` the
    canonical provider name (``google/…`` gives ``gemini``). ``cost`` is USD,
    ``None`` when the model's price is unknown (never a silent 0).
    ``estimated`` means the provider reported no usage and tiktoken counted;
    ``replayed`` that the answer came from the replay store, not the network.
    ``pricing`` says how ``cost`` was found: the name priced, the price source
    (``genai-prices 0.2.5``, ``baton_nb override``, ``user file …``, ``reported by
    openrouter``), the matched price entry and the per-request fees within the cost.
    """

    text: str
    model: str
    provider: str
    usage: Usage
    cost: Decimal | None
    latency_ms: float
    raw: dict[str, Any] = field(repr=False)
    estimated: bool = False
    replayed: bool = False
    pricing: CallPricing | None = None

    def to_json(self) -> str:
        """Serialise exactly (cost as a decimal string) for the replay store."""
        return json.dumps(
            {
                "text": self.text,
                "model": self.model,
                "provider": self.provider,
                "usage": self.usage.to_dict(),
                "cost": None if self.cost is None else str(self.cost),
                "latency_ms": self.latency_ms,
                "raw": self.raw,
                "estimated": self.estimated,
                "replayed": self.replayed,
                "pricing": None if self.pricing is None else self.pricing.to_dict(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, s: str) -> Completion:
        data = json.loads(s)
        cost = data.get("cost")
        pricing = data.get("pricing")  # absent from completions stored before it existed
        return cls(
            text=data["text"],
            model=data["model"],
            provider=data["provider"],
            usage=Usage.from_dict(data.get("usage") or {}),
            cost=None if cost is None else Decimal(cost),
            latency_ms=float(data["latency_ms"]),
            raw=data.get("raw") or {},
            estimated=bool(data.get("estimated", False)),
            replayed=bool(data.get("replayed", False)),
            pricing=CallPricing.from_dict(pricing) if isinstance(pricing, dict) else None,
        )
