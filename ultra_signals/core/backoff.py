"""Retry delays shared by every adapter that retries (Binance REST and websockets, Telegram sender and poller).

One formula, so that a cap or a fix applies everywhere: the exponent is capped, so a long outage (thousands
of consecutive failures) cannot overflow the float and crash the retry loop it is meant to keep alive.
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 30  # 2**30 × any sane base is far past every configured cap


def exponential_delay(attempt: int, base_s: float, max_s: float) -> float:
    """``base_s × 2**attempt`` seconds (attempt 0 waits ``base_s``), never more than ``max_s``."""
    return min(max_s, base_s * (2.0 ** min(attempt, _MAX_EXPONENT)))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so clients do not retry in step."""
    d = exponential_delay(attempt, base_s, max_s)
    return d / 2.0 + rng.uniform(0.0, d / 2.0)
