"""The delay before a step's next attempt: its backoff, and at least a provider's ask."""

from __future__ import annotations

import builtins
import sys

import pytest

import baton_nb as bn
from baton_nb.runtime._attempt import retry_hint


def rate_limited(seconds: float | None) -> bn.ProviderError:
    return bn.ProviderError("openai", 429, "slow down", retryable=True, retry_after=seconds)


def test_a_provider_error_gives_its_retry_after() -> None:
    assert retry_hint(rate_limited(2.5)) == 2.5
    assert retry_hint(rate_limited(None)) == 0.0
    assert retry_hint(RuntimeError("other")) == 0.0
    assert retry_hint(None) == 0.0


def test_a_wrapped_provider_error_still_counts() -> None:
    try:
        try:
            raise rate_limited(3.0)
        except bn.ProviderError as exc:
            raise ValueError("my step gave up") from exc
    except ValueError as wrapped:
        assert retry_hint(wrapped) == 3.0
    try:
        try:
            raise rate_limited(1.0)
        except bn.ProviderError:
            raise KeyError("while handling it") from None
    except KeyError as implicit:
        assert retry_hint(implicit) == 1.0  # __context__ is kept even with "from None"


def test_the_largest_hint_of_a_group_wins() -> None:
    if sys.version_info >= (3, 11):
        group_type = builtins.ExceptionGroup
    else:  # pragma: no cover - anyio's dependency on 3.10
        from exceptiongroup import ExceptionGroup as group_type
    group = group_type("calls", [rate_limited(1.0), rate_limited(4.0), OSError("x")])
    assert retry_hint(group) == 4.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonsense_hint_is_ignored(bad: float) -> None:
    assert retry_hint(rate_limited(bad)) == 0.0
