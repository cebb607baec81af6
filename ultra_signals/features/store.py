"""Feature store: bounded bar buffers and incremental indicators per symbol × timeframe.

CONTRACT (scoring, filters and the runner rely on it):
- ``FeatureStore(settings: FeatureSettings, timeframes: list[str])``
- ``update(kline: Kline) -> Features``: feed one *closed* bar (bars of a (symbol, timeframe) arrive in
  open-time order; a bar whose open_time is not after the latest one is ignored and returns the latest
  Features unchanged).  O(1) per bar.
- ``latest(symbol, timeframe) -> Features | None``
- ``bars(symbol, timeframe) -> Sequence[Kline]``: the bounded buffer (at most ``buffer_bars``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Features:
    symbol: str
    timeframe: str
    open_time: int
    close_time: int
    close: float
    volume: float
    bars: int  # closed bars seen so far for this symbol × timeframe
    warm: bool  # every indicator below has passed its warm-up (is not NaN)
    ema_fast: float
    ema_mid: float
    ema_slow: float
    rsi: float
    macd: float
    macd_signal: float
    macd_hist: float
    atr: float
    adx: float
    plus_di: float
    minus_di: float
    bb_mid: float
    bb_upper: float
    bb_lower: float
    vwap: float
    vwap_upper: float
    vwap_lower: float
    volume_z: float

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        return {k: v for k, v in d.items() if isinstance(v, float | int) and not isinstance(v, bool)}
