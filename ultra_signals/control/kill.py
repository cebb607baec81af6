"""How a kill reaches the exchange the settings trade on (shared by every adapter's wiring)."""

from __future__ import annotations

from ultra_signals.control.actions import Flatten
from ultra_signals.control.model import ControlError
from ultra_signals.core.config import Settings
from ultra_signals.execution.brokers.base import BrokerError, KillReport


def venue_label(settings: Settings) -> str:
    """Where a kill acts, in the confirmation prompt's words."""
    b = settings.binance
    if settings.execution.broker == "binance":
        return f"Binance {'TESTNET' if b.testnet else b.rest_url}"
    return "the paper broker"


def exchange_flattener(settings: Settings) -> Flatten | None:
    """Cancel-all and close-all on Binance when ``execution.broker`` is binance; None for paper/none.

    The broker client is built at kill time, so a kill works from a shell with no runner up.
    """
    if settings.execution.broker != "binance":
        return None

    async def flatten() -> KillReport:
        from ultra_signals.execution.brokers.binance import BinanceBroker

        try:
            broker = BinanceBroker.from_settings(settings)
        except BrokerError as e:
            raise ControlError(str(e)) from None
        try:
            return await broker.kill()
        finally:
            await broker.aclose()

    return flatten
