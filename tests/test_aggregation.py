"""Higher-timeframe bars from base bars: exact OHLCV, Binance alignment, gaps kept, chain = direct."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.features.aggregation import (
    BarAggregator,
    aggregate_series,
    window_start,
)

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of every timeframe up to 1d


def bar(
    i: int, o: float, h: float, lo: float, c: float, v: float, taker: float | None = None, trades: int | None = None
) -> Kline:
    ot = T0 + i * M
    return Kline("BTCUSDT", "1m", ot, ot + M - 1, o, h, lo, c, v, True, taker, trades)


@st.composite
def minute_series(draw: st.DrawFn, dyadic: bool = True) -> list[Kline]:
    """1m bars with random gaps; prices and volumes on a 1/4 grid when ``dyadic`` (so sums are exact)."""
    offset = draw(st.integers(0, 200))
    present = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=250)))
    value = st.integers(1, 4000).map(lambda x: x / 4) if dyadic else st.floats(0.001, 1e6)
    out = []
    for i in present:
        o, c, a, b = (draw(value) for _ in range(4))
        out.append(bar(offset + i, o, max(o, c, a), min(o, c, b), c, draw(value)))
    return out


def brute_force(bars: list[Kline], tf: str) -> dict[int, tuple[float, float, float, float, float]]:
    """Reference: group by window, in the most obvious way."""
    groups: dict[int, list[Kline]] = defaultdict(list)
    for k in bars:
        groups[window_start(k.open_time, tf_ms(tf))].append(k)
    return {
        ws: (g[0].open, max(k.high for k in g), min(k.low for k in g), g[-1].close, sum(k.volume for k in g))
        for ws, g in groups.items()
    }


def feed(agg: BarAggregator, bars: list[Kline], flush: bool = True) -> list[Kline]:
    out = [k for b in bars for k in agg.add(b)]
    return out + (agg.flush() if flush else [])


@settings(max_examples=150, deadline=None)
@given(minute_series())
def test_chained_1m_5m_15m_equals_direct_1m_15m(bars: list[Kline]) -> None:
    direct = feed(BarAggregator("BTCUSDT", "1m", ["15m"]), bars)
    to5 = BarAggregator("BTCUSDT", "1m", ["5m"])
    to15 = BarAggregator("BTCUSDT", "5m", ["15m"])
    chained = feed(to15, feed(to5, bars))
    assert chained == direct


@settings(max_examples=150, deadline=None)
@given(minute_series())
def test_ohlcv_exact_and_gaps_stay_gaps(bars: list[Kline]) -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m", "15m", "1h"])
    out = feed(agg, bars)
    for tf in ("5m", "15m", "1h"):
        got = {k.open_time: k for k in out if k.timeframe == tf}
        want = brute_force(bars, tf)
        assert set(got) == set(want)  # one bar per window that has base bars, none for empty windows
        for ws, (o, h, lo, c, v) in want.items():
            k = got[ws]
            assert (k.open, k.high, k.low, k.close, k.volume) == (o, h, lo, c, v)
            assert k.close_time == ws + tf_ms(tf) - 1 and k.closed


@settings(max_examples=100, deadline=None)
@given(minute_series(dyadic=False))
def test_arbitrary_floats_volume_sum_in_arrival_order(bars: list[Kline]) -> None:
    out = feed(BarAggregator("BTCUSDT", "1m", ["15m"]), bars)
    want = brute_force(bars, "15m")
    for k in out:
        assert k.volume == want[k.open_time][4]  # sum() adds left to right, as the aggregator does
        assert (k.high, k.low) == want[k.open_time][1:3]


@settings(max_examples=150, deadline=None)
@given(minute_series(dyadic=False), st.booleans())
def test_batch_form_is_bit_identical_to_streaming(bars: list[Kline], extras: bool) -> None:
    if extras:  # Binance dumps carry taker-buy volume and trade counts; drop them on some bars
        bars = [replace(k, taker_buy_volume=k.volume / 3, trades=7) if i % 5 else k for i, k in enumerate(bars)]
    tfs = ["5m", "15m", "1h", "4h"]
    streaming = feed(BarAggregator("BTCUSDT", "1m", tfs), bars, flush=False)
    assert aggregate_series(bars, "1m", tfs) == streaming


def test_emitted_when_last_base_bar_arrives_coarsest_first() -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m", "15m", "1h"])
    got = [agg.add(bar(i, 1, 2, 0.5, 1.5, 1)) for i in range(60)]
    assert [k.timeframe for k in got[4]] == ["5m"]
    assert [k.timeframe for k in got[14]] == ["15m", "5m"]
    assert [k.timeframe for k in got[59]] == ["1h", "15m", "5m"]
    assert sum(1 for g in got if g) == 12
    h = got[59][0]
    assert (h.open_time, h.close_time, h.volume) == (T0, T0 + 3_600_000 - 1, 60.0)
    assert agg.pending() == []


def test_window_with_missing_last_bar_is_emitted_by_a_later_bar() -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m", "15m"])
    for i in range(3):  # 00:00-00:02, then nothing until 00:20
        assert agg.add(bar(i, 1, 2, 0.5, 1.5, 1)) == []
    assert [(k.timeframe, k.open_time) for k in agg.pending()] == [("5m", T0), ("15m", T0)]
    out = agg.add(bar(20, 1, 3, 0.5, 2.5, 2))
    # Both windows are over; ordered by close time, coarsest first on a tie; the 00:20 window stays open.
    assert [(k.timeframe, k.open_time, k.volume) for k in out] == [("5m", T0, 3.0), ("15m", T0, 3.0)]
    assert [(k.timeframe, k.open_time) for k in agg.pending()] == [("5m", T0 + 20 * M), ("15m", T0 + 15 * M)]


def test_duplicates_and_late_bars_ignored_and_counted() -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m"])
    agg.add(bar(3, 1, 2, 0.5, 1.5, 1))
    assert agg.add(bar(3, 9, 9, 9, 9, 9)) == []
    assert agg.add(bar(1, 9, 9, 9, 9, 9)) == []
    assert agg.ignored == 2
    (k,) = agg.add(bar(4, 1, 2, 0.5, 1.25, 1))
    assert (k.open, k.high, k.close, k.volume) == (1, 2, 1.25, 2)


def test_optional_fields_summed_only_when_every_bar_has_them() -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m"])
    full = [agg.add(bar(i, 1, 2, 0.5, 1.5, 1, 0.25, 3)) for i in range(5)][-1][0]
    assert (full.taker_buy_volume, full.trades) == (1.25, 15)
    part = [agg.add(bar(5 + i, 1, 2, 0.5, 1.5, 1, 0.25 if i else None, 3)) for i in range(5)]
    assert (part[-1][0].taker_buy_volume, part[-1][0].trades) == (None, 15)


def test_weekly_windows_open_on_monday() -> None:
    day = 86_400_000
    monday = 1_767_571_200_000  # 2026-01-05T00:00:00Z
    agg = BarAggregator("BTCUSDT", "1d", ["1w"])
    out = []
    for d in range(-3, 8):  # Friday 2026-01-02 .. Monday 2026-01-12
        ot = monday + d * day
        out += agg.add(Kline("BTCUSDT", "1d", ot, ot + day - 1, 1, 2, 0.5, 1.5, 1))
    assert [(k.open_time, k.volume) for k in out] == [(monday - 7 * day, 3.0), (monday, 7.0)]
    assert window_start(monday + 3 * day, 7 * day) == monday


@pytest.mark.parametrize(
    ("base", "targets", "match"),
    [
        ("5m", ["1m"], "larger multiple"),
        ("5m", ["5m"], "larger multiple"),
        ("5m", ["7m"], "larger multiple"),
        ("7h", ["1w"], "Monday"),
    ],
)
def test_impossible_targets_are_refused(base: str, targets: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BarAggregator("BTCUSDT", base, targets)


def test_bar_of_another_series_or_misaligned_is_refused() -> None:
    agg = BarAggregator("BTCUSDT", "1m", ["5m"])
    with pytest.raises(ValueError, match="ETHUSDT"):
        agg.add(Kline("ETHUSDT", "1m", T0, T0 + M - 1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="not aligned"):
        agg.add(Kline("BTCUSDT", "1m", T0 + 5, T0 + M + 4, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="increasing"):
        aggregate_series([bar(2, 1, 1, 1, 1, 1), bar(1, 1, 1, 1, 1, 1)], "1m", ["5m"])
