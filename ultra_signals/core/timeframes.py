"""Timeframe names as Binance spells them, and their lengths in milliseconds.

Everything downstream works in integer epoch milliseconds so that bar boundaries compare exactly.
"""

from __future__ import annotations

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def tf_ms(tf: str) -> int:
    """Length of a timeframe such as ``"5m"`` or ``"1h"`` in milliseconds; ``ValueError`` if unknown."""
    if len(tf) < 2 or tf[-1] not in _UNIT_MS or not tf[:-1].isdigit() or int(tf[:-1]) <= 0:
        raise ValueError(f"unknown timeframe {tf!r} (expected e.g. 1m, 5m, 15m, 1h, 4h, 1d)")
    return int(tf[:-1]) * _UNIT_MS[tf[-1]]


#: The kline intervals Binance offers (USD-M futures), except the calendar month "1M".  Settings accept only these:
#: ``7m`` parses as a length but no exchange feed has it, so a typo must not silently become a context timeframe.
EXCHANGE_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")


def check_exchange_timeframe(tf: str) -> str:
    """``tf`` if it is one of :data:`EXCHANGE_TIMEFRAMES`; ``ValueError`` naming the valid ones otherwise."""
    if tf not in EXCHANGE_TIMEFRAMES:
        raise ValueError(f"unknown timeframe {tf!r} (Binance intervals: {', '.join(EXCHANGE_TIMEFRAMES)})")
    return tf


def sort_timeframes(tfs: list[str]) -> list[str]:
    """Finest first, duplicates removed."""
    return sorted(set(tfs), key=tf_ms)
