"""Fault injection for issue 12 items 1–5, each against real parts in their own processes, bounded in time.

- exactly once across runners sharing a private Redis (item 2; two real processes: test_exactly_once.py),
- spurious failovers: a Redis paused (SIGSTOP) for less than the failover threshold stays the backend and the
  slow answers are counted; paused for longer, the runner fails over (item 3),
- stale signals after a reconnect: the fake Binance drops the stream, the source backfills old bars over REST,
  and none of them is allowed (item 1),
- bounded memory under a week of events per symbol (item 4; the RSS figures come from bench/bench_memory.py,
  the order book's pruning is in test_orderbook.py, the histogram's accuracy in test_latency.py),
- crash hygiene after SIGKILL: the run is marked crashed, blocked candidates and --decisions-out survive (item 5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_proc import RedisProc, private_redis
from ultra_signals.core.caps import CapPolicy, Reservation, policy_from, reservation_id
from ultra_signals.core.config import RedisSettings, load_settings
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.redis_backend import RedisCounters, connect
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics

pytestmark = pytest.mark.timeout(120)

MIN = 60_000
T0 = 1_700_000_000_000
POLICY = CapPolicy.from_limits(100, 1000)
TIMEOUT_MS = 100.0


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


def failover(server: RedisProc, metrics: Metrics, *, after: int = 3, on_failure: str = "memory") -> FailoverCounters:
    primary = RedisCounters(
        connect(RedisSettings(url=server.url, timeout_ms=TIMEOUT_MS)), POLICY, "ns", "shadow", where=server.url
    )
    return FailoverCounters(
        primary,
        POLICY,
        on_failure,  # type: ignore[arg-type]
        metrics,
        health_check_interval_s=3600.0,  # no health check during the test: only the decision path speaks
        failover_after=after,
    )


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return m.registry.get_sample_value(name, labels or {}) or 0.0


def res(n: int, owner: str = "run-a") -> Reservation:
    ts = T0 + n * 5 * MIN
    return Reservation(reservation_id("BTCUSDT", "5m", ts - 5 * MIN), "BTCUSDT", ts, owner=owner)


# -- item 3: spurious failovers -------------------------------------------------------------------------------
def test_a_pause_shorter_than_the_threshold_is_counted_not_failed_over(server: RedisProc) -> None:
    m = Metrics()
    fc = failover(server, m, after=3)
    try:
        assert fc.check_and_reserve(res(0)).allowed and fc.backend == "redis"
        server.pause()
        try:
            slow = fc.check_and_reserve(res(1))  # one answer that does not come in time
        finally:
            server.resume()
        assert slow.allowed  # on_failure=memory: this one call decided on local counts
        assert fc.backend == "redis"  # ...but one slow answer is not evidence enough to leave Redis
        assert value(m, "sniper_failovers_total") == 0
        assert value(m, "sniper_counter_slow_answers_total", {"op": "reserve"}) == 1
        assert fc.check_and_reserve(res(2)).allowed and fc.backend == "redis"
        assert fc._consecutive == 0  # a success clears the streak
    finally:
        fc.close()


def test_a_pause_longer_than_the_threshold_fails_over(server: RedisProc) -> None:
    m = Metrics()
    fc = failover(server, m, after=3)
    try:
        assert fc.check_and_reserve(res(0)).allowed
        server.pause()
        try:
            for n in (1, 2):
                fc.check_and_reserve(res(n))
                assert fc.backend == "redis"
            fc.check_and_reserve(res(3))  # the third consecutive timeout is evidence
            assert fc.backend == "memory"
        finally:
            server.resume()
        assert value(m, "sniper_failovers_total") == 1
        assert value(m, "sniper_counter_slow_answers_total", {"op": "reserve"}) == 2
    finally:
        fc.close()


def test_a_dead_redis_is_evidence_at_once(server: RedisProc) -> None:
    m = Metrics()
    fc = failover(server, m, after=3, on_failure="block")
    try:
        assert fc.check_and_reserve(res(0)).allowed
        server.stop()
        assert not fc.check_and_reserve(res(1)).allowed
        assert fc.backend == "blocked" and value(m, "sniper_failovers_total") == 1
    finally:
        fc.close()


# -- item 2: exactly once across runners sharing one Redis -------------------------------------
def test_two_runners_race_for_the_same_bars_and_one_wins_each(server: RedisProc) -> None:
    ma, mb = Metrics(), Metrics()
    a, b = failover(server, ma, on_failure="block"), failover(server, mb, on_failure="block")
    try:
        won = {"run-a": 0, "run-b": 0}
        for n in range(40):
            first, second = (a, b) if n % 2 else (b, a)
            owner1, owner2 = ("run-a", "run-b") if n % 2 else ("run-b", "run-a")
            r1 = first.check_and_reserve(res(n, owner1))
            r2 = second.check_and_reserve(res(n, owner2))
            assert r1.allowed and not r1.duplicate
            assert r2.duplicate and r2.owner == owner1  # the loser learns who took the bar
            won[owner1] += 1
        held = server.client().zcard(a.primary.key_global)
        assert held == 40 and won == {"run-a": 20, "run-b": 20}
    finally:
        a.close()
        b.close()


# -- item 1: stale signals after a reconnect -------------------------------------------------------------------
def test_bars_backfilled_after_a_long_drop_update_features_but_are_never_allowed(tmp_path: Path) -> None:
    from tests.fakes.binance_server import FakeBinance, ManualClock
    from tests.test_binance_source import _info, _settings, _xrp_rows
    from ultra_signals.bootstrap import build_runner
    from ultra_signals.journal.writer import Journal
    from ultra_signals.sources.binance.source import BinanceSource
    from ultra_signals.transport.notifier import NullNotifier

    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)
    journal = Journal(f"sqlite:///{tmp_path}/j.db")

    async def go() -> tuple[list[dict[str, Any]], int | None]:
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={("XRPUSDT", "5m"): rows}) as srv:
            s = _settings(
                srv,
                **{
                    "scoring.entry_threshold": 0.01,  # every warm bar proposes: decisions to look at
                    "sniper.enabled": False,
                    "filters.min_adx": 0.0,
                    "filters.min_confidence": 0.0,
                    "filters.min_atr_pct": 0.0,
                    "filters.max_atr_pct": 100.0,
                    "runtime.warmup_bars": 200,
                    "execution.broker": "none",
                    "metrics.enabled": False,
                },
            )
            src = BinanceSource(s, Metrics(), clock=clock)
            runner = build_runner(
                s, source=src, journal=journal, notifier=NullNotifier(), executor=False, serve_metrics=False
            )
            task = asyncio.create_task(runner.run())
            await srv.wait_connections(2)
            assert srv.drop() == 2
            clock.now = rows[360][0] + 1_000  # a 5 h drop: bars 300..359 are fetched over REST on reconnect
            deadline = asyncio.get_running_loop().time() + 30
            while runner.stats.market_end_ms is None or runner.stats.market_end_ms < rows[360][0]:
                assert asyncio.get_running_loop().time() < deadline, "backfill never arrived"
                await asyncio.sleep(0.05)
            latest = runner.engine.store.latest("XRPUSDT", "5m")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return journal.decisions(runner.run_id), latest.open_time if latest else None

    rows_out, latest_open = asyncio.run(asyncio.wait_for(go(), 60))
    journal.close()
    assert latest_open == rows[359][0]  # the features did move through every backfilled bar
    old = [r for r in rows_out if clock.now - r["ts"] > 120_000]
    assert len(old) >= 10, "the scenario produced too few candidates on old bars to show anything"
    assert all(not r["allowed"] and r["reason"] == "stale_data" for r in old)


def test_replay_never_looks_at_the_wall_clock() -> None:
    from ultra_signals.engine.pipeline import SignalEngine
    from ultra_signals.live.runner import _exchange_clock

    class Live:
        def exchange_now_ms(self) -> int:
            return 42

    assert _exchange_clock(Live())() == 42  # type: ignore[arg-type]
    s = load_settings(environ={})
    assert SignalEngine(s, MemoryCounters(policy_from(s.sniper)), "r").wall_now_ms is None


# -- item 5: crash hygiene after SIGKILL -------------------------------------------------------------------------
def test_sigkill_leaves_a_crashed_run_flushed_candidates_and_a_protected_decisions_file(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from tests.helpers import cli_env, copy_packaged_settings

    copy_packaged_settings(tmp_path)
    env = cli_env(COLUMNS="200")
    db = tmp_path / "var" / "journal.db"
    out = tmp_path / "d.jsonl"
    base = [sys.executable, "-m", "ultra_signals", "shadow", "--metrics-port", "0", "--no-report"]

    def rows(q: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as c:
            return c.execute(q).fetchall()

    # A long run, paced (10 simulated minutes a second), killed in the middle.
    proc = subprocess.Popen(
        [*base, "--duration", "600", "--speed", "600", "--decisions-out", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        blocked = 0
        while time.monotonic() < deadline:  # blocked rows arrive by time, far below the 500-row batch
            if db.exists():
                try:
                    blocked = rows("select count(*) from decisions where allowed = 0")[0][0]
                except sqlite3.OperationalError:
                    blocked = 0
            lines = out.read_text().splitlines() if out.exists() else []
            if 0 < blocked < 500 and any('"allowed"' in x for x in lines):
                break
            time.sleep(0.1)
        assert 0 < blocked < 500, f"blocked candidates never reached the journal before a batch filled ({blocked})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    [(run_id, status)] = rows("select run_id, status from runs")
    assert status == "running"  # nobody could say otherwise: the process died
    # Every allowed line that reached the file is in the journal and vice versa (both written before announcing).
    file_allowed = sorted(
        (r["symbol"], r["ts"]) for r in map(json.loads, out.read_text().splitlines()) if r["decision"] == "allowed"
    )
    journal_allowed = sorted(rows("select symbol, ts from decisions where allowed = 1"))
    assert file_allowed and set(file_allowed) <= set(journal_allowed)
    last_ts = rows("select max(ts) from decisions")[0][0]

    # The next start: refuses to overwrite the decisions file, then (with --force) marks the dead run crashed.
    p = subprocess.run(
        [*base, "--duration", "5", "--decisions-out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "already exists" in p.stdout + p.stderr and "--force" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert (
        sorted(
            (r["symbol"], r["ts"]) for r in map(json.loads, out.read_text().splitlines()) if r["decision"] == "allowed"
        )
        == file_allowed
    )
    p = subprocess.run(
        [*base, "--duration", "5", "--decisions-out", str(out), "--force"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    status, market_end, summary = rows(
        f"select status, market_end_ms, summary_json from runs where run_id = '{run_id}'"
    )[0]
    assert status == "crashed" and market_end == last_ts
    assert json.loads(summary)["last_decision_ts"] == last_ts
    assert "marked crashed" in p.stdout


# -- item 4: bounded structures in a 24/7 process --------------------------------------------------------------
def test_a_week_of_events_keeps_the_run_stats_bounded() -> None:
    from ultra_signals.live.runner import PRICE_POINTS, RunStats, add_price

    st = RunStats("r", "shadow", "shadow", "binance", False, ["BTCUSDT"], ["1m"])
    minutes = 7 * 24 * 60
    for i in range(minutes * 4):  # a week of 15 s samples: four times what 1m bars would give
        st.latencies_ms.append(0.05 + (i % 1000) / 100.0)
        add_price(st, "BTCUSDT", T0 + i * 15_000, 100.0 + i % 7)
    series = st.prices["BTCUSDT"]
    assert len(series) < PRICE_POINTS  # capped ...
    assert series[0][0] == T0 and series[-1][0] > T0 + (minutes * 4 - 100) * 15_000  # ... and spans the whole week
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    assert len(st.latencies_ms) == minutes * 4 and st.latencies_ms.buckets < 1_000
    p = st.latencies_ms.percentiles()
    assert p["max"] == 0.05 + 999 / 100.0 and 4.9 < p["p50"] < 5.2
