"""Request-weight and order-count accounting from Binance's response headers.

Every answer carries ``X-MBX-USED-WEIGHT-(n)(unit)`` (IP weight used in the current window); every successful
order answer ``X-MBX-ORDER-COUNT-(n)(unit)`` (orders placed by the account in the window).  Binance's USDⓈ-M
limits today: 2400 weight per minute, 300 orders per 10 s and 1200 per minute.  We slow down *before* the limit
(a 429 ignored becomes a 418 ban), which is why the thresholds here are below Binance's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_HEADER = re.compile(r"^x-mbx-(used-weight|order-count)-(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(slots=True)
class RateState:
    weight: dict[str, int] = field(default_factory=dict)  # "1m" -> used weight
    orders: dict[str, int] = field(default_factory=dict)  # "10s", "1m" -> orders placed
    weight_soft_limit: int = 2000
    order_soft_limits: dict[str, int] = field(default_factory=lambda: {"10s": 250, "1m": 1000})

    def update(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            m = _HEADER.match(name.lower())
            if m is None:
                continue
            try:
                n = int(value)
            except ValueError:
                continue
            key = f"{m.group(2)}{m.group(3)}"
            (self.weight if m.group(1) == "used-weight" else self.orders)[key] = n

    def pause_ms(self, now_ms: int, *, order: bool) -> int:
        """How long to wait before the next request so that it stays under the soft limits (0: go)."""
        wait = 0
        if self.weight.get("1m", 0) >= self.weight_soft_limit:
            wait = max(wait, _to_window_end(now_ms, "1m"))
        if order:
            for window, limit in self.order_soft_limits.items():
                if self.orders.get(window, 0) >= limit:
                    wait = max(wait, _to_window_end(now_ms, window))
        return wait

    def window_passed(self, window: str) -> None:
        """Forget a count once its window is over (the next answer brings the fresh one)."""
        self.orders.pop(window, None)
        self.weight.pop(window, None)


def _to_window_end(now_ms: int, window: str) -> int:
    m = re.match(r"^(\d+)([smhd])$", window)
    if m is None:
        return 0
    size = int(m.group(1)) * _UNIT_MS[m.group(2)]
    return size - now_ms % size + 50
