"""Parity of the streaming indicators with batch computation, bar by bar, on real candles and random series.

TA-Lib is the reference for EMA, RSI, MACD, ATR, ADX/+DI/-DI and Bollinger; VWAP and the volume z-score are
checked against plain numpy written here.  Every output is compared on every bar: NaN exactly where the
reference is NaN (so each warm-up ends on the same bar as TA-Lib's lookback), equal within a relative 1e-9
(plus an absolute floor of 1e-12 × the price level for values that cross zero, like the MACD histogram).

Why not bit-for-bit: the TA-Lib C library in the pinned wheel is compiled with fused multiply-add, which
rounds ``(x - prev) * k + prev`` once instead of twice; CPython 3.11 has no ``math.fma``, so a streamed value
can differ from TA-Lib's in the last bits on some bars (measured: up to ~2e-13 relative on the MACD
signal/histogram; Bollinger uses another algorithm for the std and agrees within ~1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from talib._ta_lib import MA_Type

from tests.conftest import require_data
from ultra_signals.features.indicators import Adx, Atr, Bollinger, Ema, Macd, Rsi, VolumeZ, Vwap

Arr = NDArray[np.float64]
FILES = ["XRPUSDT-5m.csv", "ADABTC-5m.csv", "UNITTESTBTC-1m.csv"]
RTOL = 1e-9


def load(name: str) -> dict[str, Arr]:
    d = np.genfromtxt(require_data("klines", name), delimiter=",", skip_header=1, dtype=np.float64)
    assert d.ndim == 2 and d.shape[1] == 6 and len(d) > 1000
    t, o, h, lo, c, v = d.T
    return {"t": t, "o": o, "h": h, "l": lo, "c": c, "v": v}


def stream(ind: object, *cols: Arr) -> Arr:
    """Feed an indicator bar by bar; one row of outputs per bar."""
    update = ind.update  # type: ignore[attr-defined]
    rows = [update(*(float(col[i]) for col in cols)) for i in range(len(cols[0]))]
    return np.asarray(rows, dtype=np.float64)


def assert_parity(ours: Arr, ref: Arr, scale: float, first: int) -> None:
    """Same NaN pattern, first value on bar ``first``, and every value within tolerance."""
    assert ours.shape == ref.shape
    valid = ~np.isnan(ref)
    assert int(np.argmax(valid)) == first, "the reference's warm-up is not the documented one"
    assert valid[first:].all()
    np.testing.assert_array_equal(np.isnan(ours), ~valid)
    np.testing.assert_allclose(ours[valid], ref[valid], rtol=RTOL, atol=1e-12 * scale)


@pytest.fixture(params=FILES)
def candles(request: pytest.FixtureRequest) -> dict[str, Arr]:
    return load(request.param)


def test_ema(candles: dict[str, Arr]) -> None:
    c = candles["c"]
    for n in (20, 50, 200):
        ema = Ema(n)
        assert_parity(stream(ema, c), talib.EMA(c, n), float(np.median(c)), n - 1)
        assert ema.ready and ema.warmup == n


def test_rsi(candles: dict[str, Arr]) -> None:
    c = candles["c"]
    assert_parity(stream(Rsi(14), c), talib.RSI(c, 14), 100.0, 14)


def test_macd(candles: dict[str, Arr]) -> None:
    c = candles["c"]
    ours = stream(Macd(12, 26, 9), c)
    ref = talib.MACD(c, 12, 26, 9)
    for j in range(3):  # macd, signal, hist
        assert_parity(ours[:, j], ref[j], float(np.median(c)), 26 + 9 - 2)


def test_macd_fast_ema_starts_with_the_slow_one(candles: dict[str, Arr]) -> None:
    """TA-Lib's MACD is not EMA(12) - EMA(26): its fast EMA is seeded on closes 14..25, not 0..11."""
    c = candles["c"]
    m = talib.MACD(c, 12, 26, 9)[0]
    naive = talib.EMA(c, 12) - talib.EMA(c, 26)
    assert not np.allclose(m[33:60], naive[33:60], rtol=1e-6, atol=0)
    aligned = np.full_like(c, np.nan)
    aligned[25:] = talib.EMA(c[14:], 12)[11:]
    np.testing.assert_allclose(m[33:], (aligned - talib.EMA(c, 26))[33:], rtol=RTOL, atol=1e-12 * np.median(c))


def test_atr(candles: dict[str, Arr]) -> None:
    h, lo, c = candles["h"], candles["l"], candles["c"]
    assert_parity(stream(Atr(14), h, lo, c), talib.ATR(h, lo, c, 14), float(np.median(c)), 14)


def test_adx_and_directional_indicators(candles: dict[str, Arr]) -> None:
    h, lo, c = candles["h"], candles["l"], candles["c"]
    adx = Adx(14)
    ours = stream(adx, h, lo, c)
    assert_parity(ours[:, 0], talib.ADX(h, lo, c, 14), 100.0, 27)
    assert_parity(ours[:, 1], talib.PLUS_DI(h, lo, c, 14), 100.0, 14)
    assert_parity(ours[:, 2], talib.MINUS_DI(h, lo, c, 14), 100.0, 14)
    assert adx.ready and adx.di_ready and adx.warmup == 28


def test_bollinger(candles: dict[str, Arr]) -> None:
    c = candles["c"]
    ours = stream(Bollinger(20, 2.0), c)
    upper, mid, lower = talib.BBANDS(c, 20, 2.0, 2.0, MA_Type.SMA)
    scale = float(np.median(c))
    assert_parity(ours[:, 0], mid, scale, 19)
    assert_parity(ours[:, 1], upper, scale, 19)
    assert_parity(ours[:, 2], lower, scale, 19)
    # The band half-width is where precision matters (it is small next to the price): check it on its own.
    np.testing.assert_allclose((ours[:, 1] - ours[:, 0])[19:], (upper - mid)[19:], rtol=1e-7)


def numpy_vwap(t: Arr, h: Arr, lo: Arr, c: Arr, v: Arr, k: float) -> tuple[Arr, Arr, Arr]:
    """Straight from the definition: for each bar, the volume-weighted mean and std of typical price over
    the bars of its UTC day up to and including it (typical price itself while the day has no volume)."""
    tp = (h + lo + c) / 3.0
    day = t.astype(np.int64) // 86_400_000
    vw = np.empty_like(c)
    sd = np.empty_like(c)
    start = 0
    for i in range(len(c)):
        if day[i] != day[start]:
            start = i
        w = v[start : i + 1]
        x = tp[start : i + 1]
        if w.sum() > 0:
            vw[i] = np.sum(w * x) / np.sum(w)
            sd[i] = math.sqrt(np.sum(w * (x - vw[i]) ** 2) / np.sum(w))
        else:
            vw[i], sd[i] = tp[i], 0.0
    return vw, vw + k * sd, vw - k * sd


def test_vwap(candles: dict[str, Arr]) -> None:
    t, h, lo, c, v = candles["t"], candles["h"], candles["l"], candles["c"], candles["v"]
    ours = stream(Vwap(2.0), t.astype(np.int64), h, lo, c, v)
    ref = numpy_vwap(t, h, lo, c, v, 2.0)
    days = np.unique(t.astype(np.int64) // 86_400_000)
    assert len(days) >= 5  # the anchor really resets several times in this data
    for j in range(3):
        np.testing.assert_allclose(ours[:, j], ref[j], rtol=RTOL, atol=1e-12 * np.median(c))
    # At each day's first bar VWAP is that bar's typical price and the bands have no width.
    first = np.flatnonzero(np.diff(t.astype(np.int64) // 86_400_000)) + 1
    tp = (h + lo + c) / 3.0
    nonzero = v[first] > 0
    np.testing.assert_allclose(ours[first, 0], tp[first], rtol=1e-15)
    np.testing.assert_array_equal(ours[first[nonzero], 1], ours[first[nonzero], 0])


def test_vwap_resets_at_utc_midnight_and_survives_a_zero_volume_start() -> None:
    day = 86_400_000
    w = Vwap(1.0)
    # 23:55 and 00:00 bars: the second one starts a new anchor, with no volume yet.
    w.update(day - 300_000, 11.0, 9.0, 10.0, 5.0)
    assert w.update(day, 21.0, 19.0, 20.0, 0.0) == (20.0, 20.0, 20.0)
    vwap, upper, lower = w.update(day + 300_000, 31.0, 29.0, 30.0, 2.0)
    assert vwap == 30.0 and upper == lower == 30.0  # the zero-volume bar carries no weight
    vwap, upper, lower = w.update(day + 600_000, 41.0, 39.0, 40.0, 2.0)
    assert vwap == pytest.approx(35.0) and upper == pytest.approx(40.0) and lower == pytest.approx(30.0)


def numpy_volume_z(v: Arr, n: int) -> Arr:
    out = np.full_like(v, np.nan)
    for i in range(n - 1, len(v)):
        win = v[i - n + 1 : i + 1]
        sd = win.std()  # population std, ddof=0
        out[i] = 0.0 if sd == 0 else (v[i] - win.mean()) / sd
    return out


def test_volume_z(candles: dict[str, Arr]) -> None:
    v = candles["v"]
    ours = stream(VolumeZ(20), v)
    assert_parity(ours, numpy_volume_z(v, 20), 1.0, 19)


def test_volume_z_is_zero_on_a_constant_window_after_a_volatile_one() -> None:
    """Rolling updates leave rounding residue where the true std is 0; a z-score must not divide by it."""
    z = VolumeZ(20)
    rng = np.random.default_rng(5)
    for x in rng.lognormal(10.0, 2.0, 500):
        z.update(float(x))
    assert [z.update(1234.567) for _ in range(25)][-6:] == [0.0] * 6
    assert z.update(1234.567 * 2) > 4.0  # and it recovers at once on the next real move


def test_bollinger_constant_window_has_no_width() -> None:
    bb = Bollinger(20, 2.0)
    for x in np.linspace(0.1, 0.3, 100):
        bb.update(float(x))
    for _ in range(20):
        mid, upper, lower = bb.update(0.7)
    assert mid == upper == lower == 0.7


def test_flat_market_conventions_match_talib() -> None:
    """A market that has not moved: RSI 0.0 and DI/ADX 0.0, as TA-Lib reports (not NaN, not 50)."""
    c = np.full(60, 5.0)
    assert stream(Rsi(14), c)[-1] == talib.RSI(c, 14)[-1] == 0.0
    adx = stream(Adx(14), c, c, c)[-1]
    assert list(adx) == [0.0, 0.0, 0.0]
    assert talib.ADX(c, c, c, 14)[-1] == talib.PLUS_DI(c, c, c, 14)[-1] == 0.0


def test_invalid_parameters_name_the_problem() -> None:
    with pytest.raises(ValueError, match="EMA period"):
        Ema(1)
    with pytest.raises(ValueError, match="fast period"):
        Macd(26, 12, 9)
    with pytest.raises(ValueError, match="Bollinger width"):
        Bollinger(20, -1.0)
    with pytest.raises(ValueError, match="VWAP band width"):
        Vwap(float("nan"))


# --- property tests on random OHLCV ------------------------------------------------------------------------


@st.composite
def ohlc(draw: st.DrawFn) -> tuple[Arr, Arr, Arr, float]:
    """A random walk of bars at a random price level (1e-6 .. 60000), flat stretches included."""
    level = draw(st.sampled_from([1e-6, 3e-4, 0.5, 1.0, 150.0, 60000.0]))
    n = draw(st.integers(min_value=1, max_value=160))
    rets = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(-0.08, 0.08, allow_nan=False, allow_subnormal=False)),
            min_size=n,
            max_size=n,
        )
    )
    wicks = draw(st.lists(st.floats(0.0, 0.03, allow_subnormal=False), min_size=2 * n, max_size=2 * n))
    c = level * np.exp(np.cumsum(np.asarray(rets)))
    o = np.concatenate([[c[0]], c[:-1]])
    h = np.maximum(o, c) * (1.0 + np.asarray(wicks[:n]))
    lo = np.minimum(o, c) * (1.0 - np.asarray(wicks[n:]))
    return h, lo, c, level


def _close(ours: Arr, ref: Arr, atol: float) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=RTOL, atol=atol)


@settings(max_examples=200, deadline=None)
@given(bars=ohlc(), period=st.integers(min_value=2, max_value=30))
def test_property_ema_rsi_atr_match_talib(bars: tuple[Arr, Arr, Arr, float], period: int) -> None:
    h, lo, c, level = bars
    _close(stream(Ema(period), c), talib.EMA(c, period), 1e-12 * level)
    _close(stream(Rsi(period), c), talib.RSI(c, period), 1e-9)
    _close(stream(Atr(period), h, lo, c), talib.ATR(h, lo, c, period), 1e-12 * level)


@settings(max_examples=150, deadline=None)
@given(bars=ohlc(), period=st.integers(min_value=2, max_value=20))
def test_property_adx_macd_bbands_match_talib(bars: tuple[Arr, Arr, Arr, float], period: int) -> None:
    h, lo, c, level = bars
    ours = stream(Adx(period), h, lo, c)
    _close(ours[:, 0], talib.ADX(h, lo, c, period), 1e-9)
    _close(ours[:, 1], talib.PLUS_DI(h, lo, c, period), 1e-9)
    _close(ours[:, 2], talib.MINUS_DI(h, lo, c, period), 1e-9)
    fast, slow, sig = period, period + 7, max(2, period // 2)
    m = stream(Macd(fast, slow, sig), c)
    for j, ref in enumerate(talib.MACD(c, fast, slow, sig)):
        _close(m[:, j], ref, 1e-12 * level)
    b = stream(Bollinger(period, 2.0), c)
    upper, mid, lower = talib.BBANDS(c, period, 2.0, 2.0, MA_Type.SMA)
    for j, ref in enumerate((mid, upper, lower)):
        _close(b[:, j], ref, 1e-12 * level)
