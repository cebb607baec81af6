"""Scoring: features of one closed bar → component scores → a weighted score in [-1, 1] → side and confidence.

Each component is squashed with ``tanh`` of a distance measured in ATRs (or band widths), so the same weights
work for BTC at 60,000 and an alt at 0.00005: the score is scale-free by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ultra_signals.core.config import ScoringSettings
from ultra_signals.core.decision import Side
from ultra_signals.features.store import Features


@dataclass(slots=True)
class Score:
    trend: float
    momentum: float
    volatility: float
    volume: float
    total: float  # weighted, in [-1, 1]
    side: Side | None  # None: no trade
    confidence: float  # in [0, 1]

    def components(self) -> dict[str, float]:
        return {"trend": self.trend, "momentum": self.momentum, "volatility": self.volatility, "volume": self.volume}


#: The sides as constants: an enum member read through its class costs a lookup on every use (issue 13).
_LONG = Side.LONG
_SHORT = Side.SHORT


def score(f: Features, s: ScoringSettings) -> Score:
    # Every field and weight is read once into a local and the clips are written out: the same float operations
    # in the same order as the plain formulas in the comments (scored once per bar of a signal timeframe).
    close = f.close
    atr = f.atr if f.atr > 0 else max(abs(close) * 1e-6, 1e-12)
    # Trend: fast vs mid EMA, and price vs the slow EMA, both in ATRs.
    trend = 0.6 * math.tanh((f.ema_fast - f.ema_mid) / atr) + 0.4 * math.tanh((close - f.ema_slow) / (2.0 * atr))
    # Momentum: RSI distance from 50 (clipped to [-1, 1]) and the MACD histogram relative to ATR.
    rsi = (f.rsi - 50.0) / 20.0
    hist = f.macd_hist
    momentum = 0.5 * (-1.0 if rsi < -1.0 else 1.0 if rsi > 1.0 else rsi) + 0.5 * math.tanh(hist / (0.1 * atr))
    # Volatility regime: where the close sits in its Bollinger band (a push towards a band edge is directional).
    bb_mid = f.bb_mid
    half_band = f.bb_upper - bb_mid
    volatility = math.tanh((close - bb_mid) / half_band) if half_band > 0 else 0.0
    # Volume flow: close relative to VWAP (in band units), confirmed by unusual volume on the bar's direction.
    vwap = f.vwap
    vband = f.vwap_upper - vwap
    vw = math.tanh((close - vwap) / vband) if vband > 0 else 0.0
    vz = f.volume_z
    vz = math.tanh((0.0 if vz < 0.0 else vz) / 2.0)  # max(volume_z, 0.0), NaN kept as max() keeps it
    direction = 1.0 if hist > 0 else -1.0 if hist < 0 else 0.0
    volume = 0.6 * vw + 0.4 * vz * direction
    w_trend = s.weight_trend
    w_momentum = s.weight_momentum
    w_volatility = s.weight_volatility
    w_volume = s.weight_volume
    wsum = w_trend + w_momentum + w_volatility + w_volume
    total = (w_trend * trend + w_momentum * momentum + w_volatility * volatility + w_volume * volume) / wsum
    total = -1.0 if total < -1.0 else 1.0 if total > 1.0 else total
    threshold = s.entry_threshold
    side = _LONG if total >= threshold else _SHORT if total <= -threshold else None
    confidence = 0.0
    if side is not None:
        sign = 1.0 if side is _LONG else -1.0
        agree = (
            w_trend * (trend * sign > 0)
            + w_momentum * (momentum * sign > 0)
            + w_volatility * (volatility * sign > 0)
            + w_volume * (volume * sign > 0)
        ) / wsum
        # Strength of the score and how many components agree with it, equally weighted.
        confidence = max(0.0, min(1.0, 0.5 * min(1.0, abs(total) / 0.6) + 0.5 * agree))
    return Score(trend, momentum, volatility, volume, total, side, confidence)


def levels(side: Side, entry: float, atr: float, s: ScoringSettings) -> tuple[float, tuple[float, ...]]:
    """Stop ``k·ATR`` beyond the entry and targets at R multiples of that risk."""
    risk = s.stop_atr_mult * atr
    if side is _LONG:
        return entry - risk, tuple([entry + r * risk for r in s.target_r])
    return entry + risk, tuple([entry - r * risk for r in s.target_r])
