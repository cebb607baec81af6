"""Choosing the counters from settings, and starting with Redis unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_proc import RedisProc, private_redis, wait_until
from ultra_signals.core.caps import Reservation, policy_from
from ultra_signals.core.config import RedisSettings, Settings, SniperSettings
from ultra_signals.counters.factory import make_counters
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics

T0 = 1_700_000_000_000
MIN = 60_000
JOURNAL = [Reservation("run0:BTCUSDT:5m:1", "BTCUSDT", T0), Reservation("run0:ETHUSDT:5m:1", "ETHUSDT", T0 + MIN)]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


def settings(**redis: object) -> Settings:
    return Settings(
        sniper=SniperSettings(max_signals_per_hour=2, daily_signal_cap=6), redis=RedisSettings.model_validate(redis)
    )


def gauge(metrics: Metrics, backend: str) -> float | None:
    return metrics.registry.get_sample_value("sniper_counter_backend", {"backend": backend})


def test_policy_comes_from_the_sniper_settings() -> None:
    p = policy_from(SniperSettings(max_signals_per_hour=1, daily_signal_cap=4, per_symbol_daily_cap=2))
    assert [(r.window, r.cap) for r in p.rules] == [("hour", 1), ("day", 4)]
    assert [(r.window, r.cap) for r in p.symbol_rules] == [("day", 2)]


def test_without_redis_the_memory_backend_is_rebuilt_from_the_journal() -> None:
    metrics = Metrics()
    events: list[tuple[str, str]] = []
    c = make_counters(settings(), metrics, "default", JOURNAL, on_event=lambda k, m: events.append((k, m)))
    assert isinstance(c, MemoryCounters) and c.backend == "memory"
    assert c.window_counts(T0 + MIN) == {"hour": 2, "day": 2}  # a restart without Redis keeps the day's count
    assert not c.check_and_reserve(Reservation("x", "SOLUSDT", T0 + 2 * MIN)).allowed
    assert (gauge(metrics, "memory"), gauge(metrics, "redis")) == (1, 0)
    assert events and events[0][0] == "start" and "counter backend: memory" in events[0][1]


def test_with_redis_the_journal_seed_reaches_redis_and_the_policy_is_announced(server: RedisProc) -> None:
    metrics = Metrics()
    events: list[tuple[str, str]] = []
    c = make_counters(
        settings(enabled=True, url=server.url, on_failure="block", health_check_interval_s=0.05),
        metrics,
        "desk1",
        JOURNAL,
        on_event=lambda k, m: events.append((k, m)),
    )
    try:
        assert isinstance(c, FailoverCounters) and c.backend == "redis"
        assert c.primary.prefix == "ultra_signals:{desk1:shadow}:sniper"
        assert c.window_counts(T0 + MIN) == {"hour": 2, "day": 2}
        start = [m for k, m in events if k == "start"]
        assert start and "counter backend: redis" in start[0] and "redis.on_failure=block" in start[0]
        assert gauge(metrics, "redis") == 1
    finally:
        c.close()


@pytest.mark.parametrize(("on_failure", "expected"), [("memory", "memory"), ("block", "blocked")])
def test_redis_unreachable_at_start_then_appearing(on_failure: str, expected: str) -> None:
    server = RedisProc()  # not started yet: nothing listens on its port
    metrics = Metrics()
    events: list[tuple[str, str]] = []
    c = make_counters(
        settings(enabled=True, url=server.url, on_failure=on_failure, health_check_interval_s=0.05, timeout_ms=200),
        metrics,
        "desk1",
        JOURNAL,
        on_event=lambda k, m: events.append((k, m)),
    )
    try:
        assert isinstance(c, FailoverCounters) and c.backend == expected
        assert gauge(metrics, expected) == 1 and gauge(metrics, "redis") == 0
        assert any(k == "start" and "Redis unreachable at start" in m for k, m in events)
        late = c.check_and_reserve(Reservation("x", "SOLUSDT", T0 + 3 * 60 * MIN))
        assert late.allowed == (on_failure == "memory")
        server.start()
        wait_until(lambda: c.backend == "redis", what="switch to redis once it answers")
        held = {r.id for r in c.primary.reservations()}
        assert {r.id for r in JOURNAL} <= held  # the journal seed was written on recovery
        assert ("x" in held) == (on_failure == "memory")
    finally:
        c.close()
        server.stop()
