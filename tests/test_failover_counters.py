"""Failover: Redis stopped, paused (SIGSTOP → timeouts), restarted empty, or holding foreign data.

Each test that breaks Redis runs its own ``redis-server`` on a free port (never the shared one).  A single
runner's decisions must be exactly those of one MemoryCounters fed the same sequence — before, during and
after the outage — and afterwards Redis must hold every allowed reservation again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from tests.redis_proc import RedisProc, private_redis, wait_until
from ultra_signals.core.caps import HOUR_MS, BudgetRule, CapPolicy, CapResult, QualityPoint, Reservation
from ultra_signals.core.config import RedisSettings
from ultra_signals.core.quality_window import OnlineThreshold
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.redis_backend import RedisCounters, connect
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics

MIN = 60_000
T0 = 1_700_000_000_000
POLICY = CapPolicy.from_limits(2, 6)
INTERVAL_S = 0.05
#: Generous so a loaded CI box does not fail over by accident; a paused Redis still times out quickly.
TIMEOUT_MS = 250.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


class Run:
    """One runner: FailoverCounters over a private Redis, plus the reference MemoryCounters it must match."""

    def __init__(
        self, url: str, on_failure: str = "memory", namespace: str = "ns", timeout_ms: float = TIMEOUT_MS
    ) -> None:
        self.metrics = Metrics()
        self.events: list[tuple[str, str]] = []
        self.primary = RedisCounters(
            connect(RedisSettings(url=url, timeout_ms=timeout_ms)), POLICY, namespace, "shadow", where=url
        )
        self.counters = FailoverCounters(
            self.primary,
            POLICY,
            on_failure,  # type: ignore[arg-type]
            self.metrics,
            health_check_interval_s=INTERVAL_S,
            on_event=lambda kind, msg: self.events.append((kind, msg)),
        )
        self.reference = MemoryCounters(POLICY)
        self.allowed: list[Reservation] = []
        self.n = 0

    def attempt(self, ts_ms: int, symbol: str = "BTCUSDT") -> tuple[CapResult, CapResult]:
        res = Reservation(f"run1:{symbol}:5m:{ts_ms}", symbol, ts_ms)
        self.n += 1
        got = self.counters.check_and_reserve(res)
        if got.allowed and not got.duplicate:
            self.allowed.append(res)
        return got, self.reference.check_and_reserve(res)

    def gauge(self, backend: str) -> float | None:
        return self.metrics.registry.get_sample_value("sniper_counter_backend", {"backend": backend})

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def redis_ids(self, server: RedisProc) -> set[str]:
        c = server.client()
        try:
            return held_ids(c, self.primary.key_global)
        finally:
            c.close()


def held_ids(c: redis.Redis, key: str) -> set[str]:
    return {bytes(m).decode().split("|", 1)[1] for m in cast(list[bytes], c.zrange(key, 0, -1))}


def steps(start: int, n: int) -> list[int]:
    """Attempts every 20 minutes: with a cap of 2 per hour about a third are refused."""
    return [T0 + (start + i) * 20 * MIN for i in range(n)]


def assert_same(pairs: list[tuple[CapResult, CapResult]]) -> None:
    for got, want in pairs:
        assert (got.allowed, got.reason) == (want.allowed, want.reason)


def test_redis_stopped_then_restarted_empty_keeps_deciding_and_reconciles(server: RedisProc) -> None:
    run = Run(server.url)
    try:
        assert run.counters.backend == "redis" and run.gauge("redis") == 1
        before = [run.attempt(t) for t in steps(0, 6)]
        assert_same(before)
        server.stop()
        during = [run.attempt(t) for t in steps(6, 9)]  # decisions continue, no exception, no stall
        assert_same(during)
        assert any(got.allowed for got, _ in during) and any(not got.allowed for got, _ in during)
        assert run.counters.backend == "memory"
        assert (run.gauge("redis"), run.gauge("memory")) == (0, 1)
        assert run.value("sniper_failovers_total") == 1
        assert (
            run.value("redis_errors_total", {"op": "reserve"}) + run.value("redis_errors_total", {"op": "health"}) >= 1
        )
        assert any(k == "failover" and m.startswith("counter backend: redis -> memory (") for k, m in run.events)
        made_in_outage = sum(1 for got, _ in during if got.allowed)

        server.start()  # same port, no persistence: it comes back EMPTY
        wait_until(lambda: run.counters.backend == "redis", what="switch back to redis")
        assert (run.gauge("redis"), run.gauge("memory")) == (1, 0)
        recovered = [m for k, m in run.events if k == "recovered"]
        assert recovered and f"{made_in_outage} reservations made during the outage" in recovered[0]
        # The reconcile restored the windows: Redis holds the outage's reservations and the ones before it.
        assert run.redis_ids(server) == {r.id for r in run.allowed}
        after = [run.attempt(t) for t in steps(15, 6)]
        assert_same(after)
        assert run.redis_ids(server) == {r.id for r in run.allowed}
        assert run.value("sniper_counter_op_ms_count") == run.n
    finally:
        run.counters.close()


def test_redis_paused_times_out_fails_over_and_comes_back(server: RedisProc) -> None:
    run = Run(server.url)
    try:
        assert_same([run.attempt(t) for t in steps(0, 4)])
        server.pause()  # SIGSTOP: connections are accepted, nothing answers
        during = [run.attempt(t) for t in steps(4, 6)]
        assert_same(during)
        assert run.counters.backend == "memory" and run.value("sniper_failovers_total") == 1
        assert any("Timeout" in m for k, m in run.events if k == "failover")
        server.resume()
        wait_until(lambda: run.counters.backend == "redis", what="switch back to redis")
        assert run.redis_ids(server) == {r.id for r in run.allowed}
        assert_same([run.attempt(t) for t in steps(10, 4)])
        assert run.gauge("redis") == 1
    finally:
        run.counters.close()


def test_block_refuses_everything_while_redis_is_away(server: RedisProc) -> None:
    run = Run(server.url, on_failure="block")
    try:
        first, _ = run.attempt(T0)
        assert first.allowed
        server.stop()
        during = [run.attempt(T0 + i * 3 * HOUR_MS)[0] for i in range(1, 6)]  # each would fit the caps
        assert all(not r.allowed and r.reason == "hourly_cap" for r in during)
        assert run.counters.backend == "blocked"
        assert (run.gauge("redis"), run.gauge("memory"), run.gauge("blocked")) == (0, 0, 1)
        retry = run.counters.check_and_reserve(Reservation(f"run1:BTCUSDT:5m:{T0}", "BTCUSDT", T0))
        assert retry.allowed and retry.duplicate  # a retry of what WAS allowed is still allowed, once
        assert any(m.startswith("counter backend: redis -> blocked (") for k, m in run.events if k == "failover")

        server.start()
        wait_until(lambda: run.counters.backend == "redis", what="switch back to redis")
        assert run.redis_ids(server) == {first_id(T0)}  # nothing was allowed while away; the earlier one is back
        again, _ = run.attempt(T0 + 20 * HOUR_MS)
        assert again.allowed
    finally:
        run.counters.close()


def first_id(ts: int) -> str:
    return f"run1:BTCUSDT:5m:{ts}"


def test_redis_emptied_behind_our_back_is_refilled_by_the_health_check(server: RedisProc) -> None:
    """FLUSHALL keeps our connection open, so no call fails: the periodic sync must notice and write back."""
    run = Run(server.url)
    try:
        for t in steps(0, 6):
            run.attempt(t)
        assert run.allowed
        c = server.client()
        c.flushall()
        c.close()
        wait_until(lambda: run.redis_ids(server) == {r.id for r in run.allowed}, what="anti-entropy refill")
        assert run.counters.backend == "redis" and run.value("sniper_failovers_total") == 0
    finally:
        run.counters.close()


def test_a_foreign_value_fails_over_with_a_clear_message_and_recovers_once_removed(
    redis_url: str, namespace: str
) -> None:
    run = Run(redis_url, namespace=namespace)
    c = redis.Redis.from_url(redis_url)
    try:
        assert run.attempt(T0)[0].allowed
        c.delete(run.primary.key_global)
        c.set(run.primary.key_global, "written by someone else")
        got, want = run.attempt(T0 + 10 * MIN)  # no exception: the runner keeps going on local counts
        assert (got.allowed, got.reason) == (want.allowed, want.reason)
        assert run.counters.backend == "memory"
        failover = [m for k, m in run.events if k == "failover"]
        assert failover and "holds a string, expected a zset" in failover[0] and run.primary.key_global in failover[0]
        c.delete(run.primary.key_global)  # the operator removes it
        wait_until(lambda: run.counters.backend == "redis", what="switch back to redis")
        assert held_ids(c, run.primary.key_global) == {r.id for r in run.allowed}
    finally:
        run.counters.close()
        c.close()


def test_seed_is_written_to_redis_and_to_the_fallback(server: RedisProc) -> None:
    journal = [Reservation("j1", "BTCUSDT", T0), Reservation("j2", "ETHUSDT", T0 + MIN)]
    metrics = Metrics()
    primary = RedisCounters(connect(RedisSettings(url=server.url, timeout_ms=TIMEOUT_MS)), POLICY, "ns", "shadow")
    fc = FailoverCounters(primary, POLICY, "memory", metrics, health_check_interval_s=INTERVAL_S, seed=journal)
    try:
        assert fc.window_counts(T0 + MIN) == {"hour": 2, "day": 2}
        assert not fc.check_and_reserve(Reservation("x", "SOLUSDT", T0 + 2 * MIN)).allowed
        server.stop()
        assert not fc.check_and_reserve(Reservation("y", "SOLUSDT", T0 + 3 * MIN)).allowed  # local knows them too
        assert fc.backend == "memory"
        assert {r.id for r in fc.reservations()} == {"j1", "j2"}
    finally:
        fc.close()


def test_close_stops_the_health_thread(server: RedisProc) -> None:
    run = Run(server.url)
    thread = run.counters._thread
    assert thread.is_alive()
    run.counters.close()
    assert not thread.is_alive()


def test_a_failing_event_callback_does_not_break_counting(server: RedisProc) -> None:
    def boom(kind: str, msg: str) -> None:
        raise RuntimeError("telegram down")

    primary = RedisCounters(connect(RedisSettings(url=server.url, timeout_ms=TIMEOUT_MS)), POLICY, "ns", "shadow")
    fc = FailoverCounters(primary, POLICY, "memory", Metrics(), health_check_interval_s=INTERVAL_S, on_event=boom)
    try:
        server.stop()
        assert fc.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
        assert fc.backend == "memory"
    finally:
        fc.close()


def test_the_refresh_path_never_calls_redis_nor_waits_past_the_timeout(server: RedisProc) -> None:
    """Issue 10: a Redis call inside the runner's periodic refresh stalled the loop for 8 s.

    The refresh reads ``cached_window_counts``: with Redis paused (SIGSTOP: every call would hang until the
    timeout) it answers from the local mirror without a Redis call; with the lock held by someone else (the
    health check reconciling) it answers the previous counts instead of waiting for the lock.
    """
    import threading

    run = Run(server.url)
    try:
        assert_same([run.attempt(t) for t in steps(0, 3)])
        errors_before = run.value("redis_errors_total", {"op": "window_counts"})
        server.pause()
        counts = run.counters.cached_window_counts(steps(0, 3)[-1])
        assert counts == run.reference.window_counts(steps(0, 3)[-1])
        assert run.value("redis_errors_total", {"op": "window_counts"}) == errors_before  # no Redis call made
        server.resume()
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with run.counters._lock:
                held.set()
                release.wait(30)

        t = threading.Thread(target=hold)
        t.start()
        held.wait(10)
        try:
            again = run.counters.cached_window_counts(steps(0, 3)[-1])
            assert not release.is_set()  # answered while the lock was still held elsewhere
            assert again == counts
        finally:
            release.set()
            t.join(10)
    finally:
        run.counters.close()


# -- the ranked threshold's history falls back with the caps -------------------------------------------------

RULE = BudgetRule(window_ms=6 * HOUR_MS, target_per_day=8.0, min_history=4)


def point(i: int, symbol: str = "BTCUSDT") -> QualityPoint:
    return QualityPoint(f"{symbol}:5m:{i}", "5m", T0 + i * 5 * MIN, ((i * 37) % 101) / 101)


def reference() -> OnlineThreshold:
    return OnlineThreshold(RULE.window_ms, RULE.target_per_day, RULE.min_history)


def failover(url: str, on_failure: str = "memory") -> FailoverCounters:
    primary = RedisCounters(connect(RedisSettings(url=url, timeout_ms=TIMEOUT_MS)), POLICY, "ns", "shadow")
    return FailoverCounters(primary, POLICY, on_failure, Metrics(), health_check_interval_s=INTERVAL_S)  # type: ignore[arg-type]


def test_threshold_follows_the_caps_to_memory_and_back_and_redis_gets_the_outage_points(server: RedisProc) -> None:
    fc = failover(server.url)
    try:
        th, ref = fc.quality_threshold(RULE), reference()
        assert th.backend == "redis"
        before = [(th.threshold_and_observe(point(i)), ref.threshold_and_observe(point(i))) for i in range(40)]
        assert all(a == b for a, b in before) and any(a is not None for a, _ in before)
        server.stop()
        during = [(th.threshold_and_observe(point(i)), ref.threshold_and_observe(point(i))) for i in range(40, 70)]
        assert all(a == b for a, b in during)  # the local mirror holds every point: nothing changes for one runner
        assert th.backend == "memory" and fc.backend == "memory"
        server.start()  # back EMPTY
        wait_until(lambda: fc.backend == "redis", what="switch back to redis")
        c = server.client()
        try:
            held = {
                bytes(m).decode()
                for m in cast(list[bytes], c.zrange(fc.primary.quality_threshold(RULE).keys("5m")[0], 0, -1))
            }
        finally:
            c.close()
        assert held == {p.key for p in ref.points()}  # the window (before and during the outage) is back
        after = [(th.threshold_and_observe(point(i)), ref.threshold_and_observe(point(i))) for i in range(70, 90)]
        assert all(a == b for a, b in after) and any(a is not None for a, _ in after)
    finally:
        fc.close()


def test_with_block_the_caps_refuse_and_the_threshold_still_answers_locally(server: RedisProc) -> None:
    """``on_failure: block`` refuses at the caps (hourly_cap), as for first_come; the threshold does not stall."""
    fc = failover(server.url, on_failure="block")
    try:
        th, ref = fc.quality_threshold(RULE), reference()
        for i in range(30):
            assert th.threshold_and_observe(point(i)) == ref.threshold_and_observe(point(i))
        server.stop()
        for i in range(30, 40):
            assert th.threshold_and_observe(point(i)) == ref.threshold_and_observe(point(i))
        res = fc.check_and_reserve(Reservation("BTCUSDT:5m:x", "BTCUSDT", T0 + 40 * 5 * MIN))
        assert not res.allowed and res.reason == "hourly_cap" and fc.backend == "blocked"
    finally:
        fc.close()


def test_the_fallback_mirror_pulls_the_other_runners_points(server: RedisProc) -> None:
    """Runner a's local mirror learns runner b's candidates at each health check, so on failover its threshold
    is the shared one (as of the last check), not a threshold over its own share."""
    a, b = failover(server.url), failover(server.url)
    try:
        ta, tb, ref = a.quality_threshold(RULE), b.quality_threshold(RULE), reference()
        for i in range(60):
            p = point(i, "AAA" if i % 2 else "BBB")
            assert (ta if i % 2 else tb).threshold_and_observe(p) == ref.threshold_and_observe(p)
        wait_until(lambda: len(ta.local.points()) == 60, what="mirror pull")
        server.stop()
        for i in range(60, 80):
            p = point(i, "AAA")
            assert ta.threshold_and_observe(p) == ref.threshold_and_observe(p)
        assert ta.backend == "memory"
    finally:
        a.close()
        b.close()
