"""The simulator: reproducible from its seed, internally consistent bars and ticks, realistic statistics."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ultra_signals.core.config import SimSettings
from ultra_signals.core.events import BookTicker, Funding, Kline, MarketEvent, Trade, event_time
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.features.aggregation import BarAggregator
from ultra_signals.sources.base import MarketSource, SourceError
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.sources.sim import MarketModel, SimSource, export_candles, parse_start

SYMS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
TFS = ["1m", "5m", "15m", "1h"]
M = 60_000


def sim(duration: int = 120, warmup: int = 20, tfs: list[str] = TFS, **over: Any) -> SimSource:
    return SimSource(SimSettings(**over), SYMS, tfs, duration, warmup)


def closes(src: SimSource) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = defaultdict(list)
    for ev in src.iter_events():
        if isinstance(ev, Kline) and ev.timeframe == "1m":
            out[ev.symbol].append(ev.close)
    return {s: np.array(v) for s, v in out.items()}


@pytest.fixture(scope="module")
def run_events() -> tuple[SimSource, list[MarketEvent]]:
    src = sim()
    return src, list(src.iter_events())


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = list(sim().iter_events())
    assert a == list(sim().iter_events())
    assert a != list(sim(seed=43).iter_events())


def test_bars_do_not_depend_on_run_length_or_tick_count() -> None:
    def bars(src: SimSource) -> list[Kline]:
        return [k for k in src.iter_events() if isinstance(k, Kline)]

    short, long_ = bars(sim(60)), bars(sim(2000))
    assert long_[: len(short)] == short
    assert bars(sim(120, ticks_per_bar=0)) == bars(sim(120, ticks_per_bar=9))


def test_labelled_simulated_and_run_window(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    src, evs = run_events
    source: MarketSource = src  # satisfies the protocol (checked by mypy)
    assert (source.info.name, source.info.simulated, source.info.historical) == ("sim", True, True)
    assert source.info.timeframes == TFS and source.info.symbols == SYMS
    assert source.run_start_ms == parse_start("2026-01-05T00:00:00Z") == 1_767_571_200_000
    assert source.run_end_ms == source.run_start_ms + 120 * M
    assert max(event_time(e) for e in evs) == source.run_end_ms


def test_event_order_and_coarsest_first(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    _, evs = run_events
    times = [event_time(e) for e in evs]
    assert times == sorted(times)
    bars = [e for e in evs if isinstance(e, Kline)]
    keys = [(event_time(k), -tf_ms(k.timeframe), SYMS.index(k.symbol)) for k in bars]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # At each instant: all bars before the funding of that instant.
    for i, e in enumerate(evs[:-1]):
        if isinstance(e, Funding):
            assert not any(isinstance(x, Kline) and event_time(x) == e.ts for x in evs[i + 1 :][:20])


def test_warmup_precedes_the_run(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    src, evs = run_events
    start = src.run_start_ms
    bars = [e for e in evs if isinstance(e, Kline)]
    warm = Counter((k.symbol, k.timeframe) for k in bars if k.close_time < start)
    run = Counter((k.symbol, k.timeframe) for k in bars if k.close_time >= start)
    for s in SYMS:  # 20 coarsest (1h) bars of history, and the finer bars of the same span
        assert (warm[(s, "1h")], warm[(s, "15m")], warm[(s, "5m")], warm[(s, "1m")]) == (20, 80, 240, 1200)
        assert (run[(s, "1h")], run[(s, "15m")], run[(s, "5m")], run[(s, "1m")]) == (2, 8, 24, 120)
    first_run = next(i for i, e in enumerate(evs) if event_time(e) > start)
    assert all(not isinstance(e, Kline) or e.close_time >= start for e in evs[first_run:])
    # Ticks only inside the run window.
    ticks = [e for e in evs if isinstance(e, Trade | BookTicker)]
    assert ticks and min(e.ts for e in ticks) > start
    assert len([e for e in ticks if isinstance(e, Trade)]) == 120 * len(SYMS) * 4


def test_ohlc_invariants_and_exact_aggregation(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    _, evs = run_events
    bars = [e for e in evs if isinstance(e, Kline)]
    for k in bars:
        assert k.low <= min(k.open, k.close) <= max(k.open, k.close) <= k.high
        assert k.low > 0 and k.volume > 0 and k.taker_buy_volume is not None
        assert 0 <= k.taker_buy_volume <= k.volume and k.trades is not None and k.trades >= 1
        assert k.close_time == k.open_time + tf_ms(k.timeframe) - 1 and k.open_time % tf_ms(k.timeframe) == 0
    ones: dict[tuple[str, int], Kline] = {(k.symbol, k.open_time): k for k in bars if k.timeframe == "1m"}
    for k in bars:
        if k.timeframe == "1m":
            continue
        parts = [ones[(k.symbol, k.open_time + i * M)] for i in range(tf_ms(k.timeframe) // M)]
        assert (k.open, k.high, k.low, k.close) == (
            parts[0].open,
            max(p.high for p in parts),
            min(p.low for p in parts),
            parts[-1].close,
        )
        vol = parts[0].volume
        for p in parts[1:]:
            vol += p.volume
        assert k.volume == vol and k.trades == sum(p.trades or 0 for p in parts)
    # Open is the previous close: a continuous market.
    for s in SYMS:
        seq = sorted((k for k in bars if k.symbol == s and k.timeframe == "1m"), key=lambda k: k.open_time)
        assert all(b.open == a.close for a, b in itertools.pairwise(seq))


def test_multi_day_bars_match_the_streaming_aggregator() -> None:
    """Chunks are a day long; windows that cross a chunk boundary (7m, 25m) come out exact all the same."""
    tfs = ["1m", "7m", "25m", "1h", "4h"]
    settings = SimSettings(ticks_per_bar=0, start="2026-01-05T20:00:00Z")
    bars = [k for k in SimSource(settings, SYMS, tfs, 3 * 1440, 1).iter_events() if isinstance(k, Kline)]
    for sym in SYMS:
        agg = BarAggregator(sym, "1m", tfs[1:])
        want = [h for k in bars if k.symbol == sym and k.timeframe == "1m" for h in agg.add(k)]
        got = [k for k in bars if k.symbol == sym and k.timeframe != "1m"]
        assert got == sorted(want, key=lambda k: (k.close_time, k.open_time)) and len(got) > 3 * 24 * 60 // 7
    without_1m = SimSource(settings, SYMS, tfs[1:], 3 * 1440, 1)
    assert [k for k in without_1m.iter_events() if isinstance(k, Kline)] == [k for k in bars if k.timeframe != "1m"]


def test_trades_rebuild_their_bar_and_trade_at_the_touch(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    _, evs = run_events
    ones = {(e.symbol, e.open_time): e for e in evs if isinstance(e, Kline) and e.timeframe == "1m"}
    trades: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    book: dict[tuple[str, int], BookTicker] = {}
    for e in evs:
        if isinstance(e, Trade):
            trades[(e.symbol, e.ts - e.ts % M)].append(e)
        elif isinstance(e, BookTicker):
            book[(e.symbol, e.ts)] = e
    assert trades
    spreads = []
    for key, ts in trades.items():
        k = ones[key]
        prices = [t.price for t in ts]
        assert (prices[0], max(prices), min(prices), prices[-1]) == (k.open, k.high, k.low, k.close)
        assert all(k.open_time < t.ts <= k.close_time for t in ts)
        for t in ts:
            b = book[(t.symbol, t.ts)]
            assert b.bid < b.ask and t.price == (b.bid if t.buyer_is_maker else b.ask)
            spreads.append(b.spread_bps)
    assert 0.3 < float(np.median(spreads)) < 10.0  # a few bps


def test_depth_once_a_minute_from_the_touch(run_events: tuple[SimSource, list[MarketEvent]]) -> None:
    """Spread and depth filters have data on the simulator: one depth summary per symbol and minute of the run."""
    from ultra_signals.core.events import BookDepth

    _, evs = run_events
    depth = [e for e in evs if isinstance(e, BookDepth)]
    minutes = {(e.symbol, e.ts - e.ts % M) for e in evs if isinstance(e, Trade)}
    assert minutes and {(d.symbol, d.ts - d.ts % M) for d in depth} == minutes and len(depth) == len(minutes)
    book = {(e.symbol, e.ts): e for e in evs if isinstance(e, BookTicker)}
    for d in depth:
        b = book[(d.symbol, d.ts)]
        assert d.bid_depth_usdt == pytest.approx(20 * b.bid_qty * b.bid) and d.ask_depth_usdt > 0
        assert -1.0 <= d.imbalance <= 1.0


def test_funding_every_8h_on_the_utc_clock() -> None:
    src = sim(duration=24 * 60, warmup=0, tfs=["1h"], ticks_per_bar=0)
    funding = [e for e in src.iter_events() if isinstance(e, Funding)]
    assert [e.ts for e in funding[:: len(SYMS)]] == [src.run_start_ms + h * 3_600_000 for h in (8, 16, 24)]
    assert all(e.next_funding_time == e.ts + 8 * 3_600_000 and abs(e.funding_rate) <= 0.003 for e in funding)
    assert all(e.ts % (8 * 3_600_000) == 0 for e in funding)


@pytest.mark.parametrize("corr", [0.3, 0.7, 0.9])
def test_return_correlation_follows_the_setting(corr: float) -> None:
    c = closes(sim(duration=5 * 1440, warmup=0, tfs=["1m"], ticks_per_bar=0, correlation=corr))
    r = {s: np.diff(np.log(v)) for s, v in c.items()}
    measured = float(np.corrcoef(r["BTCUSDT"], r["ETHUSDT"])[0, 1])
    assert corr - 0.1 < measured < corr + 0.1
    # The other pairs share only the market factor: about corr².
    assert float(np.corrcoef(r["ETHUSDT"], r["SOLUSDT"])[0, 1]) == pytest.approx(corr**2, abs=0.1)


def test_volatility_clusters() -> None:
    c = closes(sim(duration=5 * 1440, warmup=0, tfs=["1m"], ticks_per_bar=0))
    a = np.abs(np.diff(np.log(c["BTCUSDT"])))
    a = a - a.mean()
    acf = [float(np.dot(a[:-lag], a[lag:]) / np.dot(a, a)) for lag in (1, 5, 10)]
    assert min(acf) > 0.05  # |returns| stay large (or small) for a while: GARCH at work


def test_both_regimes_occur_with_persistent_durations_and_show_in_prices() -> None:
    model = MarketModel(SimSettings(), SYMS, 0)
    chunks = [model.chunk(1440) for _ in range(10)]
    regime = np.concatenate([c.regime for c in chunks])
    close = np.concatenate([c.close[:, 0] for c in chunks])
    starts = np.r_[0, np.flatnonzero(np.diff(regime)) + 1]
    lengths = np.diff(np.r_[starts, len(regime)])
    assert set(regime[starts].tolist()) == {-1, 0, 1}
    assert lengths[:-1].min() >= 20 and 30 < float(np.median(lengths)) < 300 and lengths.max() <= 480
    ret = np.diff(np.log(close), prepend=np.log(close[0]))
    assert ret[regime == 1].mean() > 0 > ret[regime == -1].mean()


def test_async_events_and_aclose() -> None:
    async def take(src: SimSource, limit: int | None) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        async for ev in src.events():
            out.append(ev)
            if len(out) == limit:
                await src.aclose()
        return out

    src = sim(duration=60, warmup=2)
    assert asyncio.run(take(src, None)) == list(src.iter_events())
    long_run = sim(duration=5 * 1440, warmup=0, ticks_per_bar=0)
    assert len(asyncio.run(take(long_run, 5))) < 1440 * 4 * len(SYMS)  # stopped after the first chunk


def test_export_replays_as_the_same_bars_labelled_simulated(tmp_path: Path) -> None:
    settings = SimSettings()
    paths = export_candles(settings, SYMS[:2], 1, tmp_path, ["15m"])
    assert sorted(p.name for p in paths) == ["BTCUSDT-15m.csv", "BTCUSDT-1m.csv", "ETHUSDT-15m.csv", "ETHUSDT-1m.csv"]
    assert (tmp_path / "SIMULATED.txt").exists()
    simulated = [k for k in SimSource(settings, SYMS[:2], ["1m", "15m"], 1440, 0).iter_events() if isinstance(k, Kline)]
    replay = ReplaySource(tmp_path, None, ["1m", "15m"], None, None, 0)
    assert replay.info.simulated
    strip = [(k.symbol, k.timeframe, k.open_time, k.open, k.high, k.low, k.close, k.volume) for k in simulated]
    assert [
        (k.symbol, k.timeframe, k.open_time, k.open, k.high, k.low, k.close, k.volume)
        for k in replay.iter_events()
        if isinstance(k, Kline)
    ] == strip


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"duration_minutes": 0}, "at least one minute"),
        ({"timeframes": ["30s"]}, "unknown timeframe"),
        ({"symbols": []}, "at least one symbol"),
    ],
)
def test_bad_arguments_are_clear(kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"symbols": SYMS, "timeframes": TFS, "duration_minutes": 60, "warmup_bars": 0}
    args.update(kw)
    with pytest.raises(SourceError, match=match):
        SimSource(SimSettings(), **args)
    with pytest.raises(SourceError, match="whole minute"):
        SimSource(SimSettings(start="2026-01-05T00:00:30Z"), SYMS, TFS, 60, 0)
