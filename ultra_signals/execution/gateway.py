"""Risk gateway: throttles and portfolio limits between a sized entry and the broker.

Sizing keeps one order within the risk budget; the gateway keeps the *book* within limits no single order can
see: how many entries went out in the last minute, notional per order and per symbol, open positions, and across
every symbol at once (``execution.portfolio``): total notional, initial margin as a share of the equity including
unrealized PnL, and how much sits on one side (crypto moves together: five longs are one bet).  It is pure (the
executor passes in the book as :class:`Exposure` and the market time), so replay and live refuse alike, and a
forced entry (``ultra-signals force-enter``) passes through the same checks as a pipeline one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ultra_signals.core.config import PortfolioLimitSettings, ThrottleSettings

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Exposure:
    """The book as the portfolio limits see it (USDT), built by ``Portfolio.exposure``.

    ``notional`` and ``long`` cover pending entries too (at their planned size), so two entries decided in the
    same instant cannot both slip under a limit before either fills.
    """

    notional: Mapping[str, float]  # symbol -> open (or planned) notional
    long: Mapping[str, bool]  # symbol -> True long, False short
    equity: float  # wallet balance + unrealized PnL
    unrealized: float  # unrealized PnL of the open positions
    margin_used: float  # initial margin held by open positions (and by the venue for anything else)
    leverage: float  # the account's leverage: a new position holds notional / leverage as initial margin


@dataclass(frozen=True, slots=True)
class GatewayVerdict:
    ok: bool
    reason: str | None  # throttle_orders_per_minute | throttle_order_notional | throttle_symbol_notional | ...
    detail: str


class RiskGateway:
    def __init__(self, limits: ThrottleSettings, portfolio: PortfolioLimitSettings | None = None) -> None:
        self.limits = limits
        self.portfolio = portfolio
        self._sent: deque[int] = deque()  # event times of entries let through

    def check(
        self,
        *,
        symbol: str,
        notional: float,
        ts_ms: int,
        open_notional: Mapping[str, float],
        long: bool | None = None,
        exposure: Exposure | None = None,
    ) -> GatewayVerdict:
        """May an entry of ``notional`` USDT on ``symbol`` go out at ``ts_ms``, given what is already open?

        ``long`` and ``exposure`` (the side of the entry and the whole book) switch on the portfolio limits.
        """
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
        if self.portfolio is not None and exposure is not None and long is not None:
            refused = portfolio_check(self.portfolio, symbol=symbol, notional=notional, long=long, book=exposure)
            if refused is not None:
                return refused
        return GatewayVerdict(True, None, "ok")

    def record(self, ts_ms: int) -> None:
        """Count an entry that was let through (call only after :meth:`check` said ok)."""
        self._sent.append(ts_ms)


def portfolio_check(
    lim: PortfolioLimitSettings, *, symbol: str, notional: float, long: bool, book: Exposure
) -> GatewayVerdict | None:
    """The first portfolio limit the entry would break (measured with the entry included), or None."""
    others = {s: n for s, n in book.notional.items() if n > 0 and s != symbol}
    total = sum(others.values()) + notional
    if total > lim.max_total_notional_usdt:
        return GatewayVerdict(
            False,
            "portfolio_total_notional",
            f"{total - notional:.2f} USDT open + {notional:.2f} over {lim.max_total_notional_usdt:.2f} in total",
        )
    margin = book.margin_used + notional / book.leverage
    if book.equity <= 0 or margin > lim.max_margin_usage * book.equity:
        share = margin / book.equity if book.equity > 0 else float("inf")
        return GatewayVerdict(
            False,
            "portfolio_margin_usage",
            (
                f"margin {margin:.2f} USDT would be {share * 100:.1f}% of equity {book.equity:.2f}"
                f" (unrealized {book.unrealized:+.2f}; max {lim.max_margin_usage * 100:.0f}%)"
            ),
        )
    side = "long" if long else "short"
    same = {s: n for s, n in others.items() if book.long.get(s) is long}
    if len(same) + 1 > lim.max_same_direction_positions:
        return GatewayVerdict(
            False,
            "portfolio_same_direction",
            f"{len(same)} {side} positions open ({', '.join(sorted(same))}; max {lim.max_same_direction_positions})",
        )
    same_total = sum(same.values()) + notional
    if same_total > lim.max_same_direction_notional_usdt:
        return GatewayVerdict(
            False,
            "portfolio_same_direction_notional",
            (
                f"{same_total - notional:.2f} USDT {side} + {notional:.2f} over"
                f" {lim.max_same_direction_notional_usdt:.2f} on one side"
            ),
        )
    return None
