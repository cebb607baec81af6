"""ultra-signals: closed candles in, a few capped, journaled, announced trade signals out."""

__version__ = "0.1.0"
