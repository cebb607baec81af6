"""Build the configured market source.  Imports lazily so the embedded default never loads network code."""

from __future__ import annotations

from ultra_signals.core.config import Settings
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import MarketSource, SourceError


def build_source(
    settings: Settings,
    metrics: Metrics,
    *,
    duration_minutes: int | None,
    data_dir: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    symbols_given: bool = True,
) -> MarketSource:
    rt = settings.runtime
    if rt.source == "sim":
        from ultra_signals.sources.sim import SimSource

        return SimSource(settings.sim, rt.symbols, rt.timeframes, duration_minutes or 120, rt.warmup_bars)
    if rt.source == "replay":
        from ultra_signals.sources.replay import ReplaySource

        folder = data_dir or settings.replay.data_dir
        if not folder:
            raise SourceError("replay needs a data folder: --data DIR or replay.data_dir in settings")
        src = ReplaySource(
            folder,
            rt.symbols if symbols_given else None,
            rt.timeframes,
            start_ms=start_ms,
            end_ms=end_ms,
            warmup_bars=rt.warmup_bars,
            duration_ms=duration_minutes * 60_000 if duration_minutes is not None else None,
            funding_dir=settings.replay.funding_dir,
        )
        missing = [tf for tf in rt.signal_timeframes if tf not in src.info.timeframes]
        if missing:
            raise SourceError(
                f"{folder}: signal timeframe(s) {', '.join(missing)} cannot be replayed from these files "
                f"(available: {', '.join(src.info.timeframes)}); set runtime.primary_timeframe accordingly"
            )
        return src
    if rt.source == "binance":
        from ultra_signals.sources.binance.source import BinanceSource

        return BinanceSource(settings, metrics, duration_minutes=duration_minutes)
    raise SourceError(f"unknown source {rt.source!r}")
