"""The one clock every window reads.

Caps, cooldowns and freshness must decide the same way live and in a replay at any speed, so nothing in the
pipeline calls ``time.time()``: it asks a :class:`Clock`.  The runner advances an :class:`EventClock` with each
market event; live adapters may use :class:`WallClock` only for their own timeouts, never for decisions.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current time in epoch milliseconds."""
        ...


class EventClock:
    """Market time: moves only forward, driven by the events the runner sees."""

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ts_ms: int) -> None:
        """Move to ``ts_ms`` if it is later; a late event never moves the clock back."""
        if ts_ms > self._now:
            self._now = ts_ms


class WallClock:
    """System time, for adapters' own timeouts and for live freshness of a silent feed."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
