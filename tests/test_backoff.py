"""core/backoff.py: the one retry-delay formula every adapter uses; bounded, jittered, never overflowing."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ultra_signals.core.backoff import backoff_delay, exponential_delay


@given(st.integers(0, 64), st.floats(0.01, 5.0), st.floats(0.1, 120.0), st.integers(0, 2**32))
def test_backoff_is_bounded_and_jittered(attempt: int, base: float, cap: float, seed: int) -> None:
    d = backoff_delay(attempt, base, cap, random.Random(seed))
    full = min(cap, base * 2.0 ** min(attempt, 30))
    assert full / 2 <= d <= full


def test_exponential_doubles_from_base_up_to_the_cap() -> None:
    assert [exponential_delay(a, 0.05, 0.2) for a in range(5)] == [0.05, 0.1, 0.2, 0.2, 0.2]


@given(st.integers(0, 100_000), st.floats(0.001, 5.0), st.floats(0.1, 600.0))
def test_exponential_never_overflows_in_a_long_outage(attempt: int, base: float, cap: float) -> None:
    assert exponential_delay(attempt, base, cap) == min(cap, base * 2.0 ** min(attempt, 30))
