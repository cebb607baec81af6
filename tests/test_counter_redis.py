"""The Redis backend against a real Redis: the same answers as the memory rule, keys, trimming, foreign data.

Normal tests use the machine's Redis with a fresh namespace (deleted afterwards); tests that need a server of
their own (script cache flush, a password) start a private ``redis-server``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.redis_proc import RedisProc, private_redis
from ultra_signals.core.caps import DAY_MS, HOUR_MS, CapPolicy, CounterBackendError, Reservation
from ultra_signals.core.config import RedisSettings
from ultra_signals.counters.redis_backend import (
    KEY_ROOT,
    RedisCounters,
    connect,
    describe_target,
)
from ultra_signals.counters.windows import MemoryCounters

MIN = 60_000
T0 = 1_700_000_000_000

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, socket_timeout=2)
    yield c
    c.close()


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


def members(client: redis.Redis, key: str) -> list[str]:
    return [bytes(m).decode() for m in cast(list[bytes], client.zrange(key, 0, -1))]


def counters(client: redis.Redis, namespace: str, policy: CapPolicy | None = None) -> RedisCounters:
    return RedisCounters(client, policy or CapPolicy.from_limits(2, 6), namespace, "shadow")


def test_reserves_until_the_cap_then_refuses_with_reason_and_counts(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace, CapPolicy.from_limits(2, 3))
    results = [rc.check_and_reserve(Reservation(f"r{i}", "BTCUSDT", T0 + i * 10 * MIN)) for i in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[2].reason == "hourly_cap" and results[2].counts == {"hour": 2, "day": 2}
    assert rc.check_and_reserve(Reservation("r3", "BTCUSDT", T0 + 2 * HOUR_MS)).allowed
    daily = rc.check_and_reserve(Reservation("r4", "BTCUSDT", T0 + 4 * HOUR_MS))
    assert not daily.allowed and daily.reason == "daily_cap"
    assert rc.window_counts(T0 + 4 * HOUR_MS) == {"hour": 0, "day": 3}


def test_a_late_reservation_is_checked_against_later_windows(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    assert rc.check_and_reserve(Reservation("a", "BTCUSDT", T0 + 30 * MIN)).allowed
    assert rc.check_and_reserve(Reservation("b", "ETHUSDT", T0 + 50 * MIN)).allowed
    late = rc.check_and_reserve(Reservation("c", "SOLUSDT", T0))  # nothing in its trailing hour
    assert not late.allowed and late.reason == "hourly_cap"
    assert late.counts == {"hour": 0, "day": 0}


def test_a_retry_with_the_same_id_never_counts_twice(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace, CapPolicy.from_limits(1, 6))
    res = Reservation("run1:BTCUSDT:5m:1", "BTCUSDT", T0)
    first, again = rc.check_and_reserve(res), rc.check_and_reserve(res)
    assert first.allowed and not first.duplicate
    assert again.allowed and again.duplicate
    assert rc.window_counts(T0) == {"hour": 1, "day": 1}


def test_symbol_caps_use_the_symbols_own_window(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace, CapPolicy.from_limits(3, 6, symbol_per_hour=1, symbol_per_day=2))
    assert rc.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
    refused = rc.check_and_reserve(Reservation("b", "BTCUSDT", T0 + MIN))
    assert not refused.allowed and refused.reason == "hourly_cap"
    assert rc.check_and_reserve(Reservation("c", "ETHUSDT", T0 + MIN)).allowed
    assert rc.window_counts(T0 + MIN, "BTCUSDT") == {"hour": 1, "day": 1}
    assert rc.window_counts(T0 + MIN) == {"hour": 2, "day": 2}


def test_key_layout_hash_tag_members_and_ttls(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    rc.check_and_reserve(Reservation("run1:BTCUSDT:5m:1", "BTCUSDT", T0))
    tag = f"{{{namespace}:shadow}}"
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{KEY_ROOT}:{tag}:*"))
    assert keys == [
        f"{KEY_ROOT}:{tag}:sniper:all",
        f"{KEY_ROOT}:{tag}:sniper:meta",
        f"{KEY_ROOT}:{tag}:sniper:sym:BTCUSDT",
    ]
    assert client.zrange(rc.key_global, 0, -1, withscores=True) == [(b"BTCUSDT|run1:BTCUSDT:5m:1", float(T0))]
    for key in keys:
        assert 0 < client.pttl(key) <= rc.ttl_ms
    assert rc.ttl_ms == 4 * DAY_MS  # two kept horizons, twice over: a safety net, never the window logic


def test_windows_slide_old_points_are_trimmed_and_late_ones_refused(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    for i in range(4):
        assert rc.check_and_reserve(Reservation(f"old{i}", "BTCUSDT", T0 + i * 2 * HOUR_MS)).allowed
    assert rc.check_and_reserve(Reservation("new", "ETHUSDT", T0 + 3 * DAY_MS)).allowed
    held = members(client, rc.key_global)
    assert held == ["ETHUSDT|new"]  # everything more than two days behind the latest is gone
    late = rc.check_and_reserve(Reservation("late", "BTCUSDT", T0 + 3 * DAY_MS - int(1.5 * DAY_MS)))
    assert not late.allowed and late.reason == "daily_cap"
    # A symbol's own set is trimmed when that symbol is next written (until then its old points are out of
    # reach of any reservation that can still be checked, and the TTL bounds it).
    assert client.zcard(rc.key_symbol("BTCUSDT")) == 4
    assert rc.check_and_reserve(Reservation("fresh", "BTCUSDT", T0 + 3 * DAY_MS + HOUR_MS)).allowed
    assert members(client, rc.key_symbol("BTCUSDT")) == ["BTCUSDT|fresh"]


def test_record_writes_without_a_cap_check_and_is_idempotent(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace, CapPolicy.from_limits(1, 6))
    outage = [Reservation(f"o{i}", "BTCUSDT", T0 + i * MIN) for i in range(3)]
    assert rc.record(outage) == 3
    assert rc.record(outage) == 0
    assert rc.window_counts(T0 + 2 * MIN) == {"hour": 3, "day": 3}  # the signals went out: the window shows them
    assert not rc.check_and_reserve(Reservation("next", "ETHUSDT", T0 + 3 * MIN)).allowed
    assert [r.id for r in rc.reservations()] == ["o0", "o1", "o2"]


def test_a_new_client_keeps_the_days_count(redis_url: str, namespace: str) -> None:
    """A runner restarted mid-day (new process, new connection) sees the reservations made before."""
    policy = CapPolicy.from_limits(2, 3)
    first = redis.Redis.from_url(redis_url)
    before = RedisCounters(first, policy, namespace, "shadow")
    assert before.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
    assert before.check_and_reserve(Reservation("b", "BTCUSDT", T0 + 2 * HOUR_MS)).allowed
    before.close()
    after = RedisCounters(redis.Redis.from_url(redis_url), policy, namespace, "shadow")
    assert after.window_counts(T0 + 4 * HOUR_MS) == {"hour": 0, "day": 2}
    assert after.check_and_reserve(Reservation("c", "BTCUSDT", T0 + 4 * HOUR_MS)).allowed
    refused = after.check_and_reserve(Reservation("d", "BTCUSDT", T0 + 6 * HOUR_MS))
    assert not refused.allowed and refused.reason == "daily_cap"
    after.close()


def test_profiles_and_namespaces_do_not_share_counts(client: redis.Redis, namespace: str) -> None:
    policy = CapPolicy.from_limits(1, 6)
    a = RedisCounters(client, policy, namespace, "shadow")
    b = RedisCounters(client, policy, namespace, "canary")
    assert a.check_and_reserve(Reservation("x", "BTCUSDT", T0)).allowed
    assert b.check_and_reserve(Reservation("y", "BTCUSDT", T0)).allowed


def test_namespace_with_braces_is_refused_clearly(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisCounters(client, CapPolicy.from_limits(2, 6), "a}b", "shadow")


# -- foreign data ---------------------------------------------------------------------------------------------
def test_a_foreign_value_under_our_keys_is_a_clear_error(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    client.set(rc.key_global, "not ours")
    with pytest.raises(CounterBackendError) as err:
        rc.check_and_reserve(Reservation("a", "BTCUSDT", T0))
    msg = str(err.value)
    assert rc.key_global in msg and "holds a string, expected a zset" in msg and "foreign" in msg
    with pytest.raises(CounterBackendError, match="foreign value"):
        rc.window_counts(T0)
    with pytest.raises(CounterBackendError, match="foreign value"):
        rc.snapshot()


def test_a_malformed_meta_field_is_a_clear_error(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    client.hset(rc.key_meta, "latest", "yesterday")
    with pytest.raises(CounterBackendError, match=r"field latest is not a number: yesterday"):
        rc.check_and_reserve(Reservation("a", "BTCUSDT", T0))


def test_a_member_we_did_not_write_is_a_clear_error_on_snapshot(client: redis.Redis, namespace: str) -> None:
    rc = counters(client, namespace)
    client.zadd(rc.key_global, {"no-separator": T0})
    with pytest.raises(CounterBackendError, match=r"expected '<symbol>\|<id>'"):
        rc.snapshot()


# -- connection --------------------------------------------------------------------------------------------
def test_script_is_reloaded_after_the_server_forgets_it(server: RedisProc) -> None:
    rc = RedisCounters(connect(RedisSettings(url=server.url)), CapPolicy.from_limits(2, 6), "ns", "shadow")
    assert rc.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
    server.client().script_flush()
    assert rc.check_and_reserve(Reservation("b", "BTCUSDT", T0 + MIN)).allowed  # EVALSHA → NOSCRIPT → EVAL
    server.client().script_flush()
    assert rc.record([Reservation("c", "ETHUSDT", T0 + 2 * MIN)]) == 1  # the pipelined path reloads too
    assert rc.window_counts(T0 + 2 * MIN) == {"hour": 3, "day": 3}
    rc.close()


def test_password_from_settings_is_used_and_never_shown() -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    server = RedisProc(None, "--requirepass", secret)
    server.start()
    try:
        good = RedisSettings(host="127.0.0.1", port=server.port, password=SecretStr(secret))
        rc = RedisCounters(connect(good), CapPolicy.from_limits(2, 6), "ns", "shadow", secret=secret)
        assert rc.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
        rc.close()
        wrong = f"{secret}-wrong"
        url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
        bad = RedisCounters(
            connect(RedisSettings(url=url)),
            CapPolicy.from_limits(2, 6),
            "ns",
            "shadow",
            where=describe_target(RedisSettings(url=url)),
            secret=wrong,
        )
        with pytest.raises(CounterBackendError) as err:
            bad.check_and_reserve(Reservation("b", "BTCUSDT", T0))
        assert secret not in str(err.value) and "***" in str(err.value)
        bad.close()
    finally:
        server.stop()


def test_tls_flag_with_a_plain_url_is_a_clear_error() -> None:
    with pytest.raises(CounterBackendError, match="rediss://"):
        connect(RedisSettings(url="redis://127.0.0.1:6379/0", tls=True))


def test_an_unreachable_server_is_an_error_within_the_timeout() -> None:
    closed = RedisProc()  # a free port nobody listens on
    rc = RedisCounters(
        connect(RedisSettings(url=closed.url, timeout_ms=50)), CapPolicy.from_limits(2, 6), "ns", "shadow"
    )
    with pytest.raises(CounterBackendError, match=r"redis reserve at .*ConnectionError"):
        rc.check_and_reserve(Reservation("a", "BTCUSDT", T0))
    rc.close()


# -- the same rule as the memory backend ---------------------------------------------------------------------
attempts = st.lists(
    st.tuples(
        st.integers(0, 5 * 24 * 60),
        st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        st.booleans(),  # retry an earlier id instead of a new one
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    caps=st.tuples(st.integers(1, 3), st.integers(0, 5), st.one_of(st.none(), st.integers(1, 2))),
    seq=attempts,
)
def test_redis_answers_exactly_like_the_memory_rule(
    client: redis.Redis, caps: tuple[int, int, int | None], seq: list[tuple[int, str, bool]]
) -> None:
    """Any sequence (out of order, over five days so trimming and late refusals happen, with retries): the
    script's every answer — allowed, reason, counts, duplicate — equals MemoryCounters'."""
    h, extra, sym_h = caps
    policy = CapPolicy.from_limits(h, h + extra, sym_h)
    ns = f"test-{uuid.uuid4().hex[:12]}"
    rc = RedisCounters(client, policy, ns, "prop")
    mem = MemoryCounters(policy)
    made: list[Reservation] = []
    try:
        for i, (minute, symbol, retry) in enumerate(seq):
            res = made[i % len(made)] if retry and made else Reservation(f"r{i}", symbol, T0 + minute * MIN)
            made.append(res)
            assert rc.check_and_reserve(res) == mem.check_and_reserve(res), res
        assert sorted((r.id, r.ts_ms) for r in rc.reservations()) == sorted((r.id, r.ts_ms) for r in mem.reservations())
    finally:
        for key in client.scan_iter(match=f"{KEY_ROOT}:{{{ns}:*"):
            client.delete(key)
