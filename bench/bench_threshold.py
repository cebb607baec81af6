"""Benchmark: the ranked threshold's one call per candidate, in memory and in Redis (shared history).

Run from the repo root::

    .venv/bin/python bench/bench_threshold.py --url redis://127.0.0.1:6379/0 [--symbols 200] [--hours 96]

Workload: 5m candidates on ``--symbols`` symbols, about half the symbols a candidate per bar (the measured
candidate rate on real data is ~56 % of bars), event time moving forward bar by bar, a 72 h window: the window
then holds ``symbols × 0.5 × 864`` points, the steady state of a large universe.  Each op is one
``threshold_and_observe`` (memory: :class:`OnlineThreshold`; Redis: one EVALSHA).  A late pass (a runner
two bars behind, the script's late path) is measured too.  Wall and CPU (process) time are printed with the
machine; the Redis server's own CPU is not in this process's CPU time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.core.caps import HOUR_MS, BudgetRule, CapPolicy, QualityPoint, QualityThreshold
from ultra_signals.core.quality_window import OnlineThreshold
from ultra_signals.counters.redis_backend import KEY_ROOT, RedisCounters

BAR = 300_000
T0 = 1_700_000_000_000


def workload(symbols: int, hours: float, seed: int = 1) -> list[QualityPoint]:
    rng = random.Random(seed)
    out = []
    for b in range(int(hours * HOUR_MS / BAR)):
        for s in range(symbols):
            if rng.random() < 0.5:
                out.append(QualityPoint(f"S{s}:5m:{T0 + b * BAR}", "5m", T0 + (b + 1) * BAR, rng.random()))
    return out


def measure(th: QualityThreshold, points: list[QualityPoint], last: int) -> tuple[list[float], float, float]:
    """Feed all; time the last ``last`` calls one by one (µs), and their total wall and CPU seconds."""
    for p in points[:-last]:
        th.threshold_and_observe(p)
    lat = []
    w0, c0 = time.perf_counter(), time.process_time()
    for p in points[-last:]:
        t = time.perf_counter()
        th.threshold_and_observe(p)
        lat.append((time.perf_counter() - t) * 1e6)
    return lat, time.perf_counter() - w0, time.process_time() - c0


def report(name: str, lat: list[float], wall: float, cpu: float) -> None:
    q = statistics.quantiles(lat, n=100)
    print(
        f"{name:<34} n={len(lat):>6}  p50 {q[49]:8.1f} µs  p99 {q[98]:8.1f} µs  "
        f"wall {wall:6.2f} s  cpu {cpu:6.2f} s  ({len(lat) / wall:,.0f} ops/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--hours", type=float, default=96.0)
    ap.add_argument("--last", type=int, default=5000, help="calls timed at the end (steady state)")
    args = ap.parse_args()
    print(describe())
    rule = BudgetRule(72 * HOUR_MS, 4.5, 20)
    points = workload(args.symbols, args.hours)
    print(f"{len(points)} candidates, {args.symbols} symbols, {args.hours:g} h; window 72 h")
    report("memory (OnlineThreshold)", *measure(OnlineThreshold(72 * HOUR_MS, 4.5, 20), points, args.last))
    client = redis.Redis.from_url(args.url)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        th = RedisCounters(client, CapPolicy.from_limits(2, 6), ns, "bench").quality_threshold(rule)
        report("redis (in order)", *measure(th, points, args.last))
        # A runner two bars behind the latest: every call takes the late path (rank queries corrected by the lag).
        late = [QualityPoint(p.key + ":late", p.timeframe, p.ts_ms - 2 * BAR, p.quality) for p in points[-500:]]
        lat, wall, cpu = measure(th, late, len(late) - 1)
        report("redis (late: 2 bars behind)", lat, wall, cpu)
    finally:
        for key in client.scan_iter(match=f"{KEY_ROOT}:{{{ns}*", count=1000):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
