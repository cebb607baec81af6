"""Risk gateway: throttles between a sized entry and the broker.

Sizing keeps one order within the risk budget; the gateway keeps the *book* within limits no single order can
see: how many entries went out in the last minute, notional per order and per symbol, open positions.  It is
pure (the executor passes in the open notional and the market time), so replay and live refuse alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ultra_signals.core.config import ThrottleSettings

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class GatewayVerdict:
    ok: bool
    reason: str | None  # throttle_orders_per_minute | throttle_order_notional | throttle_symbol_notional | ...
    detail: str


class RiskGateway:
    def __init__(self, limits: ThrottleSettings) -> None:
        self.limits = limits
        self._sent: deque[int] = deque()  # event times of entries let through

    def check(self, *, symbol: str, notional: float, ts_ms: int, open_notional: Mapping[str, float]) -> GatewayVerdict:
        """May an entry of ``notional`` USDT on ``symbol`` go out at ``ts_ms``, given what is already open?"""
        lim = self.limits
        while self._sent and self._sent[0] <= ts_ms - MINUTE_MS:
            self._sent.popleft()
        recent = sum(1 for t in self._sent if t > ts_ms - MINUTE_MS)
        if recent >= lim.max_orders_per_minute:
            return GatewayVerdict(
                False,
                "throttle_orders_per_minute",
                f"{recent} entries in the last minute (max {lim.max_orders_per_minute})",
            )
        if notional > lim.max_notional_per_order:
            return GatewayVerdict(
                False,
                "throttle_order_notional",
                f"{notional:.2f} USDT over {lim.max_notional_per_order:.2f} per order",
            )
        held = open_notional.get(symbol, 0.0)
        if held + notional > lim.max_notional_per_symbol:
            return GatewayVerdict(
                False,
                "throttle_symbol_notional",
                f"{symbol}: {held:.2f} open + {notional:.2f} over {lim.max_notional_per_symbol:.2f}",
            )
        open_symbols = {s for s, n in open_notional.items() if n > 0}
        if symbol not in open_symbols and len(open_symbols) >= lim.max_open_positions:
            return GatewayVerdict(
                False,
                "throttle_open_positions",
                f"{len(open_symbols)} positions open (max {lim.max_open_positions})",
            )
        return GatewayVerdict(True, None, "ok")

    def record(self, ts_ms: int) -> None:
        """Count an entry that was let through (call only after :meth:`check` said ok)."""
        self._sent.append(ts_ms)
