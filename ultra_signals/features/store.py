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

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from ultra_signals.core.config import FeatureSettings
from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.features.indicators import Adx, Atr, Bollinger, Ema, Macd, Rsi, VolumeZ, Vwap


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
        """The numeric fields (``int`` and ``float``, not ``bool``) by name, in declaration order (the journal's
        JSON bytes), as filtering ``dataclasses.asdict(self)`` gave them.

        A dict display: the pipeline calls this once per candidate, and building the dict from constant keys is
        about half the cost of zipping a names tuple with one ``attrgetter`` call (issue 13).
        ``tests/test_store.py`` holds it to ``dataclasses.asdict``'s numbers (keys, order, values).
        """
        return {
            "open_time": self.open_time,
            "close_time": self.close_time,
            "close": self.close,
            "volume": self.volume,
            "bars": self.bars,
            "ema_fast": self.ema_fast,
            "ema_mid": self.ema_mid,
            "ema_slow": self.ema_slow,
            "rsi": self.rsi,
            "macd": self.macd,
            "macd_signal": self.macd_signal,
            "macd_hist": self.macd_hist,
            "atr": self.atr,
            "adx": self.adx,
            "plus_di": self.plus_di,
            "minus_di": self.minus_di,
            "bb_mid": self.bb_mid,
            "bb_upper": self.bb_upper,
            "bb_lower": self.bb_lower,
            "vwap": self.vwap,
            "vwap_upper": self.vwap_upper,
            "vwap_lower": self.vwap_lower,
            "volume_z": self.volume_z,
        }


def warmup_bars_needed(settings: FeatureSettings) -> int:
    """Closed bars of a timeframe after which every indicator is ready (``Features.warm`` turns True).

    EMA n needs n bars; RSI and ATR n + 1 (the first bar has no previous close); MACD slow + signal - 1;
    ADX 2n; Bollinger and the volume z-score n; VWAP 1.  With the defaults that is 200, from the slow EMA.
    """
    return IndicatorSet(settings).warmup


class IndicatorSet:
    """Every indicator of one symbol × timeframe, fed together so they all see the same bars."""

    __slots__ = (
        "adx",
        "atr",
        "bb",
        "ema_fast",
        "ema_mid",
        "ema_slow",
        "macd",
        "rsi",
        "volume_z",
        "vwap",
        "warmup",
    )

    def __init__(self, s: FeatureSettings) -> None:
        # No second validation here: FeatureSettings (core/config.py) bounds every period and the MACD order, and
        # is the one place those limits live.
        self.ema_fast = Ema(s.ema_fast)
        self.ema_mid = Ema(s.ema_mid)
        self.ema_slow = Ema(s.ema_slow)
        self.rsi = Rsi(s.rsi_period)
        self.macd = Macd(s.macd_fast, s.macd_slow, s.macd_signal)
        self.atr = Atr(s.atr_period)
        self.adx = Adx(s.adx_period)
        self.bb = Bollinger(s.bb_period, s.bb_std)
        self.vwap = Vwap(s.vwap_band_std)
        self.volume_z = VolumeZ(s.volume_z_period)
        self.warmup = max(
            i.warmup
            for i in (
                self.ema_fast,
                self.ema_mid,
                self.ema_slow,
                self.rsi,
                self.macd,
                self.atr,
                self.adx,
                self.bb,
                self.vwap,
                self.volume_z,
            )
        )


class _Series:
    """State of one symbol × timeframe."""

    __slots__ = ("bars", "count", "ind", "last_open_time", "latest")

    def __init__(self, settings: FeatureSettings) -> None:
        self.bars: deque[Kline] = deque(maxlen=settings.buffer_bars)
        self.ind = IndicatorSet(settings)
        self.count = 0
        self.last_open_time = -(1 << 62)
        self.latest: Features | None = None


class FeatureStore:
    """See the CONTRACT at the top of this module.

    A bar that would corrupt the indicators for good (a NaN or infinite price or volume, a negative volume,
    a bar not yet closed, a timeframe not configured) raises ``ValueError`` naming the bar, before any state
    changes: one NaN fed to an EMA would stay in it forever and keep the series cold without a word.
    """

    __slots__ = ("_series", "settings", "timeframes", "warmup")

    def __init__(self, settings: FeatureSettings, timeframes: list[str]) -> None:
        for tf in timeframes:
            tf_ms(tf)
        self.settings = settings
        self.timeframes = frozenset(timeframes)
        self.warmup = warmup_bars_needed(settings)
        self._series: dict[tuple[str, str], _Series] = {}

    def update(self, kline: Kline) -> Features:
        key = (kline.symbol, kline.timeframe)
        s = self._series.get(key)
        if s is None:
            s = self._new_series(kline)
        elif kline.open_time <= s.last_open_time:
            latest = s.latest
            assert latest is not None  # set by the bar that moved last_open_time
            return latest
        o = kline.open
        h = kline.high
        lo = kline.low
        c = kline.close
        v = kline.volume
        t = o + h + lo + c + v
        if t - t != 0.0 or v < 0.0 or not kline.closed:
            raise ValueError(f"bad bar {kline.key}: {self._why(kline)}")
        s.bars.append(kline)
        s.last_open_time = ot = kline.open_time
        n = s.count = s.count + 1
        ind = s.ind
        macd, macd_signal, macd_hist = ind.macd.update(c)
        adx, plus_di, minus_di = ind.adx.update(h, lo, c)
        bb_mid, bb_upper, bb_lower = ind.bb.update(c)
        vwap, vwap_upper, vwap_lower = ind.vwap.update(ot, h, lo, c, v)
        f = Features(
            kline.symbol,
            kline.timeframe,
            ot,
            kline.close_time,
            c,
            v,
            n,
            n >= self.warmup,
            ind.ema_fast.update(c),
            ind.ema_mid.update(c),
            ind.ema_slow.update(c),
            ind.rsi.update(c),
            macd,
            macd_signal,
            macd_hist,
            ind.atr.update(h, lo, c),
            adx,
            plus_di,
            minus_di,
            bb_mid,
            bb_upper,
            bb_lower,
            vwap,
            vwap_upper,
            vwap_lower,
            ind.volume_z.update(v),
        )
        s.latest = f
        return f

    def check(self, kline: Kline) -> None:
        """Refuse what :meth:`update` refuses (an unconfigured timeframe, a bar it would not take), with the same
        message, without touching any state: for bars whose features no one reads (``SignalEngine.feature_tfs``)."""
        if kline.timeframe not in self.timeframes:
            self._unconfigured(kline)
        t = kline.open + kline.high + kline.low + kline.close + kline.volume
        if t - t != 0.0 or kline.volume < 0.0 or not kline.closed:
            raise ValueError(f"bad bar {kline.key}: {self._why(kline)}")

    def _unconfigured(self, kline: Kline) -> NoReturn:
        raise ValueError(
            f"bad bar {kline.key}: timeframe {kline.timeframe!r} is not configured "
            f"(runtime.timeframes: {sorted(self.timeframes, key=tf_ms)})"
        )

    def _new_series(self, kline: Kline) -> _Series:
        if kline.timeframe not in self.timeframes:
            self._unconfigured(kline)
        s = self._series[(kline.symbol, kline.timeframe)] = _Series(self.settings)
        return s

    @staticmethod
    def _why(k: Kline) -> str:
        if not k.closed:
            return "the bar is not closed (the feature store takes closed bars only)"
        if k.volume < 0.0:
            return f"negative volume {k.volume!r}"
        return f"non-finite value in open/high/low/close/volume {(k.open, k.high, k.low, k.close, k.volume)!r}"

    def latest(self, symbol: str, timeframe: str) -> Features | None:
        s = self._series.get((symbol, timeframe))
        return None if s is None else s.latest

    def bars(self, symbol: str, timeframe: str) -> Sequence[Kline]:
        s = self._series.get((symbol, timeframe))
        return () if s is None else s.bars

    def series(self) -> list[tuple[str, str]]:
        """(symbol, timeframe) pairs seen so far."""
        return list(self._series)
