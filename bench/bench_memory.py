"""Memory benchmark: RSS of a live-shaped runner over a simulated week, 20 symbols (issue 12, item 4).

The simulator's market (1m candles aggregated to 5m/15m/1h, trades and book tickers) goes through the real
runner as a LIVE source would (``historical`` false: the wall-clock freshness check is on, read from the
simulated exchange clock), with the SQLite journal, metrics and memory counters.  Alongside, each symbol's
local order book takes a depth diff per simulated second-burst at prices drifting with the market, so levels
far from the touch keep appearing (what grew the book without bound before).

RSS (``VmRSS``, the current resident size, not the peak) is printed at the end of every simulated day with
the sizes of the bounded structures.  "Flat after warm-up" means the day-2..day-7 figures stay within a few MB.

    python bench/bench_memory.py                     # 20 symbols × 7 days
    python bench/bench_memory.py --days 2 --symbols 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.config import load_settings
from ultra_signals.core.events import Kline, MarketEvent, event_time
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceInfo
from ultra_signals.sources.binance.orderbook import OrderBook
from ultra_signals.sources.binance.parse import DepthDiff, DepthSnapshot
from ultra_signals.sources.sim import SimSource
from ultra_signals.transport.notifier import NullNotifier

DAY_MS = 86_400_000
BASE = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK",
        "LTC", "TRX", "ATOM", "NEAR", "APT", "ARB", "OP", "FIL", "ETC", "SUI"]  # fmt: skip


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class LiveShaped:
    """The simulator presented as a live feed, plus a local order book per symbol fed with drifting diffs."""

    def __init__(self, sim: SimSource, depth: int, seed: int) -> None:
        self.sim = sim
        self._info: SourceInfo = replace(sim.info, historical=False, name="sim-live")
        self.now = sim.run_start_ms
        self.books = {s: OrderBook(s, max_levels=depth) for s in sim.symbols}
        self._mid: dict[str, float] = {}
        self._rng = random.Random(seed)
        self.rows: list[tuple[int, float, int, int, int]] = []
        self.runner_stats: object = None
        for b in self.books.values():
            b.apply_snapshot(DepthSnapshot(10, None, ((99.0, 1.0),), ((101.0, 1.0),)))

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def run_start_ms(self) -> int:
        return self.sim.run_start_ms

    @property
    def run_end_ms(self) -> int:
        return self.sim.run_end_ms

    async def open(self) -> None:
        await self.sim.open()

    def exchange_now_ms(self) -> int:
        return self.now  # the simulated exchange clock: live bars arrive on time

    async def aclose(self) -> None:
        await self.sim.aclose()

    async def events(self) -> AsyncIterator[MarketEvent]:
        day = None
        async for ev in self.sim.events():
            ts = event_time(ev)
            self.now = max(self.now, ts)
            if isinstance(ev, Kline) and ev.timeframe == "1m" and ev.closed:
                self._diffs(ev.symbol, ev.close)
            d = (ts - self.sim.run_start_ms) // DAY_MS
            if ts > self.sim.run_start_ms and d != day:
                day = d
                self._sample(int(d))
            yield ev
        self._sample(int(day or 0) + 1)

    def _diffs(self, sym: str, close: float) -> None:
        """Ten diffs per minute, two levels each side around the market price (±2 %): the far ones pile up."""
        book = self.books[sym]
        for _ in range(10):
            bids = tuple((round(close * (1 - self._rng.random() * 0.02), 6), 1.0) for _ in range(2))
            asks = tuple((round(close * (1 + self._rng.random() * 0.02), 6), 1.0) for _ in range(2))
            last = book.last_update_id or 0
            d = DepthDiff(sym, 0, last + 1, last + 1, last, bids, asks)
            book.on_diff(d)

    def _sample(self, day: int) -> None:
        gc.collect()
        levels = max(len(b.bids) + len(b.asks) for b in self.books.values())
        self.rows.append((day, rss_mb(), levels, 0, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--depth", type=int, default=1000, help="tracked order book depth per side")
    args = ap.parse_args()
    symbols = [f"{b}USDT" for b in BASE[: args.symbols]]
    settings = load_settings(
        overrides={
            "runtime.symbols": symbols,
            "runtime.timeframes": "1m,5m,15m,1h",
            "runtime.primary_timeframe": "1m",
            "execution.broker": "none",
            "metrics.enabled": False,
        },
        environ={},
    )
    rt = settings.runtime
    sim = SimSource(settings.sim, symbols, rt.timeframes, args.days * 24 * 60, rt.warmup_bars)
    src = LiveShaped(sim, args.depth, settings.sim.seed)
    print(f"machine: {describe()}")
    print(f"{len(symbols)} symbols × {args.days} simulated days, live-shaped (wall-clock freshness on)")
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(f"sqlite:///{tmp}/journal.db")
        runner = build_runner(
            settings,
            source=src,
            journal=journal,
            notifier=NullNotifier(),
            metrics=Metrics(),
            executor=False,
            serve_metrics=False,
        )
        st = runner.stats
        orig = src._sample

        def sample(day: int) -> None:
            orig(day)
            d, rss, levels, _, _ = src.rows[-1]
            points = max((len(v) for v in st.prices.values()), default=0)
            src.rows[-1] = (d, rss, levels, st.latencies_ms.buckets, points)

        src._sample = sample  # type: ignore[method-assign]
        t0 = time.perf_counter()
        asyncio.run(runner.run())
        wall = time.perf_counter() - t0
        journal.close()
    events = sum(st.events.values())
    print(f"{events:,} events ({dict(st.events)}), {len(st.latencies_ms):,} decision points, wall {wall:.0f} s")
    print(f"decisions: allowed {sum(st.allowed.values())}, blocked {dict(st.blocked)}")
    print(f"{'day':>4} {'RSS MB':>8} {'book levels (max/symbol)':>25} {'latency buckets':>16} {'chart points':>13}")
    for day, rss, levels, buckets, points in src.rows:
        print(f"{day:>4} {rss:>8.1f} {levels:>25} {buckets:>16} {points:>13}")
    after = [r[1] for r in src.rows if r[0] >= 2]
    if len(after) >= 2:
        print(f"RSS from day 2 to the end: min {min(after):.1f} MB, max {max(after):.1f} MB, "
              f"spread {max(after) - min(after):.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
