"""How force-exit and balance reach the executor that holds the positions (shared by every adapter's wiring).

In the running process the executor is the runner's own (paper or Binance): :func:`executor_closer` closes a
position through its broker, exactly as a signal's exit would, and :func:`executor_balance` reads the equity the
portfolio keeps (the paper equity, or Binance's account as its user stream reports it).  From a shell with no
runner, :func:`exchange_balance` asks Binance directly when the settings trade there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from ultra_signals.control.actions import Balance, Close
from ultra_signals.control.model import BalanceInfo, ControlError, ForceExitResult, NotAvailable
from ultra_signals.execution.brokers.base import BrokerError

if TYPE_CHECKING:
    from ultra_signals.core.config import Settings
    from ultra_signals.execution.executor import TradingExecutor

#: Longest wait for the exit fill before answering "still open" (the close stays in flight).
EXIT_WAIT_S = 30.0


def executor_closer(
    executor: TradingExecutor,
    now_ms: Callable[[], int],
    *,
    wait_s: float = EXIT_WAIT_S,
    poll_s: float = 0.05,
) -> Close:
    """Close the executor's open trade on a symbol: brackets cancelled, a reduce-only market exit, then wait
    (at most ``wait_s``) for the exit fill.  ``now_ms`` is the market clock the order is stamped with."""

    async def close(symbol: str) -> ForceExitResult:
        open_ = [t for t in executor.trades.values() if t.symbol == symbol and t.status == "open"]
        if not open_:
            pending = any(t.symbol == symbol and t.status == "pending" for t in executor.trades.values())
            why = "its entry has not filled yet" if pending else "no journaled open trade"
            raise NotAvailable(f"nothing to force-exit on {symbol}: {why} (a position we did not open: kill)")
        t = open_[0]
        qty = t.qty
        executor.broker.close_position(symbol, t.side, Decimal(str(t.qty)), t.key, now_ms())
        await executor.broker.drain(wait_s)
        deadline = time.monotonic() + wait_s
        while t.status == "open" and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        venue = "paper" if executor.simulated else "binance"
        return ForceExitResult(
            symbol,
            t.decision_id,
            t.status,
            qty,
            exit_price=t.exit_price or None,
            pnl=t.pnl,
            venue=venue,
        )

    return close


def executor_balance(executor: TradingExecutor) -> Balance:
    """The equity the executor's portfolio keeps (paper: start + realised PnL; Binance: the account's)."""

    async def balance() -> BalanceInfo:
        p = executor.portfolio
        if executor.simulated:
            return BalanceInfo("paper", "USDT", p.equity, p.equity_start, "paper broker (simulated fills)")
        return BalanceInfo("binance", "USDT", p.equity, p.equity_start, "as the account's user stream reports it")

    return balance


def exchange_balance(settings: Settings) -> Balance | None:
    """Binance's account equity read directly (a shell, no runner); None unless ``execution.broker`` is binance."""
    if settings.execution.broker != "binance":
        return None

    async def balance() -> BalanceInfo:
        from ultra_signals.control.kill import venue_label
        from ultra_signals.execution.brokers.binance import BinanceBroker

        try:
            broker = BinanceBroker.from_settings(settings)
        except BrokerError as e:
            raise ControlError(str(e)) from None
        try:
            equity = await broker.account_equity()
        finally:
            await broker.aclose()
        return BalanceInfo("binance", "USDT", equity, None, venue_label(settings))

    return balance
