"""Benchmark: the account's inbox — one delivery (the shard's cost on the decision path) and delivery → executed.

Run from the repo root::

    .venv/bin/python bench/bench_inbox.py            # a private redis-server on a free port, 500 decisions

Three figures, on loopback Redis: (1) ``deliver`` — the idempotent ``XADD`` script a shard runs for each allowed
signal (one round trip); (2) ``begin + execute + finish`` per decision on the lease holder, with the paper broker;
(3) delivery → executed, one decision at a time, with the holder's pump running as a task (blocking
``XREADGROUP`` on its own connection, as wired by bootstrap).  Wall and CPU (process_time) are both printed;
figures depend on the machine, which is printed first.  Allowed signals are rare (caps of a few per hour), so
throughput is not the point: the added latency is.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.core.config import load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.execution.inbox import DecisionInbox, InboxExecutor
from ultra_signals.execution.lease import ExecutorLease
from ultra_signals.journal.writer import Journal
from ultra_signals.transport.notifier import NullNotifier

T0 = 1_767_571_200_000


def decision(i: int) -> Decision:
    c = Candidate(f"S{i}USDT", "5m", T0 + i * 300_000, T0 + (i + 1) * 300_000, Side.LONG, 0.6, 0.8, 100.0, 98.0,
                  (102.0, 104.0))  # fmt: skip
    return Decision("bench", c, True, None)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * (len(s) - 1)))]


def line(name: str, ms: list[float]) -> str:
    return f"{name:<34} n={len(ms):<5} p50 {statistics.median(ms):7.3f} ms  p99 {pct(ms, 0.99):7.3f} ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=500)
    args = ap.parse_args()
    exe_path = shutil.which("redis-server")
    if exe_path is None:
        sys.exit("redis-server not on PATH")
    port = free_port()
    proc = subprocess.Popen([exe_path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        print(describe())
        print("machine shared with other sessions: figures are indicative")
        with tempfile.TemporaryDirectory() as tmp:
            run(port, Path(tmp), args.n)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(port: int, tmp: Path, n: int) -> None:
    def client(timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)

    settings = load_settings(
        "canary",
        overrides={
            "runtime.source": "replay",
            "journal.url": f"sqlite:///{tmp}/journal.db",
            "execution.throttles.max_orders_per_minute": 10_000,
            "execution.throttles.max_open_positions": 10_000,
        },
        environ={},
    )
    inner = make_executor(settings, None, Journal(settings.journal.url), NullNotifier(), "bench", namespace="bench")
    assert isinstance(inner, TradingExecutor)
    lease = ExecutorLease(client(), namespace="bench", account="paper", holder="bench", ttl_ms=60_000)
    inner.lease_gate = lease.blocking_reason
    inbox = DecisionInbox(client(), namespace="bench", account="paper", reader=client(3.0))
    exe = InboxExecutor(inner, inbox, lease, notifier=NullNotifier(), block_ms=250)
    assert lease.tick()
    lease.mark_reconciled()

    # (1) deliver, the shard's cost
    deliver: list[float] = []
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        t = time.perf_counter_ns()
        exe.on_signal(decision(i))
        deliver.append((time.perf_counter_ns() - t) / 1e6)
    w1, c1 = time.perf_counter(), time.process_time()
    print(line("deliver (XADD script)", deliver), f" wall {w1 - w0:.3f} s  cpu {c1 - c0:.3f} s")

    # (2) the holder drains them: begin + on_signal + finish per decision
    async def drain() -> float:
        t = time.perf_counter()
        while inbox.backlog():
            await exe.pump_once()
        return time.perf_counter() - t

    c0 = time.process_time()
    wall = asyncio.run(drain())
    cpu = time.process_time() - c0
    print(f"{'holder runs them (paper broker)':<34} n={n:<5} {wall / n * 1000:7.3f} ms each  wall {wall:.3f} s  "
          f"cpu {cpu:.3f} s")  # fmt: skip

    # (3) delivery → executed, one at a time, the pump running as the runner runs it
    async def end_to_end(k: int) -> list[float]:
        out: list[float] = []
        await exe.start()
        try:
            for i in range(n, n + k):
                d = decision(i)
                t = time.perf_counter()
                exe.on_signal(d)
                for _ in range(10_000):  # bounded: 10,000 × 1 ms
                    if inbox.key_of(d) in exe.executed:
                        break
                    await asyncio.sleep(0.001)
                out.append((time.perf_counter() - t) * 1000)
        finally:
            await exe.aclose()
        return out

    c0 = time.process_time()
    w0 = time.perf_counter()
    e2e = asyncio.run(end_to_end(min(n, 200)))
    print(line("delivery -> executed (pump task)", e2e),
          f" wall {time.perf_counter() - w0:.3f} s  cpu {time.process_time() - c0:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
