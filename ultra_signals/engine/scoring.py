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


def _clip(x: float) -> float:
    return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x


def score(f: Features, s: ScoringSettings) -> Score:
    atr = f.atr if f.atr > 0 else max(abs(f.close) * 1e-6, 1e-12)
    # Trend: fast vs mid EMA, and price vs the slow EMA, both in ATRs.
    trend = 0.6 * math.tanh((f.ema_fast - f.ema_mid) / atr) + 0.4 * math.tanh((f.close - f.ema_slow) / (2.0 * atr))
    # Momentum: RSI distance from 50 and the MACD histogram relative to ATR.
    momentum = 0.5 * _clip((f.rsi - 50.0) / 20.0) + 0.5 * math.tanh(f.macd_hist / (0.1 * atr))
    # Volatility regime: where the close sits in its Bollinger band (a push towards a band edge is directional).
    half_band = f.bb_upper - f.bb_mid
    volatility = math.tanh((f.close - f.bb_mid) / half_band) if half_band > 0 else 0.0
    # Volume flow: close relative to VWAP (in band units), confirmed by unusual volume on the bar's direction.
    vband = f.vwap_upper - f.vwap
    vw = math.tanh((f.close - f.vwap) / vband) if vband > 0 else 0.0
    vz = math.tanh(max(f.volume_z, 0.0) / 2.0)
    direction = 1.0 if f.macd_hist > 0 else -1.0 if f.macd_hist < 0 else 0.0
    volume = 0.6 * vw + 0.4 * vz * direction
    wsum = s.weight_trend + s.weight_momentum + s.weight_volatility + s.weight_volume
    total = (
        s.weight_trend * trend
        + s.weight_momentum * momentum
        + s.weight_volatility * volatility
        + s.weight_volume * volume
    ) / wsum
    total = _clip(total)
    side = Side.LONG if total >= s.entry_threshold else Side.SHORT if total <= -s.entry_threshold else None
    confidence = 0.0
    if side is not None:
        sign = 1.0 if side is Side.LONG else -1.0
        agree = (
            s.weight_trend * (trend * sign > 0)
            + s.weight_momentum * (momentum * sign > 0)
            + s.weight_volatility * (volatility * sign > 0)
            + s.weight_volume * (volume * sign > 0)
        ) / wsum
        # Strength of the score and how many components agree with it, equally weighted.
        confidence = max(0.0, min(1.0, 0.5 * min(1.0, abs(total) / 0.6) + 0.5 * agree))
    return Score(trend, momentum, volatility, volume, total, side, confidence)


def levels(side: Side, entry: float, atr: float, s: ScoringSettings) -> tuple[float, tuple[float, ...]]:
    """Stop ``k·ATR`` beyond the entry and targets at R multiples of that risk."""
    risk = s.stop_atr_mult * atr
    if side is Side.LONG:
        return entry - risk, tuple(entry + r * risk for r in s.target_r)
    return entry + risk, tuple(entry - r * risk for r in s.target_r)
