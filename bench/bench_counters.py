"""Benchmark: one check-and-reserve against loopback Redis — latency p50/p99 and ops/s, 1 and 4 clients.

Run from the repo root::

    /work/venv/bin/python bench/bench_counters.py                 # a private redis-server on a free port
    /work/venv/bin/python bench/bench_counters.py --url redis://127.0.0.1:6379/0   # an existing Redis

Each op is one ``check_and_reserve`` (one EVALSHA round trip) with the default caps (2 per hour, 6 per day)
plus per-symbol caps, on event times that move forward with jitter across 20 symbols, so most calls are
refusals after a full window scan — the runner's steady state.  The memory backend and the failover wrapper
(what the runner actually calls) are measured on the same workload for comparison.  Target: p99 ≤ 0.5 ms
per check-and-reserve on loopback.  Figures depend on the machine, which is printed first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.core.caps import CapPolicy, Reservation
from ultra_signals.core.config import RedisSettings
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.redis_backend import KEY_ROOT, RedisCounters, connect
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics

POLICY = CapPolicy.from_limits(2, 6, symbol_per_hour=1, symbol_per_day=3)
SYMBOLS = [f"SYM{i}USDT" for i in range(20)]
T0 = 1_700_000_000_000


def workload(n: int, seed: int, prefix: str) -> list[Reservation]:
    """A candidate every ~15 s of event time on average, ±10 min jitter (out of order), 20 symbols."""
    rng = random.Random(seed)
    return [
        Reservation(f"{prefix}:{i}", rng.choice(SYMBOLS), T0 + i * 15_000 + rng.randrange(-600_000, 600_000))
        for i in range(n)
    ]


def timed(op: Callable[[Reservation], Any], items: Sequence[Reservation]) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for r in items:
        t = clock()
        op(r)
        out.append((clock() - t) / 1e6)
    return out


def summary(name: str, lat_ms: Sequence[float], wall_s: float, clients: int) -> str:
    q = statistics.quantiles(lat_ms, n=1000)
    return (
        f"{name:<34} clients {clients}  ops {len(lat_ms):>7,}  "
        f"p50 {statistics.median(lat_ms):.3f} ms  p99 {q[989]:.3f} ms  p99.9 {q[998]:.3f} ms  "
        f"max {max(lat_ms):.3f} ms  {len(lat_ms) / wall_s:>9,.0f} ops/s"
    )


def worker(url: str, namespace: str, n: int, seed: int, barrier: Any, queue: Any) -> None:
    rc = RedisCounters(connect(RedisSettings(url=url, timeout_ms=1000)), POLICY, namespace, "bench")
    items = workload(n, seed, f"w{seed}")
    rc.check_and_reserve(Reservation(f"warm{seed}", "WARMUSDT", T0))  # connection and script cache
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    lat = timed(rc.check_and_reserve, items)
    queue.put((lat, t0, time.perf_counter()))
    rc.close()


def four_clients(url: str, namespace: str, n: int) -> tuple[list[float], float]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, namespace, n, s, barrier, queue)) for s in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    lat = [x for r in results for x in r[0]]
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    return lat, wall


def script_stats(client: redis.Redis) -> tuple[int, int]:
    """EVALSHA calls and the Redis CPU they used so far (INFO commandstats)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def machine(client: redis.Redis) -> str:
    info = client.info("server")
    return (
        f"{describe()} | "
        f"redis-server {info.get('redis_version')} | redis-py {redis.__version__} | {platform.platform()}"
    )


def start_private() -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server not found; pass --url to use an existing Redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 5
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("private redis-server did not start")
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="existing Redis (default: start a private redis-server)")
    ap.add_argument("--ops", type=int, default=20_000, help="ops per client")
    args = ap.parse_args()
    proc, url = (None, args.url) if args.url else start_private()
    client = redis.Redis.from_url(url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        print(machine(client))
        caps = ", ".join(f"{r.window} {r.cap}" for r in POLICY.rules)
        own = ", ".join(f"{r.window} {r.cap}" for r in POLICY.symbol_rules)
        print(
            f"redis: {url} ({'private, started by the benchmark' if proc else 'given'}); caps {caps}; per symbol {own}"
        )
        items = workload(args.ops, 1, "one")

        mem = MemoryCounters(POLICY)
        t = time.perf_counter()
        lat = timed(mem.check_and_reserve, items)
        print(summary("memory (in process)", lat, time.perf_counter() - t, 1))

        rc = RedisCounters(connect(RedisSettings(url=url, timeout_ms=1000)), POLICY, namespace + "-1", "bench")
        rc.check_and_reserve(Reservation("warm", "WARMUSDT", T0))
        before = script_stats(client)
        t = time.perf_counter()
        lat = timed(rc.check_and_reserve, items)
        print(summary("redis check-and-reserve", lat, time.perf_counter() - t, 1))
        calls, usec = (a - b for a, b in zip(script_stats(client), before, strict=True))
        if calls:
            print(f"{'':<34} (server side: {usec / calls:.1f} µs of Redis CPU per script call, {calls:,} calls)")
        held = len(rc.reservations())
        print(f"{'':<34} ({held} of {len(items):,} allowed and still held: the rest refused by a full window)")
        rc.close()

        fc = FailoverCounters(
            RedisCounters(connect(RedisSettings(url=url, timeout_ms=1000)), POLICY, namespace + "-f", "bench"),
            POLICY,
            "memory",
            Metrics(),
            health_check_interval_s=1.0,
        )
        fc.check_and_reserve(Reservation("warm", "WARMUSDT", T0))
        t = time.perf_counter()
        lat = timed(fc.check_and_reserve, items)
        print(summary("redis via FailoverCounters", lat, time.perf_counter() - t, 1))
        fc.close()

        lat, wall = four_clients(url, namespace + "-4", args.ops)
        print(summary("redis check-and-reserve (shared)", lat, wall, 4))
    finally:
        for key in client.scan_iter(match=f"{KEY_ROOT}:{{{namespace}*"):
            client.delete(key)
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
