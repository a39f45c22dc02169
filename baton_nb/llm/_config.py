"""Provider endpoints, keys, limits and retry settings: what ``configure()`` changes.

Environment variables are read when a call is made (not at import), so a key
exported after ``import baton_nb`` is seen.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from baton_nb._errors import ConfigurationError

from ._types import Limit

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "BatchPolling",
    "Endpoint",
    "RetrySettings",
    "batch_polling",
    "configure",
    "configured_limits",
    "known_providers",
    "known_secrets",
    "reset_configuration",
    "resolve_endpoint",
    "retry_settings",
    "set_batch_polling",
]

DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 4
KINDS = ("openai", "responses", "anthropic", "gemini", "mock")
_AUTH_HEADER_NAMES = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


@dataclass(frozen=True)
class Endpoint:
    """A resolved provider endpoint. ``api_key`` and ``headers`` never show in its repr."""

    name: str
    kind: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    key_env: str | None = None
    base_url_env: str | None = None
    key_required: bool = False
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body_defaults: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    max_tokens_field: str = "max_tokens"
    default_max_tokens: int = 4096
    anthropic_version: str = "2023-06-01"
    latency: float = 0.02
    price_provider: str | None = None  # price `name/model` as `price_provider/model`
    # Price calls with the cost the server reports (``usage.cost``) instead of the price
    # tables: on for OpenRouter, which bills by it; off for any other server, whose figure
    # (a LiteLLM proxy's estimate, a float) is not what the user is billed.
    reported_cost: bool = False
    # The most one image of this endpoint's models is billed, in prompt tokens, when the
    # provider documents a figure the library does not know (a vision model behind an
    # OpenAI-compatible server): what a budget reserves per image (llm/_ceiling.py).
    image_tokens: int | None = None


def _builtin(name: str, kind: str, base_url: str, **kw: Any) -> Endpoint:
    return Endpoint(name=name, kind=kind, base_url=base_url, **kw)


_BUILTINS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        _builtin(
            "openai",
            "openai",
            "https://api.openai.com/v1",
            key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            key_required=True,
            max_tokens_field="max_completion_tokens",
        ),
        _builtin(
            "openai-responses",
            "responses",
            "https://api.openai.com/v1",
            key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            key_required=True,
            price_provider="openai",
        ),
        _builtin(
            "anthropic",
            "anthropic",
            "https://api.anthropic.com",
            key_env="ANTHROPIC_API_KEY",
            base_url_env="ANTHROPIC_BASE_URL",
            key_required=True,
        ),
        _builtin(
            "gemini",
            "gemini",
            "https://generativelanguage.googleapis.com",
            key_env="GEMINI_API_KEY",
            base_url_env="GEMINI_BASE_URL",
            key_required=True,
        ),
        _builtin(
            "openrouter",
            "openai",
            "https://openrouter.ai/api/v1",
            key_env="OPENROUTER_API_KEY",
            base_url_env="OPENROUTER_BASE_URL",
            key_required=True,
            body_defaults={"usage": {"include": True}},
            reported_cost=True,
        ),
        _builtin(
            "together",
            "openai",
            "https://api.together.xyz/v1",
            key_env="TOGETHER_API_KEY",
            base_url_env="TOGETHER_BASE_URL",
            key_required=True,
        ),
        _builtin(
            "groq",
            "openai",
            "https://api.groq.com/openai/v1",
            key_env="GROQ_API_KEY",
            base_url_env="GROQ_BASE_URL",
            key_required=True,
        ),
        _builtin(
            "vllm",
            "openai",
            "http://127.0.0.1:8000/v1",
            key_env="VLLM_API_KEY",
            base_url_env="VLLM_BASE_URL",
        ),
        _builtin("ollama", "openai", "http://127.0.0.1:11434/v1", base_url_env="OLLAMA_BASE_URL"),
        _builtin(
            "llamacpp", "openai", "http://127.0.0.1:8080/v1", base_url_env="LLAMACPP_BASE_URL"
        ),
        _builtin("mock", "mock", ""),
    )
}
_ALIASES = {"google": "gemini", "llama.cpp": "llamacpp", "llama-cpp": "llamacpp"}
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "base_url": (str,),
    "api_key": (str,),
    "api_key_env": (str,),
    "headers": (Mapping,),
    "body_defaults": (Mapping,),
    "timeout": (int, float),
    "max_tokens_field": (str,),
    "default_max_tokens": (int,),
    "anthropic_version": (str,),
    "latency": (int, float),
    "reported_cost": (bool,),
    "image_tokens": (int,),
}
_BOOL_OPTIONS = frozenset({"reported_cost"})


@dataclass(frozen=True)
class RetrySettings:
    """Backoff knobs (seconds). Tests shrink them; users rarely need to."""

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_wait: float = 30.0


@dataclass(frozen=True)
class BatchPolling:
    """How often a running batch is asked for its status: ``initial`` seconds after it is
    submitted, then each wait ``factor`` times the last, at most ``maximum``."""

    initial: float = 5.0
    maximum: float = 60.0
    factor: float = 1.5

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(f"batch polling {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"batch polling {name} must be > 0, got {value!r}")
        if self.maximum < self.initial:
            raise ConfigurationError("batch polling maximum must be >= initial")

    def delays(self) -> Callable[[], float]:
        """Successive waits between polls of one batch."""
        current = [self.initial / self.factor]

        def next_delay() -> float:
            current[0] = min(self.maximum, current[0] * self.factor)
            return current[0]

        return next_delay


@dataclass
class _State:
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, Limit] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    retry: RetrySettings = field(default_factory=RetrySettings)
    http2: bool = False
    version: int = 0
    batch_polling: BatchPolling = field(default_factory=BatchPolling)
    cache: bool = False  # the response cache for workflows that do not say (DESIGN §11)
    # resolve_endpoint / known_secrets per call, kept until the providers change (a new
    # _State on reset) and checked against the environment variables they read
    endpoints: dict[str, tuple[tuple[Any, ...], Endpoint]] = field(default_factory=dict)
    secrets: tuple[tuple[str, ...], tuple[Any, ...], frozenset[str]] | None = None


_state = _State()


def canonical_provider(provider: str) -> str:
    name = provider.strip().lower()
    return _ALIASES.get(name, name)


def known_providers() -> list[str]:
    return sorted({*_BUILTINS, *_state.providers, *_ALIASES})


def _check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"providers[{name!r}] must be a dict of options")
    clean: dict[str, Any] = {}
    for key, value in options.items():
        types = _OPTION_TYPES.get(key)
        if types is None:
            raise ConfigurationError(
                f"providers[{name!r}]: unknown option {key!r}; "
                f"valid options: {', '.join(sorted(_OPTION_TYPES))}"
            )
        wrong_bool = isinstance(value, bool) and key not in _BOOL_OPTIONS
        if value is not None and (not isinstance(value, types) or wrong_bool):
            raise ConfigurationError(
                f"providers[{name!r}][{key!r}] has the wrong type ({type(value).__name__})"
            )
        clean[key] = dict(value) if isinstance(value, Mapping) else value
    image = clean.get("image_tokens")
    if image is not None and image <= 0:
        raise ConfigurationError(
            f"providers[{name!r}]['image_tokens'] must be the most one image is billed, in "
            f"tokens (> 0), got {image}"
        )
    kind = clean.get("kind")
    if kind is not None and kind not in KINDS:
        raise ConfigurationError(
            f"providers[{name!r}]: kind must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    return clean


def _set_providers(providers: Mapping[str, Mapping[str, Any]]) -> None:
    for raw_name, options in providers.items():
        name = canonical_provider(str(raw_name))
        if not name or "/" in name:
            raise ConfigurationError(f"provider name must be non-empty without '/': {raw_name!r}")
        clean = _check_options(name, options)
        is_new = name not in _BUILTINS and name not in _state.providers
        if is_new and clean.get("kind", "openai") != "mock" and not clean.get("base_url"):
            raise ConfigurationError(
                f"providers[{name!r}] is a new endpoint: give it a 'base_url' (and "
                f"'kind': 'openai' | 'responses' | 'anthropic' | 'gemini'; default 'openai')"
            )
        _state.providers.setdefault(name, {}).update(clean)
        _state.endpoints.clear()
        _state.secrets = None


def _set_limits(limits: Mapping[str, Limit]) -> None:
    for raw_name, limit in limits.items():
        if not isinstance(limit, Limit):
            raise ConfigurationError(
                f"limits[{raw_name!r}] must be a baton_nb.Limit(...), got {type(limit).__name__}"
            )
        _state.limits[canonical_provider(str(raw_name))] = limit


def configure(
    *,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    limits: Mapping[str, Limit] | None = None,
    pricing: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    http2: bool | None = None,
    batch_poll: tuple[float, float] | None = None,
    cache: bool | None = None,
) -> None:
    """Configure providers, per-provider limits, price overrides, timeout, retries, HTTP/2.

    Each call updates only what it names. ``providers`` options: ``kind``
    (openai | responses | anthropic | gemini | mock), ``base_url``, ``api_key``,
    ``api_key_env``, ``headers``, ``body_defaults``, ``timeout``,
    ``max_tokens_field``, ``default_max_tokens``, ``anthropic_version``,
    ``latency`` (mock), ``reported_cost`` (price calls with the cost the server
    reports in ``usage.cost``; on for OpenRouter only), ``image_tokens`` (the most one
    image is billed, in prompt tokens, as the server's model documents: what a budget
    reserves per image; docs/spend_less.md). A new name is an endpoint used
    as ``name/<model>``.
    ``http2=True`` lets calls negotiate HTTP/2 (many calls multiplexed on one
    connection per provider; needs the ``h2`` package: ``pip install
    'baton-nb[http2]'``); the default is HTTP/1.1 over a pool of keep-alive connections.
    ``batch_poll=(initial, maximum)``: seconds between status polls of a running provider
    batch (``batch=True`` steps), growing from ``initial`` to ``maximum`` (default (5, 60)).
    ``cache=True`` turns the response cache on for every workflow that does not set
    ``Workflow(cache=...)`` (docs/spend_less.md).
    """
    if cache is not None and not isinstance(cache, bool):
        raise ConfigurationError(f"cache must be True or False, got {cache!r}")
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
    if max_retries is not None and (
        not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
    ):
        raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if http2 is not None:
        _check_http2(http2)
    polling = _batch_poll(batch_poll) if batch_poll is not None else None
    if providers is not None:
        _set_providers(providers)
    if limits is not None:
        _set_limits(limits)
        _state.version += 1
    if timeout is not None:
        _state.timeout = float(timeout)
    if max_retries is not None:
        _state.retry = replace(_state.retry, max_retries=max_retries)
    if http2 is not None:
        _state.http2 = http2
    if polling is not None:
        _state.batch_polling = polling
    if cache is not None:
        _state.cache = cache
    if pricing is not None:
        from baton_nb import pricing as pricing_module

        pricing_module.configure_pricing(pricing)


def _batch_poll(value: object) -> BatchPolling:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigurationError(
            f"batch_poll must be (initial, maximum) seconds, e.g. (5, 60); got {value!r}"
        )
    return BatchPolling(initial=float(value[0]), maximum=float(value[1]))


def _check_http2(http2: object) -> None:
    if not isinstance(http2, bool):
        raise ConfigurationError(f"http2 must be True or False, got {http2!r}")
    if http2 and importlib.util.find_spec("h2") is None:
        raise ConfigurationError(
            "http2=True needs the h2 package: pip install 'baton-nb[http2]' (or 'h2')"
        )


def batch_polling() -> BatchPolling:
    """How running provider batches are polled (``configure(batch_poll=...)``)."""
    return _state.batch_polling


def set_batch_polling(polling: BatchPolling) -> None:
    if not isinstance(polling, BatchPolling):
        raise ConfigurationError(f"expected a BatchPolling, got {polling!r}")
    _state.batch_polling = polling


def http2_enabled() -> bool:
    return _state.http2


def reset_configuration() -> None:
    """Forget everything ``configure()`` set (providers, limits, timeout, retries)."""
    global _state
    _state = _State(version=_state.version + 1)


def set_retry_settings(settings: RetrySettings) -> None:
    _state.retry = settings


def retry_settings() -> RetrySettings:
    return _state.retry


def cache_default() -> bool:
    """``configure(cache=...)``: whether workflows that do not say use the response cache."""
    return _state.cache


def default_timeout() -> float:
    return _state.timeout


def limits_version() -> int:
    """Changes whenever limits are reconfigured (``configured_limits``' version)."""
    return _state.version


def configured_limits() -> tuple[int, dict[str, Limit]]:
    """``(version, limits)``; the version changes whenever limits are reconfigured."""
    return _state.version, dict(_state.limits)


def _unknown_provider(provider: str) -> ConfigurationError:
    known = known_providers()
    near = difflib.get_close_matches(provider.lower(), known, n=1, cutoff=0.75)
    hint = f"Did you mean {near[0]!r}? " if near else ""
    return ConfigurationError(
        f"unknown provider {provider!r}; known providers: {', '.join(known)}. {hint}"
        f"Add an OpenAI-compatible endpoint with "
        f"configure(providers={{{provider!r}: {{'kind': 'openai', 'base_url': ...}}}})"
    )


def _apply_options(base: Endpoint, options: Mapping[str, Any]) -> Endpoint:
    fields_: dict[str, Any] = {k: v for k, v in options.items() if k != "api_key_env"}
    if "api_key_env" in options:
        fields_["key_env"] = options["api_key_env"]
    if "timeout" in fields_ and fields_["timeout"] is not None:
        fields_["timeout"] = float(fields_["timeout"])
    if "latency" in fields_ and fields_["latency"] is not None:
        fields_["latency"] = float(fields_["latency"])
    return replace(base, **{k: v for k, v in fields_.items() if v is not None})


def _endpoint_template(name: str) -> Endpoint:
    if name in _BUILTINS:
        return _BUILTINS[name]
    options = _state.providers.get(name)
    if options is None:
        raise _unknown_provider(name)
    return Endpoint(name=name, kind=str(options.get("kind") or "openai"), base_url="")


def _endpoint_env(endpoint: Endpoint) -> tuple[str, ...]:
    """The environment variables ``endpoint``'s resolution reads."""
    return _env_names(endpoint.base_url_env, endpoint.key_env, endpoint.kind == "gemini")


@lru_cache(maxsize=256)
def _env_names(base_url_env: str | None, key_env: str | None, gemini: bool) -> tuple[str, ...]:
    names = [base_url_env or "", key_env or ""]
    if gemini:
        names.append("GOOGLE_API_KEY")
    return tuple(name for name in names if name)


def _env_values(names: tuple[str, ...]) -> tuple[Any, ...]:
    """A fingerprint of the environment variables ``names``: equal while none of them is
    set, changed or removed. Only compared, never used as a value (``_resolve`` and
    ``known_secrets`` read the values themselves).

    ``os.environ.get`` encodes the name, looks it up and decodes the value (~0.8 us a
    name, ~10 names a call). ``os.environ`` keeps the raw (encoded) values in a dict it
    updates on every set and delete, so the raw values, looked up by names encoded once,
    change exactly when the decoded ones do (~0.05 us a name). Where that dict is missing
    (another Python, or ``os.environ`` replaced by a plain mapping) the values are read
    the usual way."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    if type(data) is not dict:
        return tuple(environ.get(name) for name in names)
    return tuple(map(data.get, _encoded_names(environ.encodekey, names)))


@lru_cache(maxsize=256)
def _encoded_names(encodekey: Callable[[str], Any], names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(map(encodekey, names))


def resolve_endpoint(provider: str) -> Endpoint:
    """The endpoint for ``provider`` with its key, or a ConfigurationError saying what to set.

    Kept per provider until ``configure(providers=...)`` or ``reset_configuration()``
    changes the providers or an environment variable it read changes (every call checks
    them: a key exported between calls is used by the next one)."""
    name = canonical_provider(provider)
    template = _endpoint_template(name)
    kept = _state.endpoints.get(name)
    env = _env_values(_endpoint_env(template))
    if kept is not None and kept[0] == env:
        return kept[1]
    endpoint = _resolve(name, template)
    _state.endpoints[name] = (env, endpoint)
    return endpoint


def _resolve(name: str, endpoint: Endpoint) -> Endpoint:
    options = _state.providers.get(name, {})
    env_base = os.environ.get(endpoint.base_url_env) if endpoint.base_url_env else None
    if env_base and "base_url" not in options:
        endpoint = replace(endpoint, base_url=env_base)
    endpoint = _apply_options(endpoint, options)
    if endpoint.api_key is None and endpoint.key_env:
        endpoint = replace(endpoint, api_key=os.environ.get(endpoint.key_env) or None)
    if endpoint.kind == "gemini" and endpoint.api_key is None:
        endpoint = replace(endpoint, api_key=os.environ.get("GOOGLE_API_KEY") or None)
    if endpoint.key_required and not endpoint.api_key:
        raise ConfigurationError(
            f"no API key for provider {name!r}: set the environment variable "
            f"{endpoint.key_env or 'holding the key'} or call "
            f"configure(providers={{{name!r}: {{'api_key': ...}}}})"
        )
    if endpoint.kind != "mock" and not endpoint.base_url:
        raise ConfigurationError(f"provider {name!r} has no base_url; configure one")
    return endpoint


def _secret_header_values(headers: Mapping[str, Any]) -> list[str]:
    return [str(v) for k, v in headers.items() if str(k).lower() in _AUTH_HEADER_NAMES and v]


def _secret_env_names() -> tuple[str, ...]:
    names = {e.key_env for e in _BUILTINS.values() if e.key_env} | {"GOOGLE_API_KEY"}
    names.update(
        str(options["api_key_env"])
        for options in _state.providers.values()
        if options.get("api_key_env")
    )
    return tuple(sorted(names))


def known_secrets() -> frozenset[str]:
    """Every API key and auth-header value currently configured or present in the env
    (kept until the providers or one of the environment variables read change)."""
    kept = _state.secrets
    names = _secret_env_names() if kept is None else kept[0]
    env = _env_values(names)
    if kept is not None and kept[1] == env:
        return kept[2]
    secrets: set[str] = {value for value in map(os.environ.get, names) if value}
    for options in _state.providers.values():
        if options.get("api_key"):
            secrets.add(str(options["api_key"]))
        secrets.update(_secret_header_values(options.get("headers") or {}))
    found = frozenset(s for s in secrets if len(s) >= 4)
    _state.secrets = (names, env, found)
    return found
