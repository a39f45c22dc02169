"""configure(), endpoints, keys from the environment, errors before any network."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from baton_nb._errors import ConfigurationError
from baton_nb.llm import Limit, LLMRequest, complete, configure, reset_configuration
from baton_nb.llm._config import configured_limits, known_secrets, resolve_endpoint

MSGS = ({"role": "user", "content": "hi"},)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GEMINI_BASE_URL",
        "OPENROUTER_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    reset_configuration()
    yield
    reset_configuration()


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY"),
        ("gemini/gemini-2.5-flash", "GEMINI_API_KEY"),
        ("google/gemini-2.5-flash", "GEMINI_API_KEY"),
        ("openrouter/x/y", "OPENROUTER_API_KEY"),
        ("together/x", "TOGETHER_API_KEY"),
        ("groq/x", "GROQ_API_KEY"),
    ],
)
@pytest.mark.anyio
async def test_missing_key_names_the_env_var(
    model: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigurationError, match=env):
        await complete(LLMRequest(model, MSGS))


@pytest.mark.anyio
async def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown provider 'nope'.*anthropic.*openai"):
        await complete(LLMRequest("nope/x", MSGS))
    with pytest.raises(ConfigurationError) as info:
        await complete(LLMRequest("nope/x", MSGS))
    assert "Did you mean" not in str(info.value)  # nothing close


@pytest.mark.anyio
async def test_a_near_miss_of_a_provider_says_did_you_mean() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown provider 'opnai'.*Did you mean 'openai'\?"
    ):
        await complete(LLMRequest("opnai/gpt-5", MSGS))


def test_env_vars_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    ep = resolve_endpoint("openai")
    assert ep.api_key == "sk-from-env-123456"
    assert ep.base_url == "http://127.0.0.1:9/v1"
    assert "sk-from-env" not in repr(ep)
    assert "sk-from-env-123456" in known_secrets()


def test_configured_values_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-123456")
    configure(providers={"anthropic": {"api_key": "cfg-key-123456", "base_url": "http://h"}})
    ep = resolve_endpoint("anthropic")
    assert (ep.api_key, ep.base_url) == ("cfg-key-123456", "http://h")


def test_gemini_falls_back_to_google_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-google-123456")
    assert resolve_endpoint("google").api_key == "AIza-google-123456"
    assert resolve_endpoint("google").name == "gemini"


def test_named_endpoint_needs_no_key() -> None:
    configure(providers={"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}})
    ep = resolve_endpoint("local")
    assert (ep.kind, ep.api_key, ep.name) == ("openai", None, "local")


def test_an_endpoint_takes_its_models_image_figure() -> None:
    configure(providers={"local": {"kind": "openai", "base_url": "http://x", "image_tokens": 2880}})
    assert resolve_endpoint("local").image_tokens == 2880


def test_named_endpoint_needs_a_base_url() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        configure(providers={"mine": {"kind": "anthropic"}})


@pytest.mark.parametrize(
    "options",
    [
        {"bogus": 1},
        {"kind": "cohere", "base_url": "http://x"},
        {"timeout": "10"},
        {"image_tokens": 0},  # no bound under what is billed
        {"image_tokens": 1.5},
    ],
)
def test_bad_provider_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        configure(providers={"openai": options})


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"max_retries": -1}, {"limits": {"x": 3}}])
def test_bad_configure_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        configure(**kwargs)  # type: ignore[arg-type]


def test_limits_and_reset() -> None:
    configure(limits={"google": Limit(concurrency=2)})
    version, limits = configured_limits()
    assert limits == {"gemini": Limit(concurrency=2)}
    reset_configuration()
    new_version, limits = configured_limits()
    assert limits == {} and new_version != version


def test_pricing_delegates(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    import baton_nb.pricing

    monkeypatch.setattr(baton_nb.pricing, "configure_pricing", seen.append)
    configure(pricing="my_prices.json")
    assert seen == ["my_prices.json"]
