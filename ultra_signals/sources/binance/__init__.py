"""Live Binance USDⓈ-M futures market data: streams, warm-up, local order book, recovery from faults."""

from ultra_signals.sources.binance.source import BinanceSource

__all__ = ["BinanceSource"]
