"""The offline mock provider."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from baton_nb.llm import LLMRequest, complete, configure, estimate_tokens, reset_configuration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def fast_mock() -> Iterator[None]:
    reset_configuration()
    configure(providers={"mock": {"latency": 0.0}})
    yield
    reset_configuration()


def _req(model: str, text: str = "Why is the sky blue?", **kw: object) -> LLMRequest:
    return LLMRequest(model, ({"role": "user", "content": text},), **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_mock_is_deterministic_and_model_flavoured() -> None:
    a1 = await complete(_req("mock/gpt-4o-mini"))
    a2 = await complete(_req("mock/gpt-4o-mini", stream=True))
    b = await complete(_req("mock/claude-haiku-4-5"))
    c = await complete(_req("mock/gpt-4o-mini", "Something else entirely"))
    assert a1.text == a2.text and a1.usage == a2.usage and a1.raw == a2.raw
    assert a1.text != b.text and a1.text != c.text
    assert "gpt-4o-mini" in a1.text and "the sky blue" in a1.text
    assert (a1.provider, a1.model, a1.estimated, a1.replayed) == (
        "mock",
        "mock/gpt-4o-mini",
        False,
        False,
    )


@pytest.mark.anyio
async def test_mock_counts_tokens_and_is_priced_as_its_model() -> None:
    from baton_nb.pricing import price

    c = await complete(_req("mock/gpt-4o-mini"))
    assert c.usage.input_tokens == estimate_tokens(_req("mock/x").messages)
    assert c.usage.output_tokens == estimate_tokens(c.text)
    assert c.cost == price("gpt-4o-mini", c.usage)
    assert isinstance(c.cost, Decimal) and c.cost > 0
    priced = await complete(_req("mock/whatever", price_as="anthropic/claude-haiku-4-5"))
    assert priced.cost == price("anthropic/claude-haiku-4-5", priced.usage)


@pytest.mark.anyio
async def test_mock_respects_max_tokens() -> None:
    c = await complete(_req("mock/gpt-4o-mini", max_tokens=5))
    assert 0 < c.usage.output_tokens <= 5


@pytest.mark.anyio
async def test_mock_latency_is_configurable() -> None:
    configure(providers={"mock": {"latency": 0.1}})
    await complete(_req("mock/gpt-4o-mini"))  # warm the tokenizer
    start = time.perf_counter()
    c = await complete(_req("mock/gpt-4o-mini"))
    assert time.perf_counter() - start >= 0.09
    assert c.latency_ms >= 90


@pytest.mark.anyio
async def test_unknown_mock_model_costs_none_with_a_warning() -> None:
    from baton_nb.pricing import UnknownPriceWarning

    with pytest.warns(UnknownPriceWarning):
        c = await complete(_req("mock/no-such-model-xyz"))
    assert c.cost is None


@pytest.mark.anyio
async def test_first_call_loads_the_encoding_off_the_loop_and_outside_its_latency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh process: the tiktoken encoding is loaded by the first mock call. It is loaded
    in a worker thread, and the latency is the call's, not the load's (it used to read
    191 ms for a 20 ms mock). The load advances an injected clock by 5 s."""
    import threading

    from baton_nb.llm import _complete, _tokens

    clock = [100.0]
    monkeypatch.setattr(_complete, "_clock", lambda: clock[0])
    monkeypatch.setattr(_tokens, "_loaded", False)
    monkeypatch.setattr(_tokens, "_encoder", None)
    real_load = _tokens._load
    loaded_on: list[threading.Thread] = []

    def slow_load() -> object:
        if not _tokens._loaded:
            loaded_on.append(threading.current_thread())
            clock[0] += 5.0
        return real_load()

    monkeypatch.setattr(_tokens, "_load", slow_load)
    first = await complete(_req("mock/gpt-4o-mini"))
    assert loaded_on and loaded_on[0] is not threading.main_thread()
    assert first.latency_ms == 0.0  # the clock only moved during the load
    assert first.usage.input_tokens == estimate_tokens(
        [{"role": "user", "content": "Why is the sky blue?"}]
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "temperature", "refused"),
    [
        ("mock/gpt-4o-mini", 2.0, False),
        ("mock/gpt-4o-mini", 5.0, True),  # OpenAI: 0 to 2
        ("mock/gpt-4o-mini", -0.1, True),
        ("mock/gemini-2.5-flash", 2.0, False),
        ("mock/gemini-2.5-flash", 2.5, True),
        ("mock/claude-haiku-4-5", 1.0, False),
        ("mock/claude-haiku-4-5", 1.5, True),  # Anthropic: 0 to 1
    ],
)
async def test_mock_refuses_a_temperature_its_provider_refuses(
    model: str, temperature: float, refused: bool
) -> None:
    from baton_nb import ProviderError

    if not refused:
        await complete(_req(model, temperature=temperature))
        return
    with pytest.raises(ProviderError) as caught:
        await complete(_req(model, temperature=temperature))
    assert caught.value.status == 400 and not caught.value.retryable
    assert f"invalid temperature {temperature:g}" in str(caught.value)


@pytest.mark.anyio
async def test_mock_of_an_openai_model_refuses_a_part_openai_refuses() -> None:
    """An Anthropic-style image part sent to an OpenAI model: OpenAI answers 400 (its chat
    API takes the messages as written); the mock said nothing and answered without it."""
    from baton_nb import ProviderError

    anthropic_image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    content = [{"type": "text", "text": "What is in it?"}, anthropic_image]
    request = LLMRequest("mock/gpt-4o-mini", ({"role": "user", "content": content},))
    with pytest.raises(ProviderError, match="Invalid value: 'image'") as caught:
        await complete(request)
    assert caught.value.status == 400 and "image_url" in str(caught.value)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    fine = [{"type": "text", "text": "What is in it?"}, image]
    await complete(LLMRequest("mock/gpt-4o-mini", ({"role": "user", "content": fine},)))
