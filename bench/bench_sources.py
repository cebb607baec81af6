"""Speed of the market sources on their own: CSV reading, replay (read + aggregate + order), simulator.

    /work/venv/bin/python bench/bench_sources.py [--days 30] [--repeat 5]

Input: ``--days`` of SIMULATED 1m candles for three symbols (30 days = 129,600 bars), written once by
``export_candles`` into a temporary folder.  Each figure is the best of ``--repeat`` runs (the machine is
shared, so the best run is the least disturbed one); the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.core.config import SimSettings
from ultra_signals.sources.candles_csv import read_candles
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.sources.sim import SimSource, export_candles

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Fastest wall time of ``repeat`` runs, and what the run returned (an event count)."""
    times = []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bars = args.days * 1440 * len(SYMBOLS)
    print(f"machine: {describe()}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        t = time.perf_counter()
        export_candles(SimSettings(), SYMBOLS, args.days, data, ["1m"])
        print(f"export_candles: {bars:,} SIMULATED 1m bars written in {time.perf_counter() - t:.2f} s")

        def read() -> int:
            return sum(len(read_candles(data / f"{s}-1m.csv", s, "1m")) for s in SYMBOLS)

        wall, n = best(read, args.repeat)
        print(f"read_candles: {n:,} rows in {wall:.3f} s ({n / wall:,.0f} rows/s)")

        for tfs in (["5m", "15m", "1h"], ["1m", "5m", "15m", "1h"]):

            def replay(tfs: list[str] = tfs) -> int:
                src = ReplaySource(data, SYMBOLS, tfs, None, None, 0)
                return sum(1 for _ in src.iter_events())

            wall, n = best(replay, args.repeat)
            print(
                f"replay {'/'.join(tfs)} (build + iterate): {n:,} events in {wall:.3f} s = {n / wall:,.0f} events/s, "
                f"{bars / wall:,.0f} input 1m bars/s"
            )

    for label, tfs, ticks in (
        ("1m only, no ticks", ["1m"], 0),
        ("1m→5m/15m/1h, no ticks", ["1m", "5m", "15m", "1h"], 0),
        ("5m/15m/1h only (1m not emitted), no ticks", ["5m", "15m", "1h"], 0),
        ("1m→5m/15m/1h, 4 ticks/bar", ["1m", "5m", "15m", "1h"], 4),
    ):
        settings = SimSettings(ticks_per_bar=ticks)
        days = args.days if not ticks else max(1, args.days // 10)  # ticks: a shorter run, same rate

        def run(settings: SimSettings = settings, tfs: list[str] = tfs, days: int = days) -> int:
            return sum(1 for _ in SimSource(settings, SYMBOLS, tfs, days * 1440, 0).iter_events())

        wall, n = best(run, max(1, args.repeat // 2))
        gen = days * 1440 * len(SYMBOLS)
        print(
            f"sim {label}: {gen:,} 1m bars ({n:,} events) in {wall:.3f} s = {gen / wall:,.0f} 1m bars/s, "
            f"{n / wall:,.0f} events/s"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
