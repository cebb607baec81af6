"""Micro-benchmark: µs per ``FeatureStore.update`` with every indicator on, on real or synthetic candles.

Run from the repo root::

    /work/venv/bin/python bench/bench_features.py            # real candles from ../shared/data if present
    /work/venv/bin/python bench/bench_features.py --profile  # pyinstrument profile of the same loop

The timed loop feeds pre-built closed Klines (building them is the source's cost, not the store's) to a fresh
store, several symbols interleaved, ``--rounds`` times; it reports the best and median round.  Warm-up bars
are included, as they are in a real run, but they are a small share of a long series.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from ultra_signals.core.config import FeatureSettings
from ultra_signals.core.events import Kline
from ultra_signals.features.store import FeatureStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "klines"


def real_bars(limit: int) -> tuple[list[Kline], str]:
    files = sorted(DATA.glob("*BTC-5m.csv"))
    if not files:
        return synthetic_bars(limit), "synthetic random walk (../shared/data not found)"
    per_symbol: list[list[Kline]] = []
    for f in files:
        sym = f.name.split("-")[0]
        with f.open() as fh:
            rows = list(csv.DictReader(fh))
        per_symbol.append(
            [
                Kline(
                    sym,
                    "5m",
                    int(r["open_time"]),
                    int(r["open_time"]) + 299_999,
                    float(r["open"]),
                    float(r["high"]),
                    float(r["low"]),
                    float(r["close"]),
                    float(r["volume"]),
                )
                for r in rows
            ]
        )
    # Interleave symbols the way a live feed does (one bar of each symbol per period).
    out: list[Kline] = []
    for i in range(max(len(b) for b in per_symbol)):
        out.extend(b[i] for b in per_symbol if i < len(b))
    return out[:limit], f"real 5m candles, {len(files)} symbols from {DATA}"


def synthetic_bars(n: int, symbols: int = 10) -> list[Kline]:
    rng = random.Random(7)
    price = [100.0 * (i + 1) for i in range(symbols)]
    out = []
    for i in range(n // symbols):
        t = 1_700_000_000_000 + i * 300_000
        for s in range(symbols):
            o = price[s]
            c = o * math.exp(rng.gauss(0.0, 0.002))
            h = max(o, c) * (1 + abs(rng.gauss(0.0, 0.001)))
            lo = min(o, c) * (1 - abs(rng.gauss(0.0, 0.001)))
            price[s] = c
            out.append(Kline(f"SYM{s}", "5m", t, t + 299_999, o, h, lo, c, rng.uniform(10.0, 1000.0)))
    return out


def run(bars: list[Kline]) -> float:
    store = FeatureStore(FeatureSettings(), ["5m"])
    update = store.update
    t0 = time.perf_counter()
    for k in bars:
        update(k)
    return time.perf_counter() - t0


def compare_talib_stream(bars: list[Kline]) -> None:
    """The same TA-Lib indicators through ``talib.stream`` handles vs our pure-Python ones (no VWAP/z-score,
    no Features object): what switching the hot path to TA-Lib's streaming API would buy."""
    import numpy as np
    from talib import stream

    from ultra_signals.features.store import IndicatorSet

    one = [k for k in bars if k.symbol == bars[0].symbol]
    hist, feed = one[:300], one[300:]
    h = np.array([k.high for k in hist])
    lo = np.array([k.low for k in hist])
    c = np.array([k.close for k in hist])
    closes: list[Any] = [stream.EMA(c, timeperiod=n) for n in (20, 50, 200)]
    closes += [
        stream.RSI(c, timeperiod=14),
        stream.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9),
        stream.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0),  # SMA
    ]
    hlcs: list[Any] = [stream.ATR(h, lo, c, timeperiod=14)]
    hlcs += [f(h, lo, c, timeperiod=14) for f in (stream.ADX, stream.PLUS_DI, stream.MINUS_DI)]

    def feed_talib(ks: list[Kline]) -> None:
        for k in ks:
            x = k.close
            for s in closes:
                s.update(x)
            for s in hlcs:
                s.update(k.high, k.low, x)

    def best_of(f: Callable[[list[Kline]], None]) -> float:
        """Best of 5 passes over the feed (the indicators do not care that the bars repeat)."""
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            f(feed)
            runs.append(time.perf_counter() - t0)
        return min(runs) / len(feed) * 1e6

    ind = IndicatorSet(FeatureSettings())

    def feed_ours(ks: list[Kline]) -> None:
        for k in ks:
            x = k.close
            ind.ema_fast.update(x)
            ind.ema_mid.update(x)
            ind.ema_slow.update(x)
            ind.rsi.update(x)
            ind.macd.update(x)
            ind.bb.update(x)
            ind.atr.update(k.high, k.low, x)
            ind.adx.update(k.high, k.low, x)

    feed_ours(hist)
    ta = best_of(feed_talib)
    ours = best_of(feed_ours)
    print(
        f"TA-Lib's indicators only (no VWAP, z-score, Features), {len(feed)} bars: "
        f"talib.stream {ta:.2f} µs/bar, pure Python {ours:.2f} µs/bar"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="profile one round with pyinstrument")
    ap.add_argument("--talib-stream", action="store_true", help="also time the talib.stream equivalent")
    args = ap.parse_args()
    bars, origin = real_bars(args.bars)
    print(f"machine: {platform.processor() or platform.machine()} ({cpu_model()}), {os.cpu_count()} cpus")
    print(f"os: {platform.platform()}")
    print(f"python {sys.version.split()[0]} ({platform.python_implementation()})")
    print(f"input: {len(bars)} bars, {origin}")
    if args.profile:
        from pyinstrument import Profiler

        with Profiler(interval=0.0001) as prof:
            run(bars)
        prof.print()
        return
    run(bars[:2000])  # warm caches and the interpreter's specialisation
    times = [run(bars) for _ in range(args.rounds)]
    per = [t / len(bars) * 1e6 for t in times]
    print(
        f"FeatureStore.update: best {min(per):.2f} µs, median {statistics.median(per):.2f} µs per bar "
        f"({args.rounds} rounds; {len(bars) / min(times):,.0f} updates/s)"
    )
    if args.talib_stream:
        compare_talib_stream(bars)


if __name__ == "__main__":
    main()
