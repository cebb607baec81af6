"""Small builders of real domain values for tests (no mocks: these are the types the engine consumes), and the
replay settings and paper broker the executor tests build them into."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.execution.brokers.paper import PaperBroker
from ultra_signals.features.store import Features

T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
MIN = 60_000


def features(**kw: Any) -> Features:
    """A warm 5m bar in a clean uptrend unless told otherwise."""
    base = Features(
        symbol="BTCUSDT",
        timeframe="5m",
        open_time=T0,
        close_time=T0 + 299_999,
        close=60_600.0,
        volume=120.0,
        bars=400,
        warm=True,
        ema_fast=60_400.0,
        ema_mid=60_100.0,
        ema_slow=59_500.0,
        rsi=66.0,
        macd=80.0,
        macd_signal=50.0,
        macd_hist=30.0,
        atr=120.0,
        adx=28.0,
        plus_di=30.0,
        minus_di=12.0,
        bb_mid=60_300.0,
        bb_upper=60_700.0,
        bb_lower=59_900.0,
        vwap=60_200.0,
        vwap_upper=60_600.0,
        vwap_lower=59_800.0,
        volume_z=1.5,
    )
    return replace(base, **kw)


def mirror(f: Features) -> Features:
    """The same bar reflected around its close: a clean downtrend."""
    c = f.close

    def m(x: float) -> float:
        return 2 * c - x

    return replace(
        f,
        ema_fast=m(f.ema_fast),
        ema_mid=m(f.ema_mid),
        ema_slow=m(f.ema_slow),
        rsi=100 - f.rsi,
        macd=-f.macd,
        macd_signal=-f.macd_signal,
        macd_hist=-f.macd_hist,
        plus_di=f.minus_di,
        minus_di=f.plus_di,
        bb_mid=m(f.bb_mid),
        bb_upper=m(f.bb_lower),
        bb_lower=m(f.bb_upper),
        vwap=m(f.vwap),
        vwap_upper=m(f.vwap_lower),
        vwap_lower=m(f.vwap_upper),
    )


def candidate(
    symbol: str = "BTCUSDT", side: Side = Side.LONG, open_time: int = T0, tf: str = "5m", **kw: Any
) -> Candidate:
    args: dict[str, Any] = {
        "symbol": symbol,
        "timeframe": tf,
        "bar_open_time": open_time,
        "ts": open_time + 300_000,
        "side": side,
        "score": 0.6 if side is Side.LONG else -0.6,
        "confidence": 0.8,
        "entry": 100.0,
        "stop": 98.0 if side is Side.LONG else 102.0,
        "targets": (102.0, 104.0),
    }
    args.update(kw)
    return Candidate(**args)


def bar_decision(run_id: str, n: int, symbol: str = "BTCUSDT", side: Side = Side.LONG, price: float = 60_000.0,
                 risk: float = 300.0, targets: tuple[float, ...] | None = None) -> Decision:  # fmt: skip
    """An allowed decision on the n-th 5m bar after T0: entry at ``price``, the stop ``risk`` away, and targets one
    and two risks away unless told (the executor tests and the execution goldens all trade on these)."""
    sign = 1.0 if side is Side.LONG else -1.0
    c = Candidate(
        symbol=symbol,
        timeframe="5m",
        bar_open_time=T0 + n * 5 * MIN,
        ts=T0 + (n + 1) * 5 * MIN,
        side=side,
        score=0.6 * sign,
        confidence=0.8,
        entry=price,
        stop=price - sign * risk,
        targets=targets if targets is not None else (price + sign * risk, price + sign * 2 * risk),
    )
    return Decision(run_id, c, True, None)


def replay_settings(db: Path, profile: str = "canary", **over: Any) -> Settings:
    """A profile's settings for an executor on replayed data (so the paper broker, whatever ``execution.broker``
    says), journaling to SQLite at ``db``, with no simulated order latency; ``over`` are dotted overrides on top."""
    return load_settings(
        profile,
        overrides={"runtime.source": "replay", "journal.url": f"sqlite:///{db}", "execution.latency_ms": 0, **over},
        environ={},
    )


def paper_broker(settings: Settings) -> PaperBroker:
    """The paper broker with the settings' fees, slippage and latency (what ``make_executor`` gives a replay)."""
    return PaperBroker.from_settings(settings)
