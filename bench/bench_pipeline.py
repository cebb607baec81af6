"""Pipeline benchmark: replay 3 symbols × 30 days of 1m bars (129,600 input bars) through the full pipeline.

Every stage is on: 1m → 5m/15m/1h aggregation, every indicator, scoring, every risk filter, sniper mode (MTF,
cooldown, caps), the SQLite journal, metrics.  Prints input bars/s and tick-to-decision latency, with the machine.

    python bench/bench_pipeline.py                 # memory counters
    python bench/bench_pipeline.py --redis redis://127.0.0.1:6379/0   # Redis counters (loopback)
    python bench/bench_pipeline.py --executor --timeframes 1m,5m,15m,1h  # every stage on (issue 13's figure)

Input bars per CPU-second (``process_time``) is the figure to compare on a shared machine; wall moves with load.

The candles are the simulator's (``ultra-signals sim export``), generated once into ``var/bench-candles``.
Targets (issue 2): ≥ 40,000 input bars/s and p99 tick-to-decision ≤ 1 ms with memory counters; ≤ 2 ms with Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.apps.report import latency_percentiles
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.config import load_settings
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.sources.sim import export_candles
from ultra_signals.transport.notifier import NullNotifier

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--data", default="var/bench-candles", help="folder of <SYMBOL>-1m.csv (generated if missing)")
    ap.add_argument("--redis", default=None, help="Redis URL: use the Redis counter backend")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--executor", action="store_true", help="with the paper what-if executor (every stage on, as a replay runs)"
    )
    ap.add_argument("--timeframes", default="5m,15m,1h", help="e.g. 1m,5m,15m,1h (the 1m bars then decide too)")
    ap.add_argument(
        "--signal-timeframes",
        default=None,
        help="e.g. 1m,5m,15m: these decide (with 1h confirming 15m, every timeframe's features are computed)",
    )
    args = ap.parse_args()

    overrides: dict[str, object] = {
        "runtime.symbols": SYMBOLS,
        "runtime.timeframes": args.timeframes,
        # The settings' primary (5m) decides when it is in the list, as in a default run; else the finest.
        "runtime.primary_timeframe": "5m" if "5m" in args.timeframes.split(",") else args.timeframes.split(",")[0],
        "execution.broker": "paper" if args.executor else "none",
    }
    if args.signal_timeframes:
        overrides["runtime.signal_timeframes"] = args.signal_timeframes
    if args.redis:
        overrides.update({"redis.enabled": True, "redis.url": args.redis})
    settings = load_settings(overrides=overrides, environ={})
    data = Path(args.data) / f"sim-seed{settings.sim.seed}-{args.days}d"
    if not all((data / f"{s}-1m.csv").exists() for s in SYMBOLS):
        t = time.perf_counter()
        export_candles(settings.sim, SYMBOLS, args.days, data, ["1m"])
        print(f"generated {args.days} days of SIMULATED 1m candles in {time.perf_counter() - t:.1f} s → {data}")
    input_bars = sum(sum(1 for _ in (data / f"{s}-1m.csv").open()) - 1 for s in SYMBOLS)

    print(f"machine: {describe()}")
    print(
        f"input: {input_bars:,} 1m bars ({len(SYMBOLS)} symbols × {args.days} days), timeframes {args.timeframes}, "
        f"counters: {'redis ' + args.redis if args.redis else 'memory'}, journal: SQLite (WAL), "
        f"executor: {'paper' if args.executor else 'none'}"
    )
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            journal = Journal(f"sqlite:///{tmp}/journal.db", settings.journal.batch_size)
            t0 = time.perf_counter()
            c0 = time.process_time()
            # Warm-up 0 so that every input bar is inside the run window and goes through every stage.
            src = ReplaySource(data, SYMBOLS, settings.runtime.timeframes, None, None, 0)
            # A fresh namespace per run: a repeat must not find the previous run's reservations in its windows.
            runner = build_runner(
                settings,
                source=src,
                journal=journal,
                notifier=NullNotifier(),
                metrics=Metrics(),
                executor=args.executor,
                serve_metrics=False,
                namespace=f"bench-{uuid.uuid4().hex[:8]}",
            )
            stats = asyncio.run(runner.run())
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            journal.close()
        lat = latency_percentiles(stats.latencies_ms)
        print(
            f"run {i + 1}: {input_bars / cpu:,.0f} input bars per CPU-second ({cpu:.2f} s CPU), "
            f"{input_bars / wall:,.0f} per wall-second ({wall:.2f} s wall), incl. CSV load and aggregation; "
            f"{stats.run_bars:,} aggregated bars; {sum(stats.candidates.values()):,} candidates, "
            f"{sum(stats.allowed.values())} allowed, {sum(stats.blocked.values()):,} blocked; journal rows written "
            f"{journal.rows_written:,}"
        )
        print(
            f"       tick-to-decision over {lat['n']:,} decision points: p50 {lat['p50'] * 1000:.1f} µs, "
            f"p95 {lat['p95'] * 1000:.1f} µs, p99 {lat['p99'] * 1000:.1f} µs, max {lat['max']:.3f} ms; "
            f"peak RSS {stats.peak_rss_mb:.0f} MB; counter backend {stats.counter_backend_end}"
        )


if __name__ == "__main__":
    main()
