"""FeatureStore: bounded buffers, duplicate and late bars, the warm flag, per-series state, bad bars."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import talib
from talib._ta_lib import MA_Type

from tests.conftest import require_data
from ultra_signals.core.config import FeatureSettings
from ultra_signals.core.events import Kline
from ultra_signals.features.store import Features, FeatureStore, warmup_bars_needed

FIVE_MIN = 300_000
INDICATOR_FIELDS = [
    f.name for f in dataclasses.fields(Features) if f.name not in {"symbol", "timeframe", "bars", "warm"}
]


def read_bars(name: str, symbol: str | None = None, timeframe: str = "5m") -> list[Kline]:
    sym = symbol or name.split("-")[0]
    step = {"1m": 60_000, "5m": FIVE_MIN, "1h": 3_600_000}[timeframe]
    with require_data("klines", name).open() as fh:
        return [
            Kline(
                sym,
                timeframe,
                int(r["open_time"]),
                int(r["open_time"]) + step - 1,
                float(r["open"]),
                float(r["high"]),
                float(r["low"]),
                float(r["close"]),
                float(r["volume"]),
            )
            for r in csv.DictReader(fh)
        ]


def same(a: Features, b: Features) -> bool:
    """Field-by-field equality where NaN equals NaN (dataclass == would say NaN != NaN)."""
    for f in dataclasses.fields(Features):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


def test_features_track_talib_end_to_end() -> None:
    """Each Features field is wired to the right indicator and parameter (checked against TA-Lib)."""
    bars = read_bars("XRPUSDT-5m.csv")
    store = FeatureStore(FeatureSettings(), ["5m"])
    out = [store.update(k) for k in bars]
    c = np.array([k.close for k in bars])
    h = np.array([k.high for k in bars])
    lo = np.array([k.low for k in bars])
    macd, sig, hist = talib.MACD(c, 12, 26, 9)
    upper, mid, lower = talib.BBANDS(c, 20, 2.0, 2.0, MA_Type.SMA)
    expected = {
        "ema_fast": talib.EMA(c, 20),
        "ema_mid": talib.EMA(c, 50),
        "ema_slow": talib.EMA(c, 200),
        "rsi": talib.RSI(c, 14),
        "macd": macd,
        "macd_signal": sig,
        "macd_hist": hist,
        "atr": talib.ATR(h, lo, c, 14),
        "adx": talib.ADX(h, lo, c, 14),
        "plus_di": talib.PLUS_DI(h, lo, c, 14),
        "minus_di": talib.MINUS_DI(h, lo, c, 14),
        "bb_mid": mid,
        "bb_upper": upper,
        "bb_lower": lower,
    }
    for name, ref in expected.items():
        ours = np.array([getattr(f, name) for f in out])
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)
    assert [f.close for f in out] == c.tolist()
    assert [f.bars for f in out] == list(range(1, len(bars) + 1))
    assert all(f.vwap_lower <= f.vwap <= f.vwap_upper for f in out)
    assert all(not math.isnan(f.volume_z) for f in out[19:])


def test_buffer_is_bounded_and_keeps_the_latest_bars() -> None:
    bars = read_bars("XRPUSDT-5m.csv")[:130]
    store = FeatureStore(FeatureSettings(buffer_bars=50), ["5m"])
    for k in bars:
        store.update(k)
    kept = store.bars("XRPUSDT", "5m")
    assert len(kept) == 50
    assert list(kept) == bars[-50:]
    assert store.latest("XRPUSDT", "5m") is not None
    assert store.latest("XRPUSDT", "5m").bars == 130  # type: ignore[union-attr]


def test_duplicate_and_older_bars_are_ignored() -> None:
    bars = read_bars("XRPUSDT-5m.csv")[:300]
    clean = FeatureStore(FeatureSettings(), ["5m"])
    noisy = FeatureStore(FeatureSettings(), ["5m"])
    for i, k in enumerate(bars):
        expect = clean.update(k)
        got = noisy.update(k)
        assert same(got, expect)
        if i >= 3:
            latest = noisy.latest(k.symbol, k.timeframe)
            dup = dataclasses.replace(k, close=k.close * 1.5, high=k.high * 1.5)  # a re-sent bar, other values
            late = bars[i - 3]
            assert noisy.update(dup) is latest
            assert noisy.update(late) is latest
    assert len(noisy.bars("XRPUSDT", "5m")) == len(clean.bars("XRPUSDT", "5m"))
    assert same(noisy.latest("XRPUSDT", "5m"), clean.latest("XRPUSDT", "5m"))  # type: ignore[arg-type]


def test_warm_flips_on_the_bar_every_indicator_is_ready() -> None:
    bars = read_bars("ADABTC-5m.csv")[:260]
    for settings, expected in (
        (FeatureSettings(), 200),
        (FeatureSettings(ema_slow=30, ema_mid=25), 26 + 9 - 1),  # MACD is the slowest then
        (FeatureSettings(ema_slow=30, ema_mid=25, adx_period=20), 40),  # ADX needs 2n
    ):
        need = warmup_bars_needed(settings)
        assert need == expected
        store = FeatureStore(settings, ["5m"])
        feats = [store.update(k) for k in bars]
        assert [f.warm for f in feats] == [i + 1 >= need for i in range(len(bars))]
        for f in feats:
            values = [getattr(f, name) for name in INDICATOR_FIELDS]
            assert f.warm == (not any(math.isnan(v) for v in values))


def test_state_is_separate_per_symbol_and_timeframe() -> None:
    xrp = read_bars("XRPUSDT-5m.csv")[:400]
    ada = read_bars("ADABTC-5m.csv")[:400]
    xrp_h = read_bars("XRPUSDT-1h.csv", timeframe="1h")
    series = {"xrp5": xrp, "ada5": ada, "xrp1h": xrp_h}
    mixed = FeatureStore(FeatureSettings(), ["5m", "1h"])
    merged = sorted(
        [k for s in series.values() for k in s],
        key=lambda k: (k.close_time, k.symbol, k.timeframe),
    )
    for k in merged:
        mixed.update(k)
    for bars in series.values():
        alone = FeatureStore(FeatureSettings(), ["5m", "1h"])
        for k in bars:
            alone.update(k)
        sym, tf = bars[0].symbol, bars[0].timeframe
        assert same(mixed.latest(sym, tf), alone.latest(sym, tf))  # type: ignore[arg-type]
        assert list(mixed.bars(sym, tf)) == list(alone.bars(sym, tf))
    assert set(mixed.series()) == {("XRPUSDT", "5m"), ("ADABTC", "5m"), ("XRPUSDT", "1h")}
    # A series never seen, or a timeframe not configured, has no features rather than an error.
    assert mixed.latest("BTCUSDT", "5m") is None
    assert mixed.latest("XRPUSDT", "4h") is None
    assert list(mixed.bars("BTCUSDT", "5m")) == []


def test_as_dict_holds_the_numbers_only() -> None:
    store = FeatureStore(FeatureSettings(), ["5m"])
    f = None
    for k in read_bars("XRPUSDT-5m.csv")[:250]:
        f = store.update(k)
    assert f is not None and f.warm
    d = f.as_dict()
    assert set(d) == set(INDICATOR_FIELDS) | {"bars"}
    assert "symbol" not in d and "warm" not in d
    for name, value in d.items():
        assert value == getattr(f, name)
    # The same keys, order and values as the plain definition it replaces (numbers out of dataclasses.asdict).
    plain = {k: v for k, v in dataclasses.asdict(f).items() if isinstance(v, float | int) and not isinstance(v, bool)}
    assert list(d.items()) == list(plain.items())
    assert d["bars"] == 250 and d["open_time"] == f.open_time and isinstance(d["open_time"], int)


def test_bad_bars_raise_and_change_nothing() -> None:
    bars = read_bars("XRPUSDT-5m.csv")[:60]
    clean = FeatureStore(FeatureSettings(), ["5m"])
    store = FeatureStore(FeatureSettings(), ["5m"])
    for k in bars[:-1]:
        clean.update(k)
        store.update(k)
    nxt = bars[-1]
    bad = [
        (dataclasses.replace(nxt, close=math.nan), "non-finite"),
        (dataclasses.replace(nxt, high=math.inf), "non-finite"),
        (dataclasses.replace(nxt, volume=-1.0), "negative volume"),
        (dataclasses.replace(nxt, closed=False), "not closed"),
    ]
    before = store.latest("XRPUSDT", "5m")
    for k, why in bad:
        with pytest.raises(ValueError, match=why) as e:
            store.update(k)
        assert "XRPUSDT" in str(e.value)
        assert store.latest("XRPUSDT", "5m") is before
    assert len(store.bars("XRPUSDT", "5m")) == len(bars) - 1
    assert same(store.update(nxt), clean.update(nxt))
    with pytest.raises(ValueError, match="'3m' is not configured"):
        store.update(dataclasses.replace(nxt, timeframe="3m"))


def test_invalid_settings_are_refused_by_the_model_with_the_store_agreeing() -> None:
    # One place holds the limits (FeatureSettings); the store trusts a validated settings object.
    with pytest.raises(ValueError, match=r"macd_fast \(26\) must be below macd_slow \(12\)"):
        FeatureSettings(macd_fast=26, macd_slow=12)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        FeatureSettings(rsi_period=1)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        FeatureSettings(macd_signal=1)
    with pytest.raises(ValueError, match="greater than 0"):
        FeatureSettings(bb_std=0.0)
    with pytest.raises(ValueError, match="finite number"):
        FeatureSettings(bb_std=float("inf"))
    # Every value the model accepts at its bounds builds a store (no second, contradicting check downstream).
    edge = FeatureSettings(ema_fast=2, ema_mid=2, ema_slow=2, rsi_period=2, macd_fast=2, macd_slow=3, macd_signal=2)
    assert FeatureStore(edge, ["5m"]).latest("BTCUSDT", "5m") is None
    with pytest.raises(ValueError, match="unknown timeframe"):
        FeatureStore(FeatureSettings(), ["5x"])


def test_check_refuses_what_update_refuses_and_changes_nothing() -> None:
    """``check`` (for bars whose features no one reads) refuses exactly what ``update`` refuses, same message."""
    bars = read_bars("XRPUSDT-5m.csv")[:3]
    store = FeatureStore(FeatureSettings(), ["5m"])
    nxt = bars[0]
    for k in (
        dataclasses.replace(nxt, close=math.nan),
        dataclasses.replace(nxt, high=math.inf),
        dataclasses.replace(nxt, volume=-1.0),
        dataclasses.replace(nxt, closed=False),
        dataclasses.replace(nxt, timeframe="3m"),
    ):
        with pytest.raises(ValueError) as by_update:
            FeatureStore(FeatureSettings(), ["5m"]).update(k)
        with pytest.raises(ValueError) as by_check:
            store.check(k)
        assert str(by_check.value) == str(by_update.value)
    for k in bars:
        store.check(k)  # good bars pass
    assert store.series() == [] and store.latest("XRPUSDT", "5m") is None
